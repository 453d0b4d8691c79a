#!/usr/bin/env bash
# TCP streams: loom beside luv, cqueues and socat (bench/io.lua says what
# and why). Raises the descriptor limit for the idle connections first:
# each side of each connection is a descriptor, in its own process.
#   bash bench/io.sh            (bench/run.sh io does the same)
set -uo pipefail
cd "$(dirname "$0")/.."
export LOOM_BUILD_DIR=${LOOM_BUILD_DIR:-build-bench}
# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_build || exit 1
# The echo's bounds (bench/io.lua says what they are).
gcc -O2 -o "$LOOM_BUILD_DIR/echo_floor" bench/echo_floor.c || exit 1
gcc -O2 -shared -fPIC -I/usr/include/lua5.4 -o "$LOOM_BUILD_DIR/echo_least.so" bench/echo_least.c || exit 1
export ECHO_FLOOR=$LOOM_BUILD_DIR/echo_floor

want=${BENCH_IDLE:-10000}
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=$((want + 1024))
ulimit -n "$hard" 2>/dev/null || true
have=$(ulimit -n)
if [ "$have" -lt $((want + 256)) ]; then
  idle=$((have - 256))
  echo "io.sh: the descriptor limit is $have (hard $hard): $idle idle connections instead of $want" >&2
else
  idle=$want
fi
BENCH_IDLE=$idle exec ${LUA:-lua5.4} bench/io.lua
