#!/usr/bin/env bash
# Runs one example script as it is, from any directory:
#   bash scripts/example.sh examples/postgres/fan_out.lua [args...]
# Builds loom in build/ first (installing what the build needs when run as
# root) and puts this checkout's loom on the Lua paths. An example that reads
# LOOM_PG_URL or LOOM_MYSQL_URL gets that variable as set, or when it is not
# set, a throwaway server started here on 127.0.0.1 and a free port
# (spec/support/pg_server.sh, my_server.sh) and removed when the example
# ends, however it ends. The examples in examples/db/ take a database URL
# as their first argument: `postgres` or `mysql` there instead asks for such
# a throwaway server and passes its URL. One that reads LOOM_HTTP_URL gets,
# when it is not set, a throwaway nginx (spec/support/nginx_server.sh).
#   bash scripts/example.sh examples/db/named_lock.lua mysql
#   LOOM_BUILD_DIR=dir   use that build as it is instead of building build/
#   LUA=command          the interpreter (default lua5.4), e.g. with a sanitizer preloaded
set -euo pipefail

usage="usage: bash scripts/example.sh EXAMPLE.lua [args...]"
script=${1:?$usage}
shift
[ -f "$script" ] || { echo "example.sh: no such file: $script ($usage)" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)

need=() url_for=
if [ -z "${LOOM_PG_URL:-}" ] && grep -q LOOM_PG_URL "$script"; then need+=(pg); fi
if [ -z "${LOOM_MYSQL_URL:-}" ] && grep -q LOOM_MYSQL_URL "$script"; then need+=(mysql); fi
if [ -z "${LOOM_HTTP_URL:-}" ] && grep -q LOOM_HTTP_URL "$script"; then need+=(http); fi
case "${1:-}" in
postgres | postgresql) url_for=pg ;;
mysql | mariadb) url_for=mysql ;;
esac
if [ -n "$url_for" ]; then
  shift
  case "$url_for" in
  pg) [ -n "${LOOM_PG_URL:-}" ] || need+=(pg) ;;
  mysql) [ -n "${LOOM_MYSQL_URL:-}" ] || need+=(mysql) ;;
  esac
fi

if [ -n "${LOOM_BUILD_DIR:-}" ]; then
  build=$(cd "$LOOM_BUILD_DIR" && pwd)
  [ ${#need[@]} -eq 0 ] || bash "$root/scripts/deps.sh" "${need[@]}"
else
  [ ${#need[@]} -eq 0 ] || bash "$root/scripts/deps.sh" "${need[@]}"
  bash "$root/scripts/build.sh"
  build=$root/build
fi

pgdir= mydir= httpdir=
stop_servers() {
  if [ -n "$pgdir" ]; then
    bash "$root/spec/support/pg_server.sh" stop "$pgdir"
    echo "example.sh: the PostgreSQL server is stopped" >&2
  fi
  if [ -n "$mydir" ]; then
    bash "$root/spec/support/my_server.sh" stop "$mydir"
    echo "example.sh: the MariaDB server is stopped" >&2
  fi
  if [ -n "$httpdir" ]; then
    bash "$root/spec/support/nginx_server.sh" stop "$httpdir"
    echo "example.sh: nginx is stopped" >&2
  fi
}
trap stop_servers EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for s in "${need[@]}"; do
  case "$s" in
  pg)
    pgdir=$(mktemp -u /tmp/loom-example-pg.XXXXXX)
    bash "$root/spec/support/pg_server.sh" start "$pgdir"
    LOOM_PG_URL=$(cat "$pgdir/url")
    export LOOM_PG_URL
    echo "example.sh: a throwaway PostgreSQL server on 127.0.0.1:$(cat "$pgdir/port") (LOOM_PG_URL)" >&2
    ;;
  mysql)
    mydir=$(mktemp -u /tmp/loom-example-my.XXXXXX)
    bash "$root/spec/support/my_server.sh" start "$mydir"
    LOOM_MYSQL_URL=$(cat "$mydir/url")
    export LOOM_MYSQL_URL
    echo "example.sh: a throwaway MariaDB server on 127.0.0.1:$(cat "$mydir/port") (LOOM_MYSQL_URL)" >&2
    ;;
  http)
    httpdir=$(mktemp -u /tmp/loom-example-http.XXXXXX)
    LOOM_HTTP_URL=$(bash "$root/spec/support/nginx_server.sh" start "$httpdir")
    export LOOM_HTTP_URL
    echo "example.sh: a throwaway nginx at $LOOM_HTTP_URL (LOOM_HTTP_URL)" >&2
    ;;
  esac
done

case "$url_for" in
pg) set -- "$LOOM_PG_URL" "$@" ;;
mysql) set -- "$LOOM_MYSQL_URL" "$@" ;;
esac

# Not exec: the servers are stopped once the example is done.
rc=0
LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;;" LUA_CPATH="$build/?.so;;" \
  ${LUA:-lua5.4} "$script" "$@" || rc=$?
exit $rc
