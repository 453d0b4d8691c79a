#!/usr/bin/env bash
# Builds loom in build/ (or the directory given), first installing what the
# build needs when run as root (scripts/deps.sh build). Quiet unless the
# build fails.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}

bash scripts/deps.sh build
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build "$dir" -j"$(nproc)"; } >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "build.sh: the build in $dir failed (above: the end of its output)" >&2
  exit 1
fi
