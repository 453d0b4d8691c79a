#!/usr/bin/env bash
# The soak of bench/soak.lua on all three drivers, one after the other:
# SQLite on a temp file, PostgreSQL and MariaDB on throwaway servers started
# here in their own /tmp dirs, since the servers run as an unprivileged user
# (or LOOM_PG_URL / LOOM_MYSQL_URL when set) and stopped at exit.
#   bash bench/soak.sh                 100k operations per driver
#   SOAK_OPS=20000 bash bench/soak.sh  a quicker look
#   bash bench/soak.sh pg              one driver
# Exit: 0 every driver held, 1 one broke (crash, hang, wrong report), 3 RSS grew.
set -uo pipefail
cd "$(dirname "$0")/.."
export LOOM_BUILD_DIR=${LOOM_BUILD_DIR:-build-bench}
LUA=${LUA:-lua5.4}
# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_build || exit 1
drivers=("$@")
[ ${#drivers[@]} -gt 0 ] || drivers=(sqlite pg mysql)

work=$(mktemp -d /tmp/loom-soak.XXXXXX)
pgdir="" mydir=""
cleanup() {
  [ -n "$pgdir" ] && bash spec/support/pg_server.sh stop "$pgdir"
  [ -n "$mydir" ] && bash spec/support/my_server.sh stop "$mydir"
  rm -rf "$work"
}
trap cleanup EXIT

status=0
for d in "${drivers[@]}"; do
  case $d in
    sqlite) url="sqlite:$work/soak.db" ;;
    pg)
      url=${LOOM_PG_URL:-}
      if [ -z "$url" ]; then
        pgdir=$(mktemp -u /tmp/loom-soak-pg.XXXXXX); bash spec/support/pg_server.sh start "$pgdir" >/dev/null || { echo "soak: PostgreSQL did not start"; status=1; continue; }
        url=$(cat "$pgdir/url")
      fi ;;
    mysql)
      url=${LOOM_MYSQL_URL:-}
      if [ -z "$url" ]; then
        mydir=$(mktemp -u /tmp/loom-soak-my.XXXXXX); bash spec/support/my_server.sh start "$mydir" >/dev/null || { echo "soak: MariaDB did not start"; status=1; continue; }
        url=$(cat "$mydir/url")
      fi ;;
    *) echo "soak: unknown driver $d (sqlite, pg, mysql)"; exit 2 ;;
  esac
  # The Lua watchdog ends a hang inside loom; this bound ends one the loop cannot see.
  timeout 1200 "$LUA" bench/soak.lua "$d" "$url"
  rc=$?
  [ $rc -eq 0 ] || { echo "soak $d: exit $rc"; [ $status -ne 0 ] || status=$rc; }
done
exit $status
