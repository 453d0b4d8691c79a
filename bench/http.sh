#!/usr/bin/env bash
# The HTTP client: 64 tasks fetching a small file from a local nginx,
# loom.http beside Node's built-in fetch and lua-http's client (on
# cqueues, run with lua5.4), one after another in each round, the order
# flipped each round; the best of the rounds counts, the median beside it.
#   bash bench/http.sh              (bench/run.sh http does the same)
# Settings: HTTP_BENCH_REQUESTS (20000) per measurement, HTTP_BENCH_ROUNDS (3),
# HTTP_BENCH_CONC (64), LOOM_HTTP_URL: a server of nginx_server.sh's making
# to use instead of starting one.
set -uo pipefail
cd "$(dirname "$0")/.."
export LOOM_BUILD_DIR=${LOOM_BUILD_DIR:-build-bench}
# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_build || exit 1
if [ ! -f "$LOOM_BUILD_DIR/loom/curl.so" ]; then
  echo "http.sh: $LOOM_BUILD_DIR has no loom.http (install libcurl4-openssl-dev: bash scripts/deps.sh build)" >&2
  exit 77
fi
for tool in node nginx; do
  command -v "$tool" >/dev/null || { echo "http.sh: $tool not found (LOOM_DEPS_BENCH=1 bash scripts/deps.sh)" >&2; exit 77; }
done
[ -f /usr/share/lua/5.3/http/request.lua ] || { echo "http.sh: lua-http not found (Debian package lua-http)" >&2; exit 77; }

N=${HTTP_BENCH_REQUESTS:-20000}
ROUNDS=${HTTP_BENCH_ROUNDS:-3}
CONC=${HTTP_BENCH_CONC:-64}
LUA=${LUA:-lua5.4}
work=$(mktemp -d /tmp/loom-http-bench.XXXXXX)
trap 'bench_server_stop; rm -rf "$work"' EXIT
bench_server spec/support/nginx_server.sh "${LOOM_HTTP_URL:-}" "$work/nginx" >/dev/null
target="$URL/small.txt"

run_one() {
  local out
  case $1 in
  loom) out=$("$LUA" bench/http.lua "$target" "$N" "$CONC") ;;
  node) out=$(node bench/peers/http_fetch.mjs "$target" "$N" "$CONC") ;;
  luahttp) out=$("$LUA" bench/peers/http_luahttp.lua "$target" "$N" "$CONC") ;;
  esac || { echo "http.sh: the $1 client failed" >&2; return; }
  out=${out#rps }
  echo "  $1: $out requests/s" >&2
  note "$1" "$out"
}

echo "$CONC tasks fetching $target ($(wc -c <"$work/nginx/www/small.txt" 2>/dev/null || echo '?') bytes), $N requests a measurement, $ROUNDS rounds"
rounds "$ROUNDS" "loom node luahttp"
table_header
row "loom.http, $CONC tasks" loom "Node $(node --version) fetch, $CONC workers" node 1.0 "r/s"
row "loom.http, $CONC tasks" loom "lua-http 0.4 (cqueues), $CONC coroutines" luahttp 1.0 "r/s"
[ "$fails" -eq 0 ] || exit 3
