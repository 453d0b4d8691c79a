#!/usr/bin/env bash
# Static checks: luacheck over the Lua (config: .luacheckrc) and cppcheck
# over the C of core/ and lua/ (suppressions: .cppcheck.supp, and inline
# `// cppcheck-suppress id` with a reason). Prints each warning as
# file:line: message and exits non-zero if there is any.
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
cppcheck --quiet --std=c11 --library=posix \
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
