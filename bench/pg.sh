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
# noisy: the best is the least disturbed). PG_BENCH_SCALE (10: 1M accounts),
# PG_BENCH_ROWS (1000000) for insert_many / \copy, LOOM_BUILD_DIR (build-pgbench),
# PG_BENCH_ONLY: a space-separated subset of: select1 select8 batch4 insert peers.
set -euo pipefail
cd "$(dirname "$0")/.."

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
server=""
cleanup() {
  [ -n "$server" ] && bash spec/support/pg_server.sh stop "$server" || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ -n "${LOOM_PG_URL:-}" ]; then
  URL=$LOOM_PG_URL
else
  server="$work/server"
  bash spec/support/pg_server.sh start "$server"
  URL=$(cat "$server/url")
fi

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

declare -A best
note() { # name value: keep the best
  local name=$1 v=$2
  if [ -z "${best[$name]:-}" ] || awk -v a="$v" -v b="${best[$name]}" 'BEGIN{exit !(a>b)}'; then
    best[$name]=$v
  fi
}
loom_run() { "$LUA" bench/pg.lua "$@" | awk '/^RESULT/{print $3}'; }
pgbench_tps() { pgbench -n "$@" -T "$SECS" "$URL" 2>&1 | awk '/^tps = /{print $3}'; }

run_one() {
  case $1 in
  pgbench_c1) note "$1" "$(pgbench_tps -S -M prepared -c 1 -j 1)" ;;
  loom_t1) note "$1" "$(loom_run select "$URL" 1 "$SECS" "$SCALE")" ;;
  pgbench_c8) note "$1" "$(pgbench_tps -S -M prepared -c 8 -j 1)" ;;
  loom_t8) note "$1" "$(loom_run select "$URL" 8 "$SECS" "$SCALE")" ;;
  pgbench_pipe4)
    local tps
    tps=$(pgbench_tps -M prepared -s "$SCALE" -f bench/peers/pgbench_pg_pipeline10.sql -c 4 -j 1)
    note "$1" "$(awk -v t="$tps" 'BEGIN{printf "%.1f", t * 10}')" ;;
  loom_batch4) note "$1" "$(loom_run batch "$URL" 4 "$SECS" "$SCALE")" ;;
  psql_copy)
    q "TRUNCATE bench_pg_copy" >/dev/null
    local ms
    ms=$(psql "$URL" -X -q -c '\timing on' \
      -c "\\copy bench_pg_copy (id, note, score, created) from '$copyfile'" | awk '/^Time:/{print $2}')
    note "$1" "$(awk -v ms="$ms" -v n="$ROWS" 'BEGIN{printf "%.1f", n / (ms / 1000)}')" ;;
  loom_insert) note "$1" "$(loom_run insert "$URL" "$ROWS")" ;;
  luasql) note "$1" "$("$LUA" bench/peers/pg_luasql.lua "$URL" "$SECS" "$SCALE" | awk '/^RESULT/{print $3}')" ;;
  asyncpg_conn1 | asyncpg_conn8 | asyncpg_pool1 | asyncpg_pool8)
    local mode=${1#asyncpg_}
    note "$1" "$("$PY" bench/peers/pg_asyncpg.py "$URL" "$SECS" "$SCALE" "${mode: -1}" "${mode%?}" |
      awk '/^RESULT/{print $3}')" ;;
  esac
}

pairs=()
for what in $ONLY; do
  case $what in
  select1) pairs+=("pgbench_c1 loom_t1") ;;
  select8) pairs+=("pgbench_c8 loom_t8") ;;
  batch4) pairs+=("pgbench_pipe4 loom_batch4") ;;
  insert) pairs+=("psql_copy loom_insert") ;;
  peers) pairs+=("luasql asyncpg_conn1" "asyncpg_conn8 asyncpg_pool1" "asyncpg_pool8") ;;
  esac
done

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS ..." >&2
  for pair in "${pairs[@]}"; do
    read -r -a items <<<"$pair"
    if [ $((round % 2)) -eq 0 ]; then
      for ((i = ${#items[@]} - 1; i >= 0; i--)); do run_one "${items[$i]}"; done
    else
      for item in "${items[@]}"; do run_one "$item"; done
    fi
  done
done

ver=$(pgbench --version | awk '{print $3}')
echo
echo "PostgreSQL $(q 'SHOW server_version' | awk '{print $1}'), scale $SCALE, ${SECS}s per measurement, best of $ROUNDS rounds, $(nproc) cores"
echo
printf '| %-44s | %14s | %-32s | %14s | %6s | %6s | %-4s |\n' "loom" "loom" "peer" "peer" "ratio" "target" ""
printf '|%s|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..46})" "$(printf -- '-%.0s' {1..16})" \
  "$(printf -- '-%.0s' {1..34})" "$(printf -- '-%.0s' {1..16})" "--------" "--------" "------"
fails=0
row() { # label loomkey peerlabel peerkey target unit
  local lv=${best[$2]:-} pv=${best[$4]:-}
  [ -z "$lv" ] || [ -z "$pv" ] && return
  local ratio verdict
  ratio=$(awk -v a="$lv" -v b="$pv" 'BEGIN{printf "%.2f", a / b}')
  if awk -v r="$ratio" -v t="$5" 'BEGIN{exit !(r >= t)}'; then verdict=PASS; else verdict=FAIL; fails=$((fails + 1)); fi
  printf '| %-44s | %10.0f %-3s | %-32s | %10.0f %-3s | %5.2fx | %5.2fx | %-4s |\n' \
    "$1" "$lv" "$6" "$3" "$pv" "$6" "$ratio" "$5" "$verdict"
}
row "point select, 1 task" loom_t1 "pgbench -S -M prepared -c1" pgbench_c1 0.9 q/s
row "point select, 8 tasks, pool 8" loom_t8 "pgbench -S -M prepared -c8 -j1" pgbench_c8 0.9 q/s
row "db:batch of 10 selects, 4 conns" loom_batch4 "pgbench pipeline of 10, -c4 -j1" pgbench_pipe4 0.7 q/s
row "insert_many $ROWS rows" loom_insert "psql \\copy from a file" psql_copy 0.8 r/s
if [[ " $ONLY " == *" peers "* ]]; then
  echo
  echo "The same point select elsewhere (loom 1 task: ${best[loom_t1]:-?} q/s, 8 tasks: ${best[loom_t8]:-?} q/s):"
  echo
  printf '| %-40s | %10s | %-12s |\n' "peer" "q/s" "loom / peer"
  printf '|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..42})" "$(printf -- '-%.0s' {1..12})" "$(printf -- '-%.0s' {1..14})"
  peer() { # label key loomkey
    local v=${best[$2]:-} l=${best[$3]:-}
    [ -z "$v" ] && return
    printf '| %-40s | %10.0f | %-12s |\n' "$1" "$v" \
      "$([ -n "$l" ] && awk -v a="$l" -v b="$v" 'BEGIN{printf "%.2fx", a / b}')"
  }
  peer "LuaSQL (luasql.postgres), 1 connection" luasql loom_t1
  peer "asyncpg, 1 connection" asyncpg_conn1 loom_t1
  peer "asyncpg pool of 1" asyncpg_pool1 loom_t1
  peer "asyncpg, 8 connections" asyncpg_conn8 loom_t8
  peer "asyncpg pool of 8, 8 workers" asyncpg_pool8 loom_t8
fi
echo
echo "pgbench $ver; loom from $LOOM_BUILD_DIR; $fails target(s) missed"
