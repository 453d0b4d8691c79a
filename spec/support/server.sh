# shellcheck shell=bash disable=SC2154 # server_user, server_log: the sourcing script sets them
# What pg_server.sh and my_server.sh share, sourced by both. They set
# server_user (the account the server runs as when root) and server_log
# (the log shown when something fails) first.

as_server() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u "$server_user" -- "$@"; else "$@"; fi
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
  [ -f "$server_log" ] && tail -n 30 "$server_log" >&2
  exit 1
}
