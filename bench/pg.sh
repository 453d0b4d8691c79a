#!/usr/bin/env bash
# PostgreSQL: loom against pgbench, psql \copy, LuaSQL and asyncpg, on one
# server, in one run. Prints a table with each loom figure's ratio to its
# peer and PASS/FAIL against the target ratio.
#
#   bench/pg.sh                       start a throwaway server, measure, stop it
#   LOOM_PG_URL=postgres://... bench/pg.sh   use that server (pgbench tables are
#                                     created there when missing or of another scale)
#
# Settings (environment): PG_BENCH_SECONDS (5) per measurement, PG_BENCH_ROUNDS (3):
# every measurement runs once per round, loom and its peer back to back, the
# order flipped each round; the best round counts (the machine is shared and
# noisy: the best is the least disturbed), the median is shown beside it.
# One-connection measurements are pinned (see below). LOOM_PG_DIR: the
# pg_server.sh directory of the LOOM_PG_URL server, to pin it too. PG_BENCH_SCALE (10: 1M accounts),
# PG_BENCH_ROWS (1000000) for insert_many / \copy, LOOM_BUILD_DIR (build-pgbench),
# PG_BENCH_ONLY: a space-separated subset of: select1 select8 batch4 insert peers.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

SECS=${PG_BENCH_SECONDS:-5}
ROUNDS=${PG_BENCH_ROUNDS:-3}
SCALE=${PG_BENCH_SCALE:-10}
ROWS=${PG_BENCH_ROWS:-1000000}
ONLY=${PG_BENCH_ONLY:-"select1 select8 batch4 insert peers"}
export LOOM_BUILD_DIR=${LOOM_BUILD_DIR:-build-pgbench}
LUA=${LUA:-lua5.4}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
export PATH="$bindir:$PATH"
for tool in pgbench psql "$LUA"; do
  command -v "$tool" >/dev/null || { echo "pg.sh: $tool not found" >&2; exit 1; }
done
if [ ! -f "$LOOM_BUILD_DIR/loom/core.so" ]; then
  echo "pg.sh: $LOOM_BUILD_DIR/loom/core.so missing; build first:" >&2
  echo "  cmake -S . -B $LOOM_BUILD_DIR -DCMAKE_BUILD_TYPE=Release -DLOOM_BUILD_TESTS=OFF && cmake --build $LOOM_BUILD_DIR -j2" >&2
  exit 1
fi

work=$(mktemp -d /tmp/loom-pgbench.XXXXXX)
chmod 755 "$work" # the server may run as another user (postgres, when root)
cleanup() {
  bench_server_stop
  rm -rf "$work"
}
trap cleanup EXIT
bench_server spec/support/pg_server.sh "${LOOM_PG_URL:-}" "$work/server"
server=$bench_server_dir

q() { psql "$URL" -X -q -t -A -v ON_ERROR_STOP=1 -c "$1"; }

have=0
if [ "$(q "SELECT to_regclass('pgbench_branches') IS NOT NULL")" = t ]; then
  have=$(q "SELECT count(*) FROM pgbench_branches")
fi
if [ "$have" != "$SCALE" ]; then
  echo "initializing pgbench tables, scale $SCALE ..." >&2
  pgbench -i -q -s "$SCALE" "$URL" >/dev/null 2>&1
fi
q "DROP TABLE IF EXISTS bench_pg_copy" >/dev/null 2>&1
q "CREATE TABLE bench_pg_copy (id int, note text, score float8, created timestamp)" >/dev/null

copyfile="$work/rows.copy"
if [[ " $ONLY " == *" insert "* ]]; then
  "$LUA" bench/pg.lua copyfile "$ROWS" "$copyfile"
fi

# Where the processes run. With one client, a query is a ping-pong between the
# client and its server backend, and on these (virtual) cores the result depends
# mostly on whether the two share a core (a context switch) or not (a cross-core
# wakeup, several times slower): left to the scheduler, the same program gives
# 15k or 40k/s from one run to the next. So the one-connection measurements pin
# the server (postmaster; backends inherit it) to core 0 and the client to core
# 0 ("same core") or core 1 ("split"), identically for loom and its peers; the
# multi-connection ones run unpinned. Pinning needs the server's postmaster.pid:
# our own server's, or LOOM_PG_DIR/data's; without it everything runs unpinned.
pm_pid=""
for f in "${server:+$server/data/postmaster.pid}" "${LOOM_PG_DIR:+$LOOM_PG_DIR/data/postmaster.pid}"; do
  if [ -n "$f" ] && [ -r "$f" ]; then pm_pid=$(head -n 1 "$f"); break; fi
done
ncpu=$(nproc)
command -v taskset >/dev/null || pm_pid=""
[ "$ncpu" -ge 2 ] || pm_pid=""
all_cpus="0-$((ncpu - 1))"
server_on() { [ -n "$pm_pid" ] && taskset -pc "$1" "$pm_pid" >/dev/null 2>&1 || true; }
restore() { server_on "$all_cpus"; }
trap 'restore; cleanup' EXIT

pin=()
loom_run() { "${pin[@]}" "$LUA" bench/pg.lua "$@" | awk '/^RESULT/{print $3}'; }
pgbench_tps() { "${pin[@]}" pgbench -n "$@" -T "$SECS" "$URL" 2>&1 | awk '/^tps = /{print $3}'; }

run_one() { # name@placement
  local name=${1%@*} place=${1#*@}
  pin=()
  case $place in
  same) server_on 0; pin=(taskset -c 0) ;;
  split) server_on 0; pin=(taskset -c 1) ;;
  *) server_on "$all_cpus" ;;
  esac
  case $name in
  pgbench_c1) note "$1" "$(pgbench_tps -S -M prepared -c 1 -j 1)" ;;
  loom_t1) note "$1" "$(loom_run select "$URL" 1 "$SECS" "$SCALE")" ;;
  pgbench_c8) note "$1" "$(pgbench_tps -S -M prepared -c 8 -j 1)" ;;
  loom_t8) note "$1" "$(loom_run select "$URL" 8 "$SECS" "$SCALE")" ;;
  pgbench_pipe4)
    local tps
    tps=$(pgbench_tps -M prepared -s "$SCALE" -f bench/peers/pgbench_pg_pipeline10.sql -c 4 -j 1)
    [ -n "$tps" ] && note "$1" "$(awk -v t="$tps" 'BEGIN{printf "%.1f", t * 10}')" ;;
  loom_batch4) note "$1" "$(loom_run batch "$URL" 4 "$SECS" "$SCALE")" ;;
  psql_copy)
    q "TRUNCATE bench_pg_copy" >/dev/null
    local ms
    ms=$("${pin[@]}" psql "$URL" -X -q -c '\timing on' \
      -c "\\copy bench_pg_copy (id, note, score, created) from '$copyfile'" | awk '/^Time:/{print $2}')
    [ -n "$ms" ] && note "$1" "$(awk -v ms="$ms" -v n="$ROWS" 'BEGIN{printf "%.1f", n / (ms / 1000)}')" ;;
  loom_insert) note "$1" "$(loom_run insert "$URL" "$ROWS")" ;;
  luasql) note "$1" "$("${pin[@]}" "$LUA" bench/peers/pg_luasql.lua "$URL" "$SECS" "$SCALE" | awk '/^RESULT/{print $3}')" ;;
  asyncpg_conn1 | asyncpg_conn8 | asyncpg_pool1 | asyncpg_pool8)
    local mode=${name#asyncpg_}
    note "$1" "$("${pin[@]}" "$PY" bench/peers/pg_asyncpg.py "$URL" "$SECS" "$SCALE" "${mode: -1}" "${mode%?}" |
      awk '/^RESULT/{print $3}')" ;;
  esac
}

one=any
[ -n "$pm_pid" ] && one=same
pairs=()
for what in $ONLY; do
  case $what in
  select1)
    pairs+=("pgbench_c1@$one loom_t1@$one")
    [ -n "$pm_pid" ] && pairs+=("pgbench_c1@split loom_t1@split") ;;
  select8) pairs+=("pgbench_c8@any loom_t8@any") ;;
  batch4) pairs+=("pgbench_pipe4@any loom_batch4@any") ;;
  insert) pairs+=("psql_copy@any loom_insert@any") ;;
  peers) pairs+=("luasql@$one asyncpg_conn1@$one" "asyncpg_pool1@$one" "asyncpg_conn8@any asyncpg_pool8@any") ;;
  esac
done

rounds "$ROUNDS" "${pairs[@]}"
restore

ver=$(pgbench --version | awk '{print $3}')
echo
echo "PostgreSQL $(q 'SHOW server_version' | awk '{print $1}'), scale $SCALE, ${SECS}s per measurement, $ROUNDS rounds, $ncpu cores"
if [ -n "$pm_pid" ]; then
  echo "one-connection rows pinned: server on core 0, client on core 0 (same) or 1 (split); the rest unpinned"
else
  echo "nothing pinned (no postmaster.pid at hand)"
fi
table_header
if [ -n "$pm_pid" ]; then
  row "point select, 1 task (same core)" loom_t1@same "pgbench -S -M prepared -c1" pgbench_c1@same 0.9 q/s
  row "point select, 1 task (split cores)" loom_t1@split "pgbench -S -M prepared -c1" pgbench_c1@split 0.9 q/s
else
  row "point select, 1 task" loom_t1@any "pgbench -S -M prepared -c1" pgbench_c1@any 0.9 q/s
fi
row "point select, 8 tasks, pool 8" loom_t8@any "pgbench -S -M prepared -c8 -j1" pgbench_c8@any 0.9 q/s
row "db:batch of 10 selects, 4 conns" loom_batch4@any "pgbench pipeline of 10, -c4 -j1" pgbench_pipe4@any 0.7 q/s
row "insert_many $ROWS rows" loom_insert@any "psql \\copy from a file" psql_copy@any 0.8 r/s
if [[ " $ONLY " == *" peers "* ]]; then
  echo
  echo "The same point select elsewhere, best round (loom: 1 task ${best[loom_t1@$one]:-?} q/s, 8 tasks ${best[loom_t8@any]:-?} q/s):"
  echo
  printf '| %-52s | %10s | %-12s |\n' "peer" "q/s" "loom / peer"
  printf '|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..54})" "$(printf -- '-%.0s' {1..12})" "$(printf -- '-%.0s' {1..14})"
  peer() { # label key loomkey
    local v=${best[$2]:-} l=${best[$3]:-}
    [ -z "$v" ] && return
    printf '| %-52s | %10.0f | %-12s |\n' "$1" "$v" \
      "$([ -n "$l" ] && awk -v a="$l" -v b="$v" 'BEGIN{printf "%.2fx", a / b}')"
  }
  where=""
  [ "$one" = same ] && where=" (same core)"
  peer "LuaSQL (luasql.postgres), 1 connection$where" luasql@$one loom_t1@$one
  peer "asyncpg, 1 connection$where" asyncpg_conn1@$one loom_t1@$one
  peer "asyncpg pool of 1$where" asyncpg_pool1@$one loom_t1@$one
  peer "asyncpg, 8 connections" asyncpg_conn8@any loom_t8@any
  peer "asyncpg pool of 8, 8 workers" asyncpg_pool8@any loom_t8@any
fi
echo
echo "pgbench $ver; loom from $LOOM_BUILD_DIR; $fails target(s) missed"
