#!/usr/bin/env bash
# Builds loom in build/ (or the directory given), first installing what the
# build needs when run as root (scripts/deps.sh build), with every database
# driver (a missing client library fails the build instead of leaving its
# driver out). Quiet unless the build fails.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}

bash scripts/deps.sh build
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DLOOM_WITH_POSTGRES=ON -DLOOM_WITH_MYSQL=ON -DLOOM_WITH_SQLITE=ON -DLOOM_WITH_HTTP=ON && cmake --build "$dir" -j"$(nproc)"; } >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "build.sh: the build in $dir failed (above: the end of its output)" >&2
  exit 1
fi
