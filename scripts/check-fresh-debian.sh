#!/usr/bin/env bash
# Checks the README's first steps the way a new user meets them: a fresh
# clone on a minimal Debian bookworm (debootstrap --variant=minbase, what a
# `debian:bookworm` container has: bash and apt, no make, no compiler), as
# root, nothing installed by hand.
#   check-fresh-debian.sh base        make the pristine minimal system once (kept, reused)
#   check-fresh-debian.sh quickstart  the Quick start: bash scripts/demo.sh, then bash scripts/test.sh
#   check-fresh-debian.sh example     bash scripts/example.sh on a SQLite, a PostgreSQL and a MySQL example
#   check-fresh-debian.sh install     the Install section: its apt-get line, then both luarocks commands
#   check-fresh-debian.sh all         all of the above, each on its own copy of the pristine system
# Needs root, debootstrap (apt-get install debootstrap) and the network; the
# mirror is the one this machine's apt already uses. Work happens under
# LOOM_FRESH_DIR (default /var/tmp/loom-fresh-debian); the clone is of the
# checkout this script is in (its committed HEAD, as `git clone` gives it).
# Logs go to LOOM_FRESH_DIR/<check>.log; the last line of each says how it went.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
work=${LOOM_FRESH_DIR:-/var/tmp/loom-fresh-debian}
base=$work/base
suite=bookworm

[ "$(id -u)" -eq 0 ] || { echo "run as root (debootstrap and chroot need it)" >&2; exit 1; }

# The Debian mirror of this machine's apt sources, so the check downloads
# from wherever this machine is allowed to.
mirror() {
  local m
  m=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list |
        grep -oE 'https?://[^ ]*/debian/?( |$)' | grep -v security | head -n 1 | tr -d ' ')
  echo "${m:-http://deb.debian.org/debian}"
}

make_base() {
  [ -f "$base/.complete" ] && return 0
  command -v debootstrap >/dev/null || { echo "install debootstrap first: apt-get install debootstrap" >&2; exit 1; }
  rm -rf "$base"
  mkdir -p "$work"
  local t0=$SECONDS
  debootstrap --variant=minbase "$suite" "$base" "$(mirror)"
  # What the debian:bookworm container image has too: services that
  # packages install are not started (there is no init to run them, and
  # here they would listen on the host's loopback).
  printf '#!/bin/sh\nexit 101\n' > "$base/usr/sbin/policy-rc.d"
  chmod 755 "$base/usr/sbin/policy-rc.d"
  touch "$base/.complete"
  echo "base system made in $((SECONDS - t0)) s"
}

# fresh NAME: a copy of the pristine system with proc, sys and dev mounted
# and a clone of this checkout in /root/loom. Prints its path.
fresh() {
  local root=$work/$1
  unmount "$root"
  rm -rf "$root"
  cp -a "$base" "$root"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  mount -t proc proc "$root/proc"
  mount -t sysfs sysfs "$root/sys"
  mount --rbind /dev "$root/dev"
  mount --make-rslave "$root/dev" 2>/dev/null || true
  git clone -q "$here" "$root/root/loom"
  echo "$root"
}

unmount() {
  local root=$1 m
  [ -d "$root" ] || return 0
  # Deepest first: anything a run left mounted under the tree, then ours.
  for m in $(awk -v r="$root/" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}

# in_chroot ROOT COMMAND: runs COMMAND with bash in the clone, as root, with
# the environment of a login on a fresh system (no variables from here).
in_chroot() {
  chroot "$1" /usr/bin/env -i HOME=/root TERM=dumb PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /bin/bash -c "cd /root/loom && $2" </dev/null
}

timed() { # timed LABEL ROOT COMMAND
  local t0=$SECONDS rc=0
  echo "---- $1: $3"
  in_chroot "$2" "$3" || rc=$?
  echo "---- $1: exit $rc after $((SECONDS - t0)) s"
  return $rc
}

check_quickstart() {
  local root rc=0
  root=$(fresh quickstart)
  timed demo "$root" "bash scripts/demo.sh" || rc=1
  timed test "$root" "bash scripts/test.sh" || rc=1
  unmount "$root"
  return $rc
}

check_example() {
  local root rc=0
  root=$(fresh example)
  timed sqlite "$root" "bash scripts/example.sh examples/sqlite/fan_out.lua" || rc=1
  timed postgres "$root" "bash scripts/example.sh examples/postgres/fan_out.lua" || rc=1
  timed mysql "$root" "bash scripts/example.sh examples/db/named_lock.lua mysql" || rc=1
  unmount "$root"
  return $rc
}

# The Install section, word for word: its apt-get line (read from the
# README, so the check follows the text), then each luarocks command, then
# loom loaded from the tree the second one filled.
check_install() {
  local root rc=0 apt_line
  root=$(fresh install)
  apt_line=$(awk '/^## Install/ { on = 1 } on && /^apt-get install/ { print; exit }' "$root/root/loom/README.md")
  [ -n "$apt_line" ] || { echo "no apt-get line in the README's Install section" >&2; return 1; }
  timed packages "$root" "apt-get update -qq && DEBIAN_FRONTEND=noninteractive $apt_line" || rc=1
  # The tree of one's own first: once the system tree has loom, a broken
  # local install would go unnoticed.
  timed local-tree "$root" "luarocks --lua-version=5.4 make --tree ./lua_modules rockspec/loom-scm-1.rockspec" || rc=1
  timed use-local-tree "$root" 'eval "$(luarocks --lua-version=5.4 path --tree ./lua_modules)" && cd / &&
    lua5.4 -e "assert(package.searchpath(\"loom.core\", package.cpath):find(\"/root/loom/lua_modules/\", 1, true))
      local loom = require \"loom\"; print(loom.run(function() loom.sleep(0.01) return \"loom from ./lua_modules works\" end))"' || rc=1
  timed system-tree "$root" "luarocks --lua-version=5.4 make rockspec/loom-scm-1.rockspec" || rc=1
  timed use-system-tree "$root" 'cd / && lua5.4 -e "local loom = require \"loom\"; local db = loom.db.open(\"sqlite::memory:\")
    print(loom.run(function() return db:value(\"SELECT 40 + 2\") end))"' || rc=1
  unmount "$root"
  return $rc
}

run_check() { # run_check NAME: its output to NAME.log and here
  local rc=0 t0=$SECONDS
  mkdir -p "$work"
  "check_$1" > >(tee "$work/$1.log") 2>&1 || rc=$?
  echo "==== $1: $([ $rc -eq 0 ] && echo ok || echo FAILED) in $((SECONDS - t0)) s" | tee -a "$work/$1.log"
  return $rc
}

case "${1:-all}" in
base) make_base ;;
quickstart | example | install) make_base; run_check "$1" ;;
all)
  make_base
  rc=0
  for c in quickstart example install; do run_check "$c" || rc=1; done
  exit $rc
  ;;
*) sed -n '2,15p' "$0" >&2; exit 2 ;;
esac
