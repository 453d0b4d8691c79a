#!/usr/bin/env bash
# SQLite: loom's driver beside a C loop on one prepared statement (the
# floor) and LuaSQL (lua-sql-sqlite3), on the same 100k-row file, one run.
#   bash bench/sqlite.sh            (bench/run.sh sqlite does the same)
set -uo pipefail
cd "$(dirname "$0")/.."
export LOOM_BUILD_DIR=${LOOM_BUILD_DIR:-build-bench}
# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_build || exit 1
gcc -O2 -o "$LOOM_BUILD_DIR/sqlite_floor" bench/sqlite_floor.c -lsqlite3 || exit 1
work=$(mktemp -d /tmp/loom-sqlite-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
FLOOR="$LOOM_BUILD_DIR/sqlite_floor" DIR="$work" ${LUA:-lua5.4} bench/sqlite.lua
