#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, in a directory of its own:
#   pg_server.sh start DIR     initdb, start on 127.0.0.1 and a free port
#   pg_server.sh restart DIR   fast restart, same port and data (fault tests)
#   pg_server.sh pause DIR     fast shutdown, keeping data and port (outage tests)
#   pg_server.sh resume DIR    start a paused server again
#   pg_server.sh stop DIR      stop and remove DIR
# After start, DIR/url holds the URL of the test role (a password login) and
# DIR/admin_url the superuser's. Runs the server as `postgres` when root.
# With openssl installed the server also speaks TLS: a throwaway CA signs a
# certificate for 127.0.0.1 and localhost; DIR/ca.crt is that CA,
# DIR/other_ca.crt one that signed nothing, and DIR/ssl_url the URL of a
# role the server admits over TLS only (pg_hba hostnossl ... reject).
set -euo pipefail
# Sanitizer runs preload libasan into the test process; the server's own
# programs must not inherit it.
unset LD_PRELOAD

cmd=${1:?usage: pg_server.sh start|restart|pause|resume|stop DIR}
dir=${2:?usage: pg_server.sh start|restart|pause|resume|stop DIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# As root the server's programs run as postgres, which may not enter the
# caller's directory (a checkout under /root: psql and pg_ctl then complain
# on every call): work from / with DIR made absolute.
case "$dir" in /*) ;; *) dir=$PWD/$dir ;; esac
cd /

server_user=postgres
server_log="$dir/log"
# shellcheck source=spec/support/server.sh
. "$here/server.sh"

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  echo "PostgreSQL server binaries not found: install the Debian package 'postgresql'" >&2
  exit 1
fi

# make_certs DIR: in DIR/tls a CA, a server certificate it signs (SAN
# 127.0.0.1 and localhost), an unrelated CA and more, valid for two days:
# test/tls_certs.sh, which the TLS tests use too.
make_certs() {
  bash "$here/../../test/tls_certs.sh" "$1/tls"
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
  tls=0
  if ! command -v openssl >/dev/null; then
    echo "openssl not found (Debian package 'openssl'): the test server runs without TLS" >&2
  elif make_certs "$dir"; then
    cp "$dir/tls/server.crt" "$dir/tls/server.key" "$dir/data/"
    chmod 600 "$dir/data/server.key"
    [ "$(id -u)" -eq 0 ] && chown postgres "$dir/data/server.crt" "$dir/data/server.key"
    cp "$dir/tls/ca.crt" "$dir/ca.crt"
    cp "$dir/tls/other_ca.crt" "$dir/other_ca.crt"
    rm -f "$dir"/tls/*.key
    # First match wins: the TLS-only role is turned away without TLS.
    { echo "hostnossl all loom_ssl all reject"; cat "$dir/data/pg_hba.conf"; } > "$dir/data/pg_hba.new"
    mv "$dir/data/pg_hba.new" "$dir/data/pg_hba.conf"
    [ "$(id -u)" -eq 0 ] && chown postgres "$dir/data/pg_hba.conf"
    cat >> "$dir/data/postgresql.conf" <<CONF
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
CONF
    tls=1
  else
    echo "could not make the TLS certificates: the test server runs without TLS" >&2
  fi
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
  # The port was free when picked; a server started beside this one may
  # have taken it since: then another port, a few times.
  for attempt in 1 2 3 4 5; do
    as_server "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 start >/dev/null && break
    if [ "$attempt" -lt 5 ] && grep -q "Address already in use" "$dir/log"; then
      port=$(free_port)
      echo "port = $port" >> "$dir/data/postgresql.conf"
      : > "$dir/log"
      continue
    fi
    fail_with_log "the test server did not start"
  done
  as_server "$bindir/psql" -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
    -c "CREATE ROLE loom LOGIN PASSWORD '$user_pw'" \
    -c "CREATE DATABASE loom_test OWNER loom" >/dev/null
  if [ "$tls" = 1 ]; then
    as_server "$bindir/psql" -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
      -c "CREATE ROLE loom_ssl LOGIN PASSWORD '$user_pw'" >/dev/null
    echo "postgres://loom_ssl:$user_pw@127.0.0.1:$port/loom_test" > "$dir/ssl_url"
  fi
  echo "postgres://loom:$user_pw@127.0.0.1:$port/loom_test" > "$dir/url"
  echo "postgres://postgres:$admin_pw@127.0.0.1:$port/loom_test" > "$dir/admin_url"
  echo "$port" > "$dir/port"
  ;;
restart)
  as_server "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -m fast -w -t 30 restart >/dev/null ||
    fail_with_log "the test server did not restart"
  ;;
pause)
  as_server "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null ||
    fail_with_log "the test server did not stop"
  ;;
resume)
  as_server "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 start >/dev/null ||
    fail_with_log "the test server did not start again"
  ;;
stop)
  if [ -d "$dir/data" ]; then
    as_server "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  ;;
*)
  echo "usage: pg_server.sh start|restart|pause|resume|stop DIR" >&2
  exit 2
  ;;
esac
