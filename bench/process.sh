#!/usr/bin/env bash
# Processes: loom.process.run("true") per second beside luv's uv.spawn
# (lua-luv), one after another, in one run.
#   bash bench/process.sh            (bench/run.sh process does the same)
set -uo pipefail
cd "$(dirname "$0")/.."
export LOOM_BUILD_DIR=${LOOM_BUILD_DIR:-build-bench}
# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_build || exit 1
${LUA:-lua5.4} bench/process.lua
