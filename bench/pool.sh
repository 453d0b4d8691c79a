#!/usr/bin/env bash
# Pool waiters: 1000 lookups through loom.map on a pool of 10, without
# `concurrency` (one task per item: 990 of them wait for a connection, or
# queue on SQLite's shared readers) against `concurrency = 10`, on SQLite
# and PostgreSQL. Target: the unbounded map within 1.5x of the bounded one.
#
#   bash bench/pool.sh                      start a throwaway PostgreSQL, measure, stop it
#   LOOM_PG_URL=postgres://... bash bench/pool.sh   use that server
#
# Settings (environment): BENCH_REPS (15) rounds, each running both maps
# back to back in alternating order; the best round of each counts (the
# machine is shared and noisy). LOOM_BUILD_DIR (build-bench). Without
# PostgreSQL's server binaries its row is skipped, and said so (exit 77).
set -uo pipefail
cd "$(dirname "$0")/.."
export LOOM_BUILD_DIR=${LOOM_BUILD_DIR:-build-bench}
# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_build || exit 1

work=$(mktemp -d /tmp/loom-pool-bench.XXXXXX)
chmod 755 "$work" # the server may run as another user (postgres, when root)
server=""
cleanup() {
  [ -n "$server" ] && bash spec/support/pg_server.sh stop "$server" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

PG_URL=${LOOM_PG_URL:-}
if [ -z "$PG_URL" ]; then
  server="$work/server"
  if bash spec/support/pg_server.sh start "$server" >/dev/null 2>&1; then
    PG_URL=$(cat "$server/url")
  else
    echo "pool.sh: could not start a PostgreSQL server (spec/support/pg_server.sh); its row is skipped" >&2
    server=""
  fi
fi
PG_URL="$PG_URL" DIR="$work" ${LUA:-lua5.4} bench/pool.lua
