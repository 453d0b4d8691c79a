#!/usr/bin/env bash
# Background jobs on PostgreSQL: loom.jobs against graphile-worker 0.18
# (npm), on one server, in one run, with the same concurrency (one process
# each, JOBS_BENCH_C concurrent jobs, a pool of C + 1):
#   - no-op jobs drained per second (N queued first; the worker's startup
#     not counted: graphile-worker's is measured alone and taken off, as
#     its own bench script does)
#   - enqueue-to-start latency, p50 and p99 (jobs enqueued one at a time,
#     JOBS_BENCH_GAP s apart, by another process)
#   - batch enqueue: enqueue_many against add_jobs, N jobs in one call
#
#   bench/jobs.sh                        start a throwaway server, measure, stop it
#   LOOM_PG_URL=postgres://... bench/jobs.sh   use that server
# Settings: JOBS_BENCH_N (20000), JOBS_BENCH_C (24), JOBS_BENCH_K (300 latency
# samples), JOBS_BENCH_GAP (0.02), JOBS_BENCH_ROUNDS (3: best round counts,
# median beside it), GRAPHILE_DIR (where graphile-worker is installed with
# npm; a temporary folder when unset). Without node/npm or the npm registry
# the group is skipped (exit 77), saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

N=${JOBS_BENCH_N:-20000}
C=${JOBS_BENCH_C:-24}
K=${JOBS_BENCH_K:-300}
GAP=${JOBS_BENCH_GAP:-0.02}
ROUNDS=${JOBS_BENCH_ROUNDS:-3}
export LOOM_BUILD_DIR=${LOOM_BUILD_DIR:-build-bench}
LUA=${LUA:-lua5.4}
root=$PWD
export LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;;" LUA_CPATH="$root/$LOOM_BUILD_DIR/?.so;;"

for tool in node npm "$LUA"; do
  command -v "$tool" >/dev/null || { echo "jobs.sh: $tool not found: skipped" >&2; exit 77; }
done
bench_build || { echo "jobs.sh: the build failed" >&2; exit 1; }

work=$(mktemp -d /tmp/loom-jobsbench.XXXXXX)
chmod 755 "$work"
gw_pid=""
cleanup() {
  [ -z "$gw_pid" ] || kill "$gw_pid" 2>/dev/null || true
  bench_server_stop
  rm -rf "$work"
}
trap cleanup EXIT

gw=${GRAPHILE_DIR:-$work/graphile}
mkdir -p "$gw/tasks"
if [ ! -x "$gw/node_modules/.bin/graphile-worker" ]; then
  echo "installing graphile-worker@0.18 with npm into $gw ..." >&2
  (cd "$gw" && npm install --silent --no-audit --no-fund graphile-worker@0.18 >/dev/null 2>&1) ||
    { echo "jobs.sh: npm install graphile-worker failed: skipped" >&2; exit 77; }
fi
# The settings of graphile-worker's performance page, at our concurrency.
cat >"$gw/graphile.config.js" <<EOF
module.exports = { worker: {
  connectionString: process.env.DATABASE_URL, fileExtensions: [".js"],
  concurrentJobs: $C, maxPoolSize: $C + 1, localQueue: { size: 500 },
  completeJobBatchDelay: 0, failJobBatchDelay: 0,
}};
EOF
echo 'module.exports = ({ id }) => { if (id === 999) console.log("Found 999!"); };' >"$gw/tasks/log_if_999.js"
cat >"$gw/tasks/lat.js" <<'EOF'
const fs = require("fs");
module.exports = ({ t }) => {
  const ms = (Number(process.hrtime.bigint()) / 1e6) - t * 1000;
  fs.appendFileSync(process.env.LAT_FILE, ms.toFixed(3) + "\n");
};
EOF

bench_server spec/support/pg_server.sh "${LOOM_PG_URL:-}" "$work/server"
export DATABASE_URL=$URL
GWBIN=$gw/node_modules/.bin/graphile-worker
(cd "$gw" && "$GWBIN" --schema-only >/dev/null)

loom_run() { "$LUA" bench/jobs.lua "$@" | awk -v k="$1" '/^RESULT/{print $2, $3}'; }
now_ms() { date +%s%3N; }

run_one() {
  case $1 in
  loom_drain)
    note loom_drain "$(loom_run drain "$URL" "$N" "$C" | awk '{print $2}')" ;;
  graphile_drain)
    "$LUA" bench/jobs.lua gw_fill "$URL" 1 >/dev/null
    local t0 t1 s e
    t0=$(now_ms); (cd "$gw" && timeout 300 "$GWBIN" --once >/dev/null); t1=$(now_ms)
    "$LUA" bench/jobs.lua gw_fill "$URL" "$N" >/dev/null
    s=$(now_ms); (cd "$gw" && timeout 300 "$GWBIN" --once >/dev/null); e=$(now_ms)
    note graphile_drain "$(awk -v n="$N" -v run=$((e - s)) -v up=$((t1 - t0)) 'BEGIN{printf "%.1f", n * 1000 / (run - up)}')" ;;
  loom_latency)
    local out="$work/loom_lat.out"
    timeout 300 "$LUA" bench/jobs.lua listen "$URL" "$K" "$C" >"$out" &
    local pid=$!
    for _ in $(seq 100); do grep -q READY "$out" 2>/dev/null && break; sleep 0.1; done
    "$LUA" bench/jobs.lua produce "$URL" "$K" "$GAP" loom
    wait "$pid" || echo "jobs.sh: the loom latency worker failed or overran" >&2
    # Latency: lower is better; kept as its inverse so the best round is the highest.
    note loom_p50 "$(awk '/^RESULT loom_p50/{printf "%.4f", 1000 / $3}' "$out")"
    note loom_p99 "$(awk '/^RESULT loom_p99/{printf "%.4f", 1000 / $3}' "$out")" ;;
  graphile_latency)
    local lat="$work/gw_lat.txt"
    : >"$lat"
    "$LUA" bench/jobs.lua gw_fill "$URL" 0 >/dev/null
    (cd "$gw" && LAT_FILE=$lat exec "$GWBIN" >/dev/null 2>&1) &
    gw_pid=$!
    sleep 3 # its startup
    "$LUA" bench/jobs.lua produce "$URL" "$K" "$GAP" graphile
    for _ in $(seq 100); do [ "$(wc -l <"$lat")" -ge "$K" ] && break; sleep 0.1; done
    kill "$gw_pid" 2>/dev/null || true
    wait "$gw_pid" 2>/dev/null || true
    gw_pid=""
    local r
    r=$("$LUA" bench/jobs.lua latency "$lat")
    note graphile_p50 "$(awk '/^RESULT graphile_p50/{printf "%.4f", 1000 / $3}' <<<"$r")"
    note graphile_p99 "$(awk '/^RESULT graphile_p99/{printf "%.4f", 1000 / $3}' <<<"$r")" ;;
  loom_enqueue) note loom_enqueue "$(loom_run enqueue "$URL" "$N" | awk '{print $2}')" ;;
  graphile_enqueue) note graphile_enqueue "$(loom_run gw_enqueue "$URL" "$N" | awk '{print $2}')" ;;
  esac
}

rounds "$ROUNDS" "loom_drain graphile_drain" "loom_latency graphile_latency" "loom_enqueue graphile_enqueue"

ms() { awk -v v="${best[$1]:-}" 'BEGIN{if (v == "") print "n/a"; else printf "%.2f ms", 1000 / v}'; }
echo
echo "loom.jobs vs graphile-worker 0.18, one process each, concurrency $C, $N jobs, $K latency samples $GAP s apart"
echo "(latency rows: the ratio is graphile's / loom's, so above 1 means loom is faster)"
echo
table_header
row "no-op jobs drained per second" loom_drain "graphile-worker --once" graphile_drain 1.0 "/s"
row "enqueue-to-start p50 (1000/ms)" loom_p50 "graphile-worker" graphile_p50 1.0 "/s"
row "enqueue-to-start p99 (1000/ms)" loom_p99 "graphile-worker" graphile_p99 1.0 "/s"
row "batch enqueue (enqueue_many / add_jobs)" loom_enqueue "add_jobs" graphile_enqueue 1.0 "/s"
echo
echo "latency: loom p50 $(ms loom_p50), p99 $(ms loom_p99); graphile-worker p50 $(ms graphile_p50), p99 $(ms graphile_p99)"
[ "$fails" -eq 0 ] || exit 3
