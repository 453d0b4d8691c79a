# shellcheck shell=bash disable=SC2154 # server_user, server_log: the sourcing script sets them
# What pg_server.sh and my_server.sh share, sourced by both. They set
# server_user (the account the server runs as when root) and server_log
# (the log shown when something fails) first.

as_server() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u "$server_user" -- "$@"; else "$@"; fi
}

free_port() {
  # Ask ports at random until one refuses a connection and binds nothing.
  # Below the kernel's ephemeral range: a port there may be the local end
  # of some connection (many, while tests run beside), which refuses a
  # probe yet makes the server's bind fail with "Address already in use".
  local port low=32768 span
  read -r low _ < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  span=$((low - 10000))
  [ "$span" -ge 1000 ] || span=40000
  for _ in $(seq 1 200); do
    port=$((10000 + RANDOM % span))
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
