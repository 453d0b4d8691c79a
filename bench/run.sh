#!/usr/bin/env bash
# loom's benchmarks: builds build-bench (Release) and runs every benchmark
# group, each printing its own table (loom beside its baseline, the ratio,
# the target, PASS/FAIL), then one summary line per group.
#
#   bash bench/run.sh                   every group   (make bench does this)
#   bash bench/run.sh runtime pg        only those groups
#   BENCH_REPS=3 BENCH_SCALE=0.2 bash bench/run.sh runtime   a quick look
#
# A group NAME is bench/NAME.sh when that exists (a driver that starts
# servers or runs peers), else bench/NAME.lua. Every group found is run:
# every bench/*.sh but this one, and every bench/*.lua that has no .sh of
# the same name and is not a helper listed in HELPERS. A new group needs no
# edit here; a new helper file must be added to HELPERS.
#
# A group's exit code says how it went (bench/lib.lua has the same list):
#   0 every target met   3 a target missed   77 skipped (something it needs
#   is missing; it says what)   anything else: the benchmark broke.
# Nothing is skipped silently: the summary names every group that did not
# pass, and the exit code is 0 only when all of them did.
set -uo pipefail
cd "$(dirname "$0")/.."

HELPERS="lib"
export LOOM_BUILD_DIR=${LOOM_BUILD_DIR:-build-bench}
LUA=${LUA:-lua5.4}
export LUA

echo "==== build $LOOM_BUILD_DIR (Release)"
if ! { cmake -S . -B "$LOOM_BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DLOOM_BUILD_TESTS=OFF >/dev/null &&
       cmake --build "$LOOM_BUILD_DIR" -j2 >/dev/null; }; then
  echo "run.sh: the build failed:" >&2
  cmake --build "$LOOM_BUILD_DIR" -j2 2>&1 | tail -n 30 >&2
  exit 1
fi

is_helper() {
  local h
  for h in $HELPERS; do [ "$1" = "$h" ] && return 0; done
  return 1
}

all_groups() {
  local f name
  for f in bench/*.sh bench/*.lua; do
    [ -e "$f" ] || continue
    name=$(basename "$f"); name=${name%.*}
    [ "$name" = run ] && continue
    is_helper "$name" && continue
    [ "${f##*.}" = lua ] && [ -e "bench/$name.sh" ] && continue
    echo "$name"
  done | awk '!seen[$0]++'
}

if [ $# -gt 0 ]; then groups=("$@"); else mapfile -t groups < <(all_groups); fi

echo "machine: $(nproc) cores ($(uname -m)), $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')"
echo "lua: $($LUA -v 2>&1)"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"

summary=()
bad=0
for g in "${groups[@]}"; do
  if [ -f "bench/$g.sh" ]; then
    cmd=(bash "bench/$g.sh")
  elif [ -f "bench/$g.lua" ]; then
    cmd=("$LUA" "bench/$g.lua")
  else
    summary+=("$g: ERROR (no bench/$g.sh or bench/$g.lua)")
    bad=1
    continue
  fi
  echo
  echo "==== $g: ${cmd[*]}"
  "${cmd[@]}"
  rc=$?
  case $rc in
    0) summary+=("$g: all targets met") ;;
    3) summary+=("$g: TARGET MISSED (see its table)"); bad=1 ;;
    77) summary+=("$g: SKIPPED (see its output for what is missing)"); bad=1 ;;
    *) summary+=("$g: ERROR (exit $rc)"); bad=1 ;;
  esac
done

echo
echo "==== summary"
for line in "${summary[@]}"; do echo "$line"; done
exit $bad
