#!/usr/bin/env bash
# Every test loom has, as CI runs it: static checks (scripts/lint.sh), C
# unit tests (ctest), the busted specs (examples included) against real
# PostgreSQL and MariaDB servers started here, bench/soak.lua on each
# driver, the same again built with AddressSanitizer, LeakSanitizer and
# UBSan, threads under ThreadSanitizer, and an install from the rockspec.
# Ends with one line "N passed, N failed".
#   LOOM_SKIP_ASAN=1   skip the AddressSanitizer pass (quick local runs)
#   LOOM_SKIP_TSAN=1   skip the ThreadSanitizer pass
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bash scripts/deps.sh || exit 1

passed=0
failed=0
broken=()
logs=$(mktemp -d)

stage() { printf '\n==== %s\n' "$*"; }
fail_stage() { broken+=("$1"); failed=$((failed + 1)); }

build() { # build DIR [cmake args...]: with every driver, so none is skipped unnoticed
  local dir=$1; shift
  cmake -S . -B "$dir" -DLOOM_WITH_POSTGRES=ON -DLOOM_WITH_MYSQL=ON -DLOOM_WITH_SQLITE=ON -DLOOM_WITH_HTTP=ON "$@" >"$logs/cmake-$(basename "$dir").log" 2>&1 &&
    cmake --build "$dir" -j"$(nproc)" >"$logs/build-$(basename "$dir").log" 2>&1 || {
      cat "$logs/cmake-$(basename "$dir").log" "$logs/build-$(basename "$dir").log" | tail -n 40
      return 1
    }
}

ctests() { # ctests DIR
  local log="$logs/ctest-$(basename "$1").log"
  ctest --test-dir "$1" --output-on-failure -j2 2>&1 | tee "$log"
  local line
  line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1)
  if [ -z "$line" ]; then
    grep -q 'No tests were found' "$log" && return 0
    fail_stage "ctest in $1 printed no summary"
    return
  fi
  local bad total
  bad=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
  total=$(sed -E 's/.* failed out of ([0-9]+).*/\1/' <<<"$line")
  passed=$((passed + total - bad))
  failed=$((failed + bad))
  [ "$bad" -eq 0 ] || broken+=("ctest in $1")
}

# Each spec file runs as its own busted process under a deadline, so a hang
# costs minutes and the summary names the file that overran.
SPEC_DEADLINE=${LOOM_SPEC_DEADLINE:-900}

specs() { # specs BUILD_DIR [env assignments...] [-- spec files]
  local dir=$1; shift
  local log="$logs/busted-$(basename "$dir").log"
  local envs=() files=() f
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do envs+=("$1"); shift; done
  [ "${1:-}" = "--" ] && { shift; files=("$@"); }
  # What starts with "-" is an option for every busted run, the rest files.
  local opts=() args=("${files[@]}")
  files=()
  for f in "${args[@]}"; do
    case $f in -*) opts+=("$f") ;; *) files+=("$f") ;; esac
  done
  [ ${#files[@]} -gt 0 ] || files=(spec/*_spec.lua)
  : >"$log"
  local one rc line ok bad err pend
  for f in "${files[@]}"; do
    one="$logs/one.log"
    echo "-- $f"
    timeout -k 10 "$SPEC_DEADLINE" env LOOM_BUILD_DIR="$dir" "${envs[@]}" \
      lua5.4 /usr/bin/busted -o utfTerminal "${opts[@]}" "$f" >"$one" 2>&1
    rc=$?
    # LeakSanitizer's own tracer can crash as it stops the threads for the
    # leak check at exit ("Tracer caught signal 11", seen about once in a
    # few sanitizer runs on a loaded machine): a failure of the tool, not
    # a report, which also loses busted's summary. Once, the spec runs
    # again; a leak report or a second such crash still fails.
    if [ $rc -ne 0 ] && grep -q "LeakSanitizer has encountered a fatal error" "$one" &&
      ! grep -q "ERROR: LeakSanitizer: detected memory leaks" "$one"; then
      cat "$one" >>"$log"
      echo "$f: LeakSanitizer's tracer crashed at exit (not a report); running it again"
      timeout -k 10 "$SPEC_DEADLINE" env LOOM_BUILD_DIR="$dir" "${envs[@]}" \
        lua5.4 /usr/bin/busted -o utfTerminal "${opts[@]}" "$f" >"$one" 2>&1
      rc=$?
    fi
    cat "$one" | tee -a "$log"
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
      fail_stage "$f overran its ${SPEC_DEADLINE} s deadline (build $dir)"
      continue
    fi
    line=$(grep -E '[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' "$one" | tail -n 1)
    if [ -z "$line" ]; then
      fail_stage "$f printed no summary with $dir (crashed? exit $rc)"
      continue
    fi
    read -r ok bad err pend < <(sed -E 's/[^0-9]*([0-9]+)[^0-9]+([0-9]+)[^0-9]+([0-9]+)[^0-9]+([0-9]+).*/\1 \2 \3 \4/' <<<"$line")
    # Pending counts as failed: CI must run everything.
    passed=$((passed + ok))
    failed=$((failed + bad + err + pend))
    [ $((bad + err + pend)) -eq 0 ] || broken+=("$f with $dir")
  done
  if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$log"; then
    fail_stage "sanitizer report in busted with $dir"
  fi
}

soak() { # soak BUILD_DIR OPS [env assignments...]: bench/soak.lua on each driver
  local dir=$1 ops=$2; shift 2
  local d url
  for d in sqlite pg mysql; do
    case $d in
      sqlite) url="sqlite:$logs/soak.db" ;;
      pg) url=${LOOM_PG_URL:-} ;;
      mysql) url=${LOOM_MYSQL_URL:-} ;;
    esac
    if [ -z "$url" ]; then fail_stage "soak $d with $dir: no server"; continue; fi
    # The soak's own watchdog ends a hang inside loom first.
    if timeout -k 10 900 env LOOM_BUILD_DIR="$dir" SOAK_WATCHDOG=600 "$@" \
        lua5.4 bench/soak.lua "$d" "$url" "$ops" 2>&1 | tee "$logs/soak.log" | grep -E '^soak'; then :; fi
    if grep -q "^soak $d *PASS" "$logs/soak.log" &&
       ! grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$logs/soak.log"; then
      passed=$((passed + 1))
    else
      tail -n 20 "$logs/soak.log"
      fail_stage "soak $d with $dir"
    fi
    rm -f "$logs"/soak.db*
  done
}

# Seconds, and a finding needs no server: first.
stage "static checks: luacheck and cppcheck"
if bash scripts/lint.sh; then
  passed=$((passed + 1))
else
  fail_stage "lint"
fi

# One PostgreSQL server for the whole run, stopped however the run ends.
pgdir=$(mktemp -u /tmp/loom-pg.XXXXXX)
mydir=$(mktemp -u /tmp/loom-my.XXXXXX)
trap 'bash spec/support/pg_server.sh stop "$pgdir"; bash spec/support/my_server.sh stop "$mydir"; rm -rf "$logs"' EXIT
stage "PostgreSQL test server"
if bash spec/support/pg_server.sh start "$pgdir"; then
  export LOOM_PG_URL LOOM_PG_ADMIN_URL LOOM_PG_DIR="$pgdir"
  LOOM_PG_URL=$(cat "$pgdir/url")
  LOOM_PG_ADMIN_URL=$(cat "$pgdir/admin_url")
  echo "up on port $(cat "$pgdir/port")"
else
  fail_stage "the PostgreSQL test server did not start"
fi

# One MariaDB server too, for the MySQL specs.
stage "MariaDB test server"
if bash spec/support/my_server.sh start "$mydir"; then
  export LOOM_MYSQL_URL LOOM_MYSQL_ADMIN_URL LOOM_MYSQL_DIR="$mydir"
  LOOM_MYSQL_URL=$(cat "$mydir/url")
  LOOM_MYSQL_ADMIN_URL=$(cat "$mydir/admin_url")
  echo "up on port $(cat "$mydir/port")"
else
  fail_stage "the MariaDB test server did not start"
fi

stage "build"
if build build -DCMAKE_BUILD_TYPE=RelWithDebInfo; then
  stage "C tests"
  ctests build
  stage "specs and examples"
  specs build
  stage "soak: rows, batch, value, transactions and timeouts on each driver"
  soak build 100000
else
  fail_stage "build"
fi

if [ "${LOOM_SKIP_ASAN:-}" != 1 ]; then
  stage "build with AddressSanitizer, LeakSanitizer, UBSan"
  if build build-asan -DCMAKE_BUILD_TYPE=Debug -DLOOM_SANITIZE=ON; then
    export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:print_stacktrace=1"
    export LSAN_OPTIONS="suppressions=$root/test/lsan.supp:print_suppressions=0"
    export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
    stage "C tests under sanitizers"
    ctests build-asan
    stage "specs and examples under sanitizers"
    gcc -shared -fPIC -o build-asan/keep_modules.so scripts/keep_modules.c
    specs build-asan LD_PRELOAD="$(gcc -print-file-name=libasan.so) $root/build-asan/keep_modules.so" \
      LOOM_SOAK_QUERIES=100000 LOOM_JOBS_CHAOS=3000
    stage "soak under sanitizers"
    soak build-asan 20000 SOAK_RSS_BOUND_KB=0 LD_PRELOAD="$(gcc -print-file-name=libasan.so) $root/build-asan/keep_modules.so"
    unset ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS
  else
    fail_stage "sanitizer build"
  fi
fi

if [ "${LOOM_SKIP_TSAN:-}" != 1 ]; then
  # SQLite's worker threads, loom.thread's pools and channels, and the
  # loop hand work back and forth: their C tests and specs run under
  # ThreadSanitizer too, with the TLS tests (threads share its contexts). test/tsan.supp says what it suppresses and why
  # (libuv's raw close syscall, google/sanitizers#1376). The specs that
  # start processes are left out: a shell does not run with libtsan
  # preloaded.
  stage "threads under ThreadSanitizer"
  if build build-tsan -DCMAKE_BUILD_TYPE=Debug -DLOOM_BUILD_TESTS=ON \
       -DCMAKE_C_FLAGS="-fsanitize=thread -O1 -g -DLOOM_TIME_SCALE=20" -DCMAKE_MODULE_LINKER_FLAGS="-fsanitize=thread" \
       -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread"; then
    export TSAN_OPTIONS="halt_on_error=0 report_signal_unsafe=0 suppressions=$root/test/tsan.supp"
    log="$logs/ctest-tsan.log"
    ctest --test-dir build-tsan -R 'workers|xchan|tls' --output-on-failure -j2 >"$log" 2>&1
    if grep -qE '100% tests passed' "$log" && ! grep -q "WARNING: ThreadSanitizer" "$log"; then
      passed=$((passed + 1))
    else
      tail -n 40 "$log"
      fail_stage "the worker, channel and TLS C tests under ThreadSanitizer"
    fi
    gcc -shared -fPIC -o build-tsan/keep_modules.so scripts/keep_modules.c
    # The SQLite cases of the conformance spec (--filter) beside the thread
    # specs; each run truncates the log, so each is checked on its own.
    tsan_preload="$(gcc -print-file-name=libtsan.so) $root/build-tsan/keep_modules.so"
    specs build-tsan LD_PRELOAD="$tsan_preload" \
      -- --exclude-tags=subprocess --filter=sqlite spec/sqlite_spec.lua spec/db_conformance_spec.lua
    if grep -q "WARNING: ThreadSanitizer" "$logs/busted-build-tsan.log"; then
      fail_stage "ThreadSanitizer report in the SQLite specs"
    fi
    specs build-tsan LD_PRELOAD="$tsan_preload" \
      -- --exclude-tags=subprocess spec/thread_spec.lua spec/thread_channel_spec.lua spec/thread_stream_spec.lua \
      spec/thread_hostile_spec.lua
    if grep -q "WARNING: ThreadSanitizer" "$logs/busted-build-tsan.log"; then
      fail_stage "ThreadSanitizer report in the thread specs"
    fi
    # loom.fs's requests run on libuv's thread pool.
    specs build-tsan LD_PRELOAD="$tsan_preload" -- --exclude-tags=subprocess spec/fs_spec.lua
    if grep -q "WARNING: ThreadSanitizer" "$logs/busted-build-tsan.log"; then
      fail_stage "ThreadSanitizer report in the file specs"
    fi
    unset TSAN_OPTIONS
  else
    fail_stage "ThreadSanitizer build"
  fi
fi

stage "install from the rockspec into a fresh tree"
tree=$(mktemp -d)
if env LOOM_WITH_POSTGRES=ON LOOM_WITH_MYSQL=ON LOOM_WITH_SQLITE=ON \
     luarocks --lua-version=5.4 make --tree "$tree" rockspec/loom-scm-1.rockspec >"$logs/rock.log" 2>&1 &&
  out=$(lua5.4 -e "package.path='$tree/share/lua/5.4/?.lua;$tree/share/lua/5.4/?/init.lua;'..package.path
                   package.cpath='$tree/lib/lua/5.4/?.so;'..package.cpath
                   local loom = require 'loom'
                   print(loom.run(function() loom.sleep(0.01) return 'installed loom works' end))") &&
  [ "$out" = "installed loom works" ]; then
  echo "$out"
  passed=$((passed + 1))
else
  tail -n 30 "$logs/rock.log"
  fail_stage "rockspec install"
fi
rm -rf "$tree"
rm -rf build.luarocks

stage "summary"
for b in "${broken[@]}"; do echo "FAILED: $b"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
