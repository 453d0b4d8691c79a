-- The runtime against its floor and its peer, in one run:
--   hand-offs   rendezvous channel, one producer task, one consumer task,
--               against cqueues' condition-variable hand-off (>= 3x)
--   spawn       spawn + run of a trivial task, against coroutine.create +
--               resume of the same function (>= 1/3)
--   memory      bytes per task blocked on a channel / an event (<= 2 KB)
--   sleepers    100k tasks asleep at once: lateness of each wake-up
--               (<= 20 ms, max and p99) and CPU against cqueues' (< 1x)
--   chunked     a task computing 300 ms in 0.1 ms chunks with loom.yield()
--               between them, beside a 10 ms ticker: the ticks against the
--               30 it would get if ticks were never late (>= 0.5)
--
--   lua5.4 bench/runtime.lua          (from the repository root; run.sh does it)
-- Environment: LOOM_BUILD_DIR (build-bench), BENCH_REPS (5), BENCH_SCALE (1.0:
-- multiplies every operation count, for a quick look use 0.1).
local lib = dofile((arg[0]:match("^(.*)/") or ".") .. "/lib.lua")
local raw = lib.raw
local loom = require "loom"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1.0
local function count(n) return math.max(1, math.floor(n * scale)) end

local report = lib.report("runtime (bench/runtime.lua)")
local have_cqueues = lib.have("cqueues")
local cqueues, condition
if have_cqueues then
  cqueues = require "cqueues"
  condition = require "cqueues.condition"
end

-- ---- hand-offs ---------------------------------------------------------

local HANDOFFS = count(200000)

local function loom_handoffs(n)
  loom.run(function()
    local ch = loom.channel(0)
    loom.spawn(function()
      for i = 1, n do ch:send(i) end
    end)
    for _ = 1, n do ch:recv() end
  end)
end

-- cqueues has no channel: the hand-off its users write is a one-slot
-- buffer guarded by two condition variables (as bench/peers/cqueues_chan.lua).
local function cqueues_handoffs(n)
  local cq = cqueues.new()
  local slot, full = nil, false
  local filled, emptied = condition.new(), condition.new()
  cq:wrap(function()
    for i = 1, n do
      while full do emptied:wait() end
      slot, full = i, true
      filled:signal()
    end
  end)
  cq:wrap(function()
    for _ = 1, n do
      while not full do filled:wait() end
      local _ = slot
      slot, full = nil, false
      emptied:signal()
    end
  end)
  assert(cq:loop())
end

-- The floor: one resume + yield round trip of a plain coroutine.
local function coroutine_round_trips(n)
  local co = raw.wrap(function()
    local yield = raw.yield
    while true do yield() end
  end)
  co()
  for _ = 1, n do co() end
end

lib.note("hand-offs: %d per run, best of %d", HANDOFFS, lib.reps)
local loom_rate = lib.rate(HANDOFFS, function() loom_handoffs(HANDOFFS) end)
local floor_rate = lib.rate(HANDOFFS, function() coroutine_round_trips(HANDOFFS) end)
if have_cqueues then
  local cq_rate = lib.rate(HANDOFFS, function() cqueues_handoffs(HANDOFFS) end)
  report:check("channel hand-offs/s vs cqueues condition hand-offs",
    lib.si(loom_rate), lib.si(cq_rate), loom_rate / cq_rate, ">=", 3)
else
  report:skip("channel hand-offs/s vs cqueues condition hand-offs", "cqueues not installed")
end
report:info("  (floor) coroutine resume+yield round trips/s", lib.si(loom_rate),
  lib.si(floor_rate), ("%.2fx"):format(loom_rate / floor_rate))

-- ---- spawn + run -------------------------------------------------------

local SPAWNS = count(200000)
local BATCH = 100

local function trivial(x) return x end

-- Tasks are spawned 100 at a time, then the spawner yields and they run:
-- a fan-out, the way tasks are used.
local function loom_spawns(n)
  loom.run(function()
    local spawn, yield = loom.spawn, loom.yield
    for _ = 1, n // BATCH do
      for j = 1, BATCH do spawn(trivial, j) end
      yield()
    end
  end)
end

-- The target's baseline: create and run at once, each coroutine garbage
-- before the next is made.
local function coroutine_spawns(n)
  local create, resume = raw.create, raw.resume
  for i = 1, n do resume(create(trivial), i) end
end

-- The same shape as loom's: 100 alive at once, then all run.
local function coroutine_spawns_batched(n)
  local create, resume = raw.create, raw.resume
  local cos = {}
  for _ = 1, n // BATCH do
    for j = 1, BATCH do cos[j] = create(trivial) end
    for j = 1, BATCH do resume(cos[j], j) end
  end
end

lib.note("spawn + run: %d per run", SPAWNS)
local spawn_rate = lib.rate(SPAWNS, function() loom_spawns(SPAWNS) end)
local co_rate = lib.rate(SPAWNS, function() coroutine_spawns(SPAWNS) end)
local co_batched_rate = lib.rate(SPAWNS, function() coroutine_spawns_batched(SPAWNS) end)
report:check("spawn+run of a trivial task/s vs coroutine.create+resume",
  lib.si(spawn_rate), lib.si(co_rate), spawn_rate / co_rate, ">=", 1 / 3)
report:info("  (same shape) vs 100 coroutines created, then resumed", lib.si(spawn_rate),
  lib.si(co_batched_rate), ("%.2fx"):format(spawn_rate / co_batched_rate))
-- The standalone lua5.4 runs the generational collector, where a coroutine
-- that is garbage at once costs almost nothing and 100 tasks alive across
-- a few minor collections grow old and wait for a major one; a host that
-- embeds Lua gets the incremental collector unless it asks.
local mode = collectgarbage("incremental")
local inc_spawn_rate = lib.rate(SPAWNS, function() loom_spawns(SPAWNS) end)
local inc_co_rate = lib.rate(SPAWNS, function() coroutine_spawns(SPAWNS) end)
collectgarbage(mode)
report:info("  (same) under the incremental collector", lib.si(inc_spawn_rate), lib.si(inc_co_rate),
  ("%.2fx"):format(inc_spawn_rate / inc_co_rate))

-- ---- memory per waiting task ------------------------------------------

local WAITERS = count(100000)

-- KB the heap grows by while n tasks wait: spawned, run to their wait,
-- then measured after full collections (so only what is alive counts).
local function loom_waiting_bytes(n, kind)
  local per
  loom.run(function()
    local ch, ev = loom.channel(0), loom.event()
    local body = kind == "channel" and function() ch:recv() end or function() ev:wait() end
    lib.settle()
    local before = collectgarbage("count")
    for _ = 1, n do loom.spawn(body) end
    loom.yield() -- every task runs once and blocks
    assert(loom.stats().tasks == n + 1, "the tasks did not all block")
    lib.settle()
    per = (collectgarbage("count") - before) * 1024 / n
    ch:close()
    ev:set()
  end)
  return per
end

local function coroutine_waiting_bytes(n)
  local cos = {} -- luacheck: ignore 241 (holds the coroutines alive while they are measured)
  local function body() raw.yield() end
  lib.settle()
  local before = collectgarbage("count")
  for i = 1, n do
    local co = raw.create(body)
    raw.resume(co)
    cos[i] = co
  end
  lib.settle()
  return (collectgarbage("count") - before) * 1024 / n
end

local function cqueues_waiting_bytes(n)
  local cq = cqueues.new()
  local cv = condition.new()
  local function body() cv:wait() end
  lib.settle()
  local before = collectgarbage("count")
  for _ = 1, n do cq:wrap(body) end
  assert(cq:step(0))
  lib.settle()
  local per = (collectgarbage("count") - before) * 1024 / n
  cv:signal()
  assert(cq:loop())
  return per
end

lib.note("memory: %d waiting tasks", WAITERS)
local mem_chan = loom_waiting_bytes(WAITERS, "channel")
local mem_event = loom_waiting_bytes(WAITERS, "event")
local mem_co = coroutine_waiting_bytes(WAITERS)
report:check("bytes per task blocked on a channel", ("%.0f B"):format(mem_chan),
  ("%.0f B"):format(mem_co), mem_chan, "<=", 2048, "%.0f B")
report:check("bytes per task blocked on an event", ("%.0f B"):format(mem_event),
  ("%.0f B"):format(mem_co), mem_event, "<=", 2048, "%.0f B")
report:info("  (baseline) a suspended plain coroutine", ("%.0f B"):format(mem_chan),
  ("%.0f B"):format(mem_co), ("%.2fx"):format(mem_chan / mem_co))
if have_cqueues then
  local mem_cq = cqueues_waiting_bytes(WAITERS)
  report:info("  (peer) a cqueues coroutine on a condition", ("%.0f B"):format(mem_chan),
    ("%.0f B"):format(mem_cq), ("%.2fx"):format(mem_chan / mem_cq))
end

-- ---- 100k sleepers -----------------------------------------------------

local SLEEPERS = count(100000)
local SLEEP_REPS = math.min(lib.reps, 3)

-- Every sleeper gets its own duration between 0.25 and 1.25 s, the same
-- list for loom and cqueues: the wake-ups spread over a second, as real
-- timeouts do. (Had all 100k the same deadline, the last would wake as late
-- as resuming 100k tasks takes, whoever the scheduler.)
math.randomseed(20240601)
local durations = {}
for i = 1, SLEEPERS do durations[i] = 0.25 + math.random() end

-- Returns CPU seconds, and an array of lateness in seconds (wake-up time
-- minus deadline, measured by the sleeper itself once resumed).
local function loom_sleepers(n)
  local late = table.move(durations, 1, n, 1, {})
  local t0 = os.clock()
  loom.run(function()
    local now, sleep = loom.now, loom.sleep
    for i = 1, n do
      loom.spawn(function()
        local d = late[i]
        local due = now() + d
        sleep(d)
        late[i] = now() - due
      end)
    end
  end)
  return os.clock() - t0, late
end

local function cqueues_sleepers(n)
  local late = table.move(durations, 1, n, 1, {})
  local t0 = os.clock()
  local cq = cqueues.new()
  local now, sleep = cqueues.monotime, cqueues.sleep
  for i = 1, n do
    cq:wrap(function()
      local d = late[i]
      local due = now() + d
      sleep(d)
      late[i] = now() - due
    end)
  end
  assert(cq:loop())
  return os.clock() - t0, late
end

-- The best of the runs (least disturbed by the neighbours on the shared
-- cores): the lowest CPU, and the run with the lowest worst lateness.
local function sleep_runs(fn)
  local best_cpu, best = math.huge, nil
  for _ = 1, SLEEP_REPS do
    lib.settle()
    local cpu, late = fn(SLEEPERS)
    local p99 = lib.quantile(late, 0.99)
    local max = late[#late]
    best_cpu = math.min(best_cpu, cpu)
    if best == nil or max < best.max then best = { max = max, p99 = p99 } end
  end
  return best_cpu, best
end

lib.note("sleepers: %d tasks, durations 0.25..1.25 s, best of %d", SLEEPERS, SLEEP_REPS)
local loom_cpu, loom_late = sleep_runs(loom_sleepers)
local ms = function(s) return ("%.1f ms"):format(s * 1000) end
report:check(("%s sleepers: max lateness"):format(lib.si(SLEEPERS)), ms(loom_late.max), "-",
  loom_late.max * 1000, "<=", 20, "%.1f ms")
report:check(("%s sleepers: p99 lateness"):format(lib.si(SLEEPERS)), ms(loom_late.p99), "-",
  loom_late.p99 * 1000, "<=", 20, "%.1f ms")
if have_cqueues then
  local cq_cpu, cq_late = sleep_runs(cqueues_sleepers)
  report:check(("%s sleepers: CPU seconds vs cqueues"):format(lib.si(SLEEPERS)),
    ("%.3f s"):format(loom_cpu), ("%.3f s"):format(cq_cpu), loom_cpu / cq_cpu, "<", 1)
  report:info("  (peer) cqueues lateness max / p99", ms(loom_late.max) .. " / " .. ms(loom_late.p99),
    ms(cq_late.max) .. " / " .. ms(cq_late.p99))
else
  report:skip(("%s sleepers: CPU seconds vs cqueues"):format(lib.si(SLEEPERS)), "cqueues not installed")
end

-- ---- yield-chunked CPU work beside a ticker -----------------------------

-- A task computes for 300 ms in chunks of 0.1 ms with loom.yield() between
-- them (cooperative chunking) while another ticks every 10 ms: how many
-- ticks get in. Wall time, not CPU: what is measured is whether timers
-- fire while the loop is busy. Each tick is 10 ms plus its lateness (the
-- next poll, libuv's millisecond timer steps, and on a loaded machine the
-- wait for the CPU), so the count falls a little short of 30 (22 to 29
-- here). A loop that polls only every 512 resumes gets 1 to 3.
local CHUNKED_S, CHUNK_S, TICK_S = 0.3, 0.0001, 0.01

local function chunked_ticks()
  local ticks = 0
  loom.run(function()
    local stop = false
    local ticker = loom.spawn(function()
      while not stop do loom.sleep(TICK_S); ticks = ticks + 1 end
    end)
    local now, yield = loom.now, loom.yield
    local t0 = now()
    while now() - t0 < CHUNKED_S do
      local chunk_end = now() + CHUNK_S
      repeat until now() >= chunk_end
      yield()
    end
    stop = true
    ticker:join()
  end)
  return ticks
end

lib.note("chunked: %.0f ms of work in %.1f ms chunks beside a %.0f ms ticker, best of %d",
  CHUNKED_S * 1000, CHUNK_S * 1000, TICK_S * 1000, lib.reps)
local best_ticks = 0
for _ = 1, lib.reps do best_ticks = math.max(best_ticks, chunked_ticks()) end
local ideal = CHUNKED_S / TICK_S
report:check("10 ms ticks during 300 ms of yield-chunked work, vs ideal", tostring(best_ticks),
  ("%.0f"):format(ideal), best_ticks / ideal, ">=", 0.5)

report:finish()
