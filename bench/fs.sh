#!/usr/bin/env bash
# Files: reading a 1 GiB file in 64 KiB chunks, loom.fs beside io.read in
# a plain loop, with a 10 ms ticker running in loom (its worst lateness
# reported). The file is made in a temporary directory and removed after.
#   bash bench/fs.sh                 (bench/run.sh fs does the same)
#   BENCH_SCALE=0.25 bash bench/fs.sh   a 256 MiB file
set -uo pipefail
cd "$(dirname "$0")/.."
export LOOM_BUILD_DIR=${LOOM_BUILD_DIR:-build-bench}
# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_build || exit 1
work=$(mktemp -d /tmp/loom-fs-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
DIR="$work" ${LUA:-lua5.4} bench/fs.lua
