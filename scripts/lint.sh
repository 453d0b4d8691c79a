#!/usr/bin/env bash
# Static checks: luacheck over the Lua (config: .luacheckrc) and cppcheck
# over the C of core/ and lua/ (.cppcheck.cfg tells it what it cannot see,
# .cppcheck.supp holds the few tree-wide suppressions; a false positive is
# suppressed inline, `// cppcheck-suppress id` with the reason). Prints each
# warning as file:line: message and exits non-zero if there is any.
# cppcheck rather than clang-tidy: on this tree it checks core/ and lua/ in
# seconds without a build directory, and what it reports is mostly real
# (dead stores, conditions that cannot hold); clang-tidy's analyzer took a
# minute and a half and most of what it reported were paths ASan never sees
# or unbounded-copy advice for snprintf and memcpy.
set -uo pipefail
cd "$(dirname "$0")/.."

for tool in luacheck cppcheck; do
  command -v "$tool" >/dev/null || { echo "lint: $tool is missing (bash scripts/deps.sh installs it)" >&2; exit 1; }
done

out=$(mktemp)
trap 'rm -f "$out"' EXIT

luacheck --quiet --formatter plain --codes lua spec examples bench scripts/*.lua >>"$out" 2>&1
rc=$?
# 1 and 2 are warnings and syntax errors, already listed; more is a crash.
[ $rc -le 2 ] || echo "lint: luacheck itself failed (exit $rc)" >>"$out"

# cppcheck is given loom's own include directories, found rather than listed
# so that a new folder is checked the day it appears.
includes=()
while IFS= read -r d; do includes+=(-I "$d"); done < <(find core lua -type d | sort)
cppcheck --quiet --std=c11 --library=posix,lua,.cppcheck.cfg \
  --enable=warning,style,performance,portability,information \
  --inline-suppr --suppressions-list=.cppcheck.supp \
  --template='{file}:{line}: {severity}: {message} [{id}]' \
  "${includes[@]}" core lua 2>>"$out" >/dev/null ||
  echo "lint: cppcheck itself failed (exit $?)" >>"$out"

if [ -s "$out" ]; then
  sort -t: -k1,1 -k2,2n "$out"
  echo "lint: $(wc -l <"$out") warnings"
  exit 1
fi
echo "lint: luacheck and cppcheck found nothing"
