#!/usr/bin/env bash
# The C host (examples/embed/h2o_host: libh2o, handlers as loom tasks) under
# wrk, beside the servers it is compared with, all started here:
#   hello route:        h2o_host vs nginx with the Lua module (Debian
#                       libnginx-mod-http-lua), both answering "hello\n"
#   point select route: h2o_host vs Node (node:http + pg from npm, installed
#                       into a temporary directory), one row of a throwaway
#                       PostgreSQL server, a random id each request
# wrk -t1 -c64 with keep-alive, HOST_BENCH_SECONDS (5) per measurement,
# HOST_BENCH_ROUNDS (3) rounds with the order flipped each round, the best
# round counts; p99 latency (wrk --latency, median over the rounds) beside.
# Every server has one worker (one thread, one process) on core 0 and wrk
# runs on core 1; PostgreSQL is not pinned. Both pools hold H2O_HOST_POOL (8).
#
#   bench/host.sh                    (or: bash bench/run.sh host)
#   LOOM_PG_URL=postgres://... bench/host.sh   use that server
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

SECS=${HOST_BENCH_SECONDS:-5}
ROUNDS=${HOST_BENCH_ROUNDS:-3}
export HOST_BENCH_ROWS=${HOST_BENCH_ROWS:-10000}
export H2O_HOST_POOL=${H2O_HOST_POOL:-8}
# Its own build: the host is an embedding example, which LOOM_BUILD_TESTS
# builds and run.sh's build-bench leaves out.
BUILD=${HOST_BENCH_BUILD_DIR:-build-hostbench}

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
export PATH="$bindir:$PATH"
missing=()
for tool in wrk nginx node npm psql taskset curl; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
[ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] || missing+=("libnginx-mod-http-lua")
if [ ${#missing[@]} -gt 0 ]; then
  echo "host.sh: missing ${missing[*]} (LOOM_DEPS_BENCH=1 bash scripts/deps.sh installs them; npm: Debian's npm package)" >&2
  exit 77
fi

echo "building $BUILD (Release) ..." >&2
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLOOM_BUILD_TESTS=ON >/dev/null
cmake --build "$BUILD" -j2 --target h2o_host >/dev/null
HOST=$BUILD/examples/embed/h2o_host
[ -x "$HOST" ] || { echo "host.sh: $HOST was not built (libh2o-dev missing?)" >&2; exit 77; }

work=$(mktemp -d /tmp/loom-hostbench.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  bench_server_stop
  rm -rf "$work"
}
trap cleanup EXIT

bench_server spec/support/pg_server.sh "${LOOM_PG_URL:-}" "$work/pg"
export LOOM_PG_URL=$URL
psql "$URL" -X -q -v ON_ERROR_STOP=1 -c "DROP TABLE IF EXISTS hosts_bench" \
  -c "CREATE TABLE hosts_bench (id int PRIMARY KEY, name text NOT NULL)" \
  -c "INSERT INTO hosts_bench SELECT i, 'host-' || i FROM generate_series(1, $HOST_BENCH_ROWS) AS i" \
  -c "ANALYZE hosts_bench" >/dev/null

echo "installing pg for Node into $work/node ..." >&2
npm install --prefix "$work/node" --no-audit --no-fund --silent pg >/dev/null
export HOST_BENCH_NODE_MODULES=$work/node/node_modules

# started NAME CMD...: runs CMD on core 0, waits for "listening on
# 127.0.0.1:PORT" on its stdout and sets PORT.
started() {
  local name=$1
  shift
  taskset -c 0 "$@" >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
  for _ in $(seq 1 100); do
    PORT=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$work/$name.out")
    [ -n "$PORT" ] && return 0
    sleep 0.1
  done
  echo "host.sh: $name did not start:" >&2
  cat "$work/$name.err" >&2
  exit 1
}

started loom "$HOST" --threads 1 spec/support/h2o_handler.lua
loom_port=$PORT loom_pid=${pids[-1]}
started node node bench/peers/host_node.mjs
node_port=$PORT node_pid=${pids[-1]}

# nginx listens where it is told: a port the kernel just gave out and freed.
nginx_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
daemon off;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  server {
    listen 127.0.0.1:$nginx_port;
    location = /hello {
      default_type text/plain;
      content_by_lua_block { ngx.say("hello") }
    }
  }
}
CONF
taskset -c 0 nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" >"$work/nginx.out" 2>&1 &
pids+=($!)
nginx_master=$!

# Every server answers its route the same before anything is measured.
expect() { # url body
  local got
  for _ in $(seq 1 50); do
    got=$(curl -s -m 5 "$1" || true)
    [ "$got" = "$2" ] && return 0
    sleep 0.1
  done
  echo "host.sh: $1 answered '$got', not '$2'" >&2
  exit 1
}
expect "http://127.0.0.1:$loom_port/hello" "hello"
expect "http://127.0.0.1:$nginx_port/hello" "hello"
expect "http://127.0.0.1:$loom_port/pg?id=42" "42 host-42"
expect "http://127.0.0.1:$node_port/pg?id=42" "42 host-42"
nginx_pid=$(pgrep -P "$nginx_master" | head -n 1)

# The server's CPU time (user + system, from /proc) per request: on a shared,
# loaded machine throughput swings with what else runs, the work a server
# does for a request much less.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A cpus

declare -A p99s
run_one() { # name
  local url script=() pid
  case $1 in
    loom_hello) url="http://127.0.0.1:$loom_port/hello" pid=$loom_pid ;;
    nginx_hello) url="http://127.0.0.1:$nginx_port/hello" pid=$nginx_pid ;;
    loom_pg) url="http://127.0.0.1:$loom_port/pg" pid=$loom_pid; script=(-s bench/peers/host_wrk.lua) ;;
    node_pg) url="http://127.0.0.1:$node_port/pg" pid=$node_pid; script=(-s bench/peers/host_wrk.lua) ;;
  esac
  local out rps p99 t0 t1 n cpu
  t0=$(cpu_ticks "$pid")
  out=$(taskset -c 1 wrk -t1 -c64 -d"${SECS}s" --latency "${script[@]}" "$url")
  t1=$(cpu_ticks "$pid")
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  cpu=$(awk -v t=$((t1 - t0)) -v n="$n" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", t / hz * 1e6 / n}')
  cpus[$1]="${cpus[$1]:-} $cpu"
  if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
    echo "host.sh: $1 had errors:" >&2
    echo "$out" >&2
  fi
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  # wrk prints 99% as e.g. 1.23ms or 850.00us or 1.02s: in ms here.
  p99=$(awk '$1 == "99%" {v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
         print (u == "us" ? v / 1000 : (u == "s" ? v * 1000 : v))}' <<<"$out")
  note "$1" "$rps"
  p99s[$1]="${p99s[$1]:-} $p99"
  echo "  $1: $rps req/s, p99 $p99 ms, $cpu us of server CPU per request" >&2
}

median_of() { # values...
  printf '%s\n' "$@" | awk 'NF' | sort -g |
    awk '{v[NR]=$1} END{if (NR) printf "%.2f", NR % 2 ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'
}

rounds "$ROUNDS" "loom_hello nginx_hello" "loom_pg node_pg"

echo
echo "wrk -t1 -c64 keep-alive, ${SECS}s per measurement, $ROUNDS rounds; servers on core 0, wrk on core 1;" \
  "PostgreSQL $(psql "$URL" -X -t -A -c 'SHOW server_version' | awk '{print $1}'), $HOST_BENCH_ROWS rows, pools of $H2O_HOST_POOL"
echo "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), Node $(node --version), libh2o $(pkg-config --modversion libh2o 2>/dev/null || echo '?')"
table_header
row "hello route (h2o_host, 1 thread)" loom_hello "nginx + lua-nginx-module, 1 worker" nginx_hello 0.7 r/s
row "point select route (h2o_host, 1 thread)" loom_pg "Node http + pg" node_pg 1.0 r/s
echo
# shellcheck disable=SC2086 # the lists split into their values
{
  echo "| median of rounds | loom p99 | peer p99 | loom CPU/request | peer CPU/request | peer/loom CPU |"
  echo "|---|---|---|---|---|---|"
  for pair in "hello loom_hello nginx_hello nginx" "point-select loom_pg node_pg Node"; do
    read -r route l p name <<<"$pair"
    lc=$(median_of ${cpus[$l]}) pc=$(median_of ${cpus[$p]})
    echo "| $route route | $(median_of ${p99s[$l]}) ms | $(median_of ${p99s[$p]}) ms ($name) |" \
      "$lc us | $pc us ($name) | $(awk -v a="$pc" -v b="$lc" 'BEGIN{printf "%.2fx", a / b}') |"
  done
}
for f in "$work"/loom.err "$work"/node.err; do
  [ -s "$f" ] && { echo "stderr of $(basename "$f" .err):" >&2; tail -n 20 "$f" >&2; }
done
[ "$fails" -eq 0 ] || exit 3
