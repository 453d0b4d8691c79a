# shellcheck shell=bash
# What the bench/*.sh drivers share, sourced by them: the Release build
# they measure, and for pg.sh and mysql.sh the server they measure, each
# measurement kept per round (the best and the median), the rounds with
# the order flipped each time, and the table of ratios.

# bench_build: builds LOOM_BUILD_DIR (Release, no tests) unless it holds a
# built loom already.
bench_build() {
  [ -f "$LOOM_BUILD_DIR/loom/core.so" ] && return 0
  cmake -S . -B "$LOOM_BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DLOOM_BUILD_TESTS=OFF >/dev/null &&
    cmake --build "$LOOM_BUILD_DIR" -j2 >/dev/null
}

# bench_server SCRIPT URL DIR: sets URL to the given URL when there is one,
# else starts a throwaway server with SCRIPT (spec/support/*_server.sh) in
# DIR, sets URL to it and bench_server_dir to DIR, which bench_server_stop
# stops and removes.
bench_server_dir=""
bench_server_script=""
# shellcheck disable=SC2034 # URL is the caller's
bench_server() {
  bench_server_script=$1
  if [ -n "$2" ]; then
    URL=$2
  else
    bench_server_dir=$3
    bash "$bench_server_script" start "$bench_server_dir"
    URL=$(cat "$bench_server_dir/url")
  fi
}
bench_server_stop() {
  if [ -n "$bench_server_dir" ]; then bash "$bench_server_script" stop "$bench_server_dir" || true; fi
}

declare -A best all
note() { # name value: keep the best, and every value for the median
  local name=$1 v=$2
  [ -n "$v" ] || return 0
  all[$name]="${all[$name]:-} $v"
  if [ -z "${best[$name]:-}" ] || awk -v a="$v" -v b="${best[$name]}" 'BEGIN{exit !(a>b)}'; then
    best[$name]=$v
  fi
}
median() { # name
  echo "${all[$1]:-}" | tr ' ' '\n' | awk 'NF' | sort -g |
    awk '{v[NR]=$1} END{if (NR) printf "%.1f", NR % 2 ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'
}

# rounds N "A B" "C" ...: each group once per round, its items back to back
# through the caller's run_one, in reverse order every other round.
rounds() {
  local n=$1 round group i item
  local -a items
  shift
  for round in $(seq 1 "$n"); do
    echo "round $round/$n ..." >&2
    for group in "$@"; do
      read -r -a items <<<"$group"
      if [ $((round % 2)) -eq 0 ]; then
        for ((i = ${#items[@]} - 1; i >= 0; i--)); do run_one "${items[$i]}"; done
      else
        for item in "${items[@]}"; do run_one "$item"; done
      fi
    done
  done
}

# The ratio table: table_header, then a row per target; fails counts the
# targets missed.
fails=0
table_header() {
  echo "ratio: best loom round / best peer round (PASS/FAIL on it); median: the same with medians"
  echo
  printf '| %-44s | %12s | %-36s | %12s | %6s | %6s | %6s | %-4s |\n' "loom" "loom" "peer" "peer" "ratio" "median" "target" ""
  printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..46})" "$(printf -- '-%.0s' {1..14})" \
    "$(printf -- '-%.0s' {1..38})" "$(printf -- '-%.0s' {1..14})" "--------" "--------" "--------" "------"
}
row() { # label loomkey peerlabel peerkey target unit
  local lv=${best[$2]:-} pv=${best[$4]:-}
  if [ -z "$lv" ] || [ -z "$pv" ]; then
    printf '| %-44s | %12s | %-36s | %12s | %6s | %6s | %5.2fx | %-4s |\n' "$1" "${lv:-n/a}" "$3" "${pv:-n/a}" "" "" "$5" "FAIL"
    fails=$((fails + 1))
    return
  fi
  local ratio mratio verdict
  ratio=$(awk -v a="$lv" -v b="$pv" 'BEGIN{printf "%.2f", a / b}')
  mratio=$(awk -v a="$(median "$2")" -v b="$(median "$4")" 'BEGIN{printf "%.2f", a / b}')
  if awk -v r="$ratio" -v t="$5" 'BEGIN{exit !(r >= t)}'; then verdict=PASS; else verdict=FAIL; fails=$((fails + 1)); fi
  printf '| %-44s | %8.0f %-3s | %-36s | %8.0f %-3s | %5.2fx | %5.2fx | %5.2fx | %-4s |\n' \
    "$1" "$lv" "$6" "$3" "$pv" "$6" "$ratio" "$mratio" "$5" "$verdict"
}
