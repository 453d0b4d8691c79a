#!/usr/bin/env bash
# MySQL/MariaDB: loom's point select against mariadb-slap (the server's own
# load client, C, text protocol) and LuaSQL (luasql.mysql), on one server,
# in one run. Prints a table with each loom figure's ratio to its peer and
# PASS/FAIL against the target ratio (>= 0.9x).
#
#   bench/mysql.sh                          start a throwaway MariaDB, measure, stop it
#   LOOM_MYSQL_URL=mysql://... bench/mysql.sh   use that server (LOOM_MYSQL_DIR: its
#                                           my_server.sh directory, to pin it)
#
# Settings (environment): MY_BENCH_SECONDS (4) per measurement, MY_BENCH_ROUNDS (3):
# every measurement runs once per round, loom and its peer back to back, the
# order flipped each round; the best round counts (the machine is shared and
# noisy), the median is shown beside it. MY_BENCH_ROWS (100000) accounts.
# LOOM_BUILD_DIR (build-bench). Exit: 0 all targets met, 3 one missed, 77 a
# tool is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

SECS=${MY_BENCH_SECONDS:-4}
ROUNDS=${MY_BENCH_ROUNDS:-3}
ROWS=${MY_BENCH_ROWS:-100000}
export LOOM_BUILD_DIR=${LOOM_BUILD_DIR:-build-bench}
LUA=${LUA:-lua5.4}

for tool in mariadb-slap mariadb "$LUA"; do
  command -v "$tool" >/dev/null || { echo "mysql.sh: $tool not found (Debian: mariadb-client)" >&2; exit 77; }
done
if [ ! -f "$LOOM_BUILD_DIR/loom/core.so" ]; then
  echo "mysql.sh: $LOOM_BUILD_DIR/loom/core.so missing; build first:" >&2
  echo "  cmake -S . -B $LOOM_BUILD_DIR -DCMAKE_BUILD_TYPE=Release -DLOOM_BUILD_TESTS=OFF && cmake --build $LOOM_BUILD_DIR -j2" >&2
  exit 1
fi

cleanup() { bench_server_stop; }
trap cleanup EXIT
bench_server spec/support/my_server.sh "${LOOM_MYSQL_URL:-}" "$(mktemp -u /tmp/loom-mybench.XXXXXX)"
dir=${bench_server_dir:-${LOOM_MYSQL_DIR:-}}
# mysql://user:pw@host:port/db, for the command-line clients
read -r user pw host port db < <(sed -E 's|^[a-z]+://([^:]+):([^@]*)@([^:/]+):?([0-9]*)/([^?]+).*|\1 \2 \3 \4 \5|' <<<"$URL")
port=${port:-3306}
client=(--no-defaults -h"$host" -P"$port" -u"$user" -p"$pw")

mariadb "${client[@]}" "$db" -e "CREATE TABLE IF NOT EXISTS bench_accounts (aid INT PRIMARY KEY,
  abalance INT NOT NULL, filler CHAR(84) NOT NULL DEFAULT '') ENGINE=InnoDB"
have=$(mariadb "${client[@]}" "$db" -N -e "SELECT COUNT(*) FROM bench_accounts")
if [ "$have" != "$ROWS" ]; then
  mariadb "${client[@]}" "$db" -e "TRUNCATE bench_accounts;
    INSERT INTO bench_accounts (aid, abalance) SELECT seq, seq % 1000 FROM seq_1_to_$ROWS"
fi

# One client on one connection is a ping-pong with its server thread: on
# these shared virtual cores the figure depends mostly on whether the two
# share a core, so the one-connection rows pin the server and the client to
# core 0, the same for loom and its peers (as bench/pg.sh does). The
# eight-connection rows run unpinned.
spid=""
[ -n "$dir" ] && [ -r "$dir/pid" ] && spid=$(cat "$dir/pid")
command -v taskset >/dev/null || spid=""
[ "$(nproc)" -ge 2 ] || spid=""
all_cpus="0-$(($(nproc) - 1))"
server_on() { [ -n "$spid" ] && taskset -apc "$1" "$spid" >/dev/null 2>&1 || true; }
trap 'server_on "$all_cpus"; cleanup' EXIT

slap() { # concurrency: queries per second over SECS-ish seconds of work
  local c=$1 total
  # --number-of-queries is the total, shared by the clients: about SECS
  # seconds of work at 8k q/s per client.
  total=$(awk -v s="$SECS" -v c="$c" 'BEGIN{printf "%d", s * 8000 * c}')
  "${pin[@]}" mariadb-slap "${client[@]}" --create-schema="$db" --no-drop --iterations=1 \
    --query="SELECT abalance FROM bench_accounts WHERE aid = $((ROWS / 2))" \
    --concurrency="$c" --number-of-queries="$total" 2>/dev/null |
    awk -v n="$total" '/Average number of seconds to run all queries/{printf "%.1f", n / $9}'
}
loom_run() { "${pin[@]}" "$LUA" bench/mysql.lua "$@" | awk '/^RESULT/{print $3}'; }

pin=()
run_one() {
  local name=$1
  pin=()
  case $name in
  *_1 | luasql) if [ -n "$spid" ]; then server_on 0; pin=(taskset -c 0); fi ;;
  *) server_on "$all_cpus" ;;
  esac
  case $name in
  slap_1) note "$name" "$(slap 1)" ;;
  slap_8) note "$name" "$(slap 8)" ;;
  loom_1) note "$name" "$(loom_run select "$URL" 1 "$SECS" "$ROWS")" ;;
  loom_8) note "$name" "$(loom_run select "$URL" 8 "$SECS" "$ROWS")" ;;
  luasql) note "$name" "$("${pin[@]}" "$LUA" bench/mysql.lua luasql "$URL" "$SECS" "$ROWS" | awk '/^RESULT/{print $3}')" ;;
  esac
}

rounds "$ROUNDS" "slap_1 loom_1" "slap_8 loom_8" "luasql"
server_on "$all_cpus"

version=$(mariadb "${client[@]}" -N -e "SELECT VERSION()")
echo
echo "MariaDB $version, $ROWS accounts, point select by primary key, ${SECS}s per measurement, $ROUNDS rounds, $(nproc) cores"
if [ -n "$spid" ]; then echo "one-connection rows pinned: server and client on core 0; the rest unpinned"
else echo "nothing pinned (no server pid at hand)"; fi
table_header
row "point select, 1 task" loom_1 "mariadb-slap --concurrency=1" slap_1 0.9 q/s
row "point select, 8 tasks, pool of 8" loom_8 "mariadb-slap --concurrency=8" slap_8 0.9 q/s
row "point select, 1 task" loom_1 "LuaSQL (luasql.mysql), 1 connection" luasql 0.9 q/s
echo
echo "loom from $LOOM_BUILD_DIR; $fails target(s) missed"
[ "$fails" -eq 0 ] || exit 3
