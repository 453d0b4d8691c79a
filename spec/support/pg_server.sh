#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, in a directory of its own:
#   pg_server.sh start DIR     initdb, start on 127.0.0.1 and a free port
#   pg_server.sh restart DIR   fast restart, same port and data (fault tests)
#   pg_server.sh stop DIR      stop and remove DIR
# After start, DIR/url holds the URL of the test role (a password login) and
# DIR/admin_url the superuser's. Runs the server as `postgres` when root.
set -euo pipefail
# Sanitizer runs preload libasan into the test process; the server's own
# programs must not inherit it.
unset LD_PRELOAD

cmd=${1:?usage: pg_server.sh start|restart|stop DIR}
dir=${2:?usage: pg_server.sh start|restart|stop DIR}

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  echo "PostgreSQL server binaries not found: install the Debian package 'postgresql'" >&2
  exit 1
fi

as_server() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  # Ask ports at random until one refuses a connection and binds nothing.
  local port
  for _ in $(seq 1 200); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  echo "no free port found" >&2
  exit 1
}

secret() { od -An -N12 -tx1 /dev/urandom | tr -d ' \n'; }

fail_with_log() {
  echo "$1" >&2
  [ -f "$dir/log" ] && tail -n 30 "$dir/log" >&2
  exit 1
}

case "$cmd" in
start)
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
  port=$(free_port)
  admin_pw=$(secret)
  user_pw=$(secret)
  printf '%s\n' "$admin_pw" > "$dir/admin_pw"
  [ "$(id -u)" -eq 0 ] && chown postgres "$dir/admin_pw"
  as_server "$bindir/initdb" -D "$dir/data" -U postgres --pwfile="$dir/admin_pw" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 ||
    fail_with_log "initdb failed: $(tail -n 5 "$dir/initdb.log")"
  rm -f "$dir/admin_pw"
  cat >> "$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
shared_buffers = 64MB
CONF
  as_server "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 start >/dev/null ||
    fail_with_log "the test server did not start"
  as_server "$bindir/psql" -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
    -c "CREATE ROLE loom LOGIN PASSWORD '$user_pw'" \
    -c "CREATE DATABASE loom_test OWNER loom" >/dev/null
  echo "postgres://loom:$user_pw@127.0.0.1:$port/loom_test" > "$dir/url"
  echo "postgres://postgres:$admin_pw@127.0.0.1:$port/loom_test" > "$dir/admin_url"
  echo "$port" > "$dir/port"
  ;;
restart)
  as_server "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -m fast -w -t 30 restart >/dev/null ||
    fail_with_log "the test server did not restart"
  ;;
stop)
  if [ -d "$dir/data" ]; then
    as_server "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  ;;
*)
  echo "usage: pg_server.sh start|restart|stop DIR" >&2
  exit 2
  ;;
esac
