#!/usr/bin/env bash
# A throwaway MariaDB server for the tests, in a directory of its own:
#   my_server.sh start DIR     install a data dir, start on 127.0.0.1 and a free port
#   my_server.sh restart DIR   stop and start again, same port and data (fault tests)
#   my_server.sh stop DIR      stop and remove DIR
# After start, DIR/url holds the URL of the test user (a password login,
# all rights on the database loom_test) and DIR/admin_url an administrator's.
# DIR/tls_url asks for TLS (a self-signed certificate made here). Runs the
# server as `mysql` when root.
set -euo pipefail

# Called from specs that may run under AddressSanitizer: the server and its
# tools are not loom's to check (and LSan's exit codes would fail them).
unset LD_PRELOAD ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS

cmd=${1:?usage: my_server.sh start|restart|stop DIR}
dir=${2:?usage: my_server.sh start|restart|stop DIR}

server_user=mysql
server_log="$dir/log.err"
# shellcheck source=spec/support/server.sh
. "$(dirname "${BASH_SOURCE[0]}")/server.sh"

for bin in mariadbd mariadb-install-db mariadb-admin mariadb; do
  if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ]; then
    echo "MariaDB server binaries not found ($bin): install the Debian packages 'mariadb-server' and 'mariadb-client'" >&2
    exit 1
  fi
done
mariadbd=$(command -v mariadbd || echo /usr/sbin/mariadbd)

admin() { mariadb --no-defaults -S "$dir/sock" -uroot "$@"; }

launch() {
  local port
  port=$(cat "$dir/port")
  local tls=()
  if [ -f "$dir/cert.pem" ]; then
    tls=(--ssl-cert="$dir/cert.pem" --ssl-key="$dir/key.pem")
  fi
  # setsid: the server outlives this script and ignores the caller's signals.
  as_server setsid "$mariadbd" --no-defaults --datadir="$dir/data" --socket="$dir/sock" \
    --port="$port" --bind-address=127.0.0.1 --pid-file="$dir/pid" --log-error="$dir/log.err" \
    --skip-name-resolve --skip-log-bin --max-connections=500 --innodb-buffer-pool-size=64M \
    --innodb-flush-log-at-trx-commit=0 --innodb-log-file-size=32M --max-allowed-packet=16M \
    --innodb-lock-wait-timeout=5 --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
    "${tls[@]}" </dev/null >/dev/null 2>&1 &
  for _ in $(seq 1 300); do
    if mariadb-admin --no-defaults -S "$dir/sock" -uroot --connect-timeout=1 ping >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  fail_with_log "the test server did not start"
}

shutdown_server() {
  [ -f "$dir/pid" ] || return 0
  local pid
  pid=$(cat "$dir/pid" 2>/dev/null || true)
  [ -n "$pid" ] || return 0
  # A spec may have left it frozen (SIGSTOP): it would not see the TERM,
  # and runuser (as root) stops with it and would keep it as a zombie.
  local parent
  parent=$(ps -o ppid= -p "$pid" 2>/dev/null | tr -d ' ' || true)
  kill -CONT "$pid" 2>/dev/null || true
  if [ -n "$parent" ] && [ "$(ps -o comm= -p "$parent" 2>/dev/null)" = runuser ]; then
    kill -CONT "$parent" 2>/dev/null || true
  fi
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

case "$cmd" in
start)
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown mysql "$dir"
  free_port > "$dir/port"
  port=$(cat "$dir/port")
  admin_pw=$(secret)
  user_pw=$(secret)
  as_server mariadb-install-db --no-defaults --datadir="$dir/data" --auth-root-authentication-method=normal \
    --skip-test-db >"$dir/install.log" 2>&1 ||
    fail_with_log "mariadb-install-db failed: $(tail -n 5 "$dir/install.log")"
  if command -v openssl >/dev/null 2>&1; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=127.0.0.1" \
      -keyout "$dir/key.pem" -out "$dir/cert.pem" >/dev/null 2>&1 || rm -f "$dir/key.pem" "$dir/cert.pem"
    [ "$(id -u)" -eq 0 ] && [ -f "$dir/key.pem" ] && chown mysql "$dir/key.pem" "$dir/cert.pem"
  fi
  launch
  admin <<SQL || fail_with_log "could not create the test users"
CREATE DATABASE loom_test CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER 'loom'@'%' IDENTIFIED BY '$user_pw';
GRANT ALL PRIVILEGES ON loom_test.* TO 'loom'@'%';
CREATE USER 'loomadmin'@'%' IDENTIFIED BY '$admin_pw';
GRANT ALL PRIVILEGES ON *.* TO 'loomadmin'@'%' WITH GRANT OPTION;
ALTER USER 'root'@'localhost' IDENTIFIED BY '$admin_pw';
SQL
  # root keeps a socket login for this script only.
  printf '[client]\nuser=root\npassword=%s\n' "$admin_pw" > "$dir/admin.cnf"
  chmod 600 "$dir/admin.cnf"
  echo "mysql://loom:$user_pw@127.0.0.1:$port/loom_test" > "$dir/url"
  echo "mysql://loomadmin:$admin_pw@127.0.0.1:$port/loom_test" > "$dir/admin_url"
  if [ -f "$dir/cert.pem" ]; then
    echo "mysql://loom:$user_pw@127.0.0.1:$port/loom_test?ssl-mode=REQUIRED" > "$dir/tls_url"
  fi
  ;;
restart)
  [ -f "$dir/port" ] || fail_with_log "no server in $dir"
  shutdown_server
  launch
  ;;
stop)
  shutdown_server
  rm -rf "$dir"
  ;;
*)
  echo "usage: my_server.sh start|restart|stop DIR" >&2
  exit 2
  ;;
esac
