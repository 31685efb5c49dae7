#!/usr/bin/env bash
# Starts a throwaway PostgreSQL on 127.0.0.1 for the registry's conformance suite and benchmark,
# installing it from Debian's packages when missing. Prints the DATABASE_URL to use.
# Usage: eval "$(.ci/postgres.sh start)"   ...   .ci/postgres.sh stop
set -euo pipefail
PORT="${AGENTMESH_PG_PORT:-54329}"
DIR="${AGENTMESH_PG_DIR:-/tmp/agentmesh-ci-postgres}"

bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-start}" in
start)
    if [ -z "$(bin_dir)" ]; then
        echo "installing postgresql from Debian packages" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    fi
    BIN="$(bin_dir)"
    # A server left running by an earlier start: stop it before its data directory is removed.
    [ -f "$DIR/data/postmaster.pid" ] && { as_pg "$BIN/pg_ctl" -D "$DIR/data" -m fast stop >&2 || true; }
    rm -rf "$DIR" && mkdir -p "$DIR"
    [ "$(id -u)" = 0 ] && chown postgres "$DIR"
    as_pg "$BIN/initdb" -D "$DIR/data" -A trust -U agentmesh >/dev/null
    as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR" start >&2
    as_pg "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U agentmesh registry
    echo "export DATABASE_URL=postgres://agentmesh@127.0.0.1:$PORT/registry"
    ;;
stop)
    BIN="$(bin_dir)"
    [ -n "$BIN" ] && [ -d "$DIR/data" ] && as_pg "$BIN/pg_ctl" -D "$DIR/data" -m fast stop >&2 || true
    ;;
esac
