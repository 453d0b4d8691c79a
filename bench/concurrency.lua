-- The structured-concurrency layer against plain Lua, in one run:
--   map         loom.map over 100k trivial items, concurrency 100, against
--               a plain loop calling the same function through
--               coroutine.wrap (>= 1/4)
--   pipeline    a 3-stage loom.pipeline, one worker per stage (>= 500k items/s)
--   semaphore   uncontended acquire + release pairs (>= 5M/s)
--
--   lua5.4 bench/concurrency.lua      (from the repository root; run.sh does it)
-- Environment: LOOM_BUILD_DIR (build-bench), BENCH_REPS (5), BENCH_SCALE (1.0).
local lib = dofile((arg[0]:match("^(.*)/") or ".") .. "/lib.lua")
local raw = lib.raw
local loom = require "loom"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1.0
local function count(n) return math.max(1, math.floor(n * scale)) end

local report = lib.report("concurrency (bench/concurrency.lua)")

-- ---- map ---------------------------------------------------------------

local ITEMS = count(100000)
local items = {}
for i = 1, ITEMS do items[i] = i end

local function trivial(x) return x + 1 end

local function loom_map(list)
  return loom.run(function()
    return loom.map(list, trivial, { concurrency = 100 })
  end)
end

-- The baseline: every call goes through a coroutine, one resume and one
-- yield per item, with the results gathered in order.
local function wrapped_loop(list)
  local yield = raw.yield
  local call = raw.wrap(function(x)
    while true do x = yield(trivial(x)) end
  end)
  local results = {}
  for i = 1, #list do results[i] = call(list[i]) end
  return results
end

local function plain_loop(list)
  local results = {}
  for i = 1, #list do results[i] = trivial(list[i]) end
  return results
end

lib.note("map: %d items, concurrency 100, best of %d", ITEMS, lib.reps)
do
  local check = loom_map(items)
  assert(#check == ITEMS and check[1] == 2 and check[ITEMS] == ITEMS + 1, "loom.map gave wrong results")
end
local map_rate = lib.rate(ITEMS, function() loom_map(items) end)
local wrap_rate = lib.rate(ITEMS, function() wrapped_loop(items) end)
local plain_rate = lib.rate(ITEMS, function() plain_loop(items) end)
report:check("loom.map items/s (concurrency 100) vs loop through coroutine.wrap",
  lib.si(map_rate), lib.si(wrap_rate), map_rate / wrap_rate, ">=", 1 / 4)
report:info("  (floor) a plain loop, no coroutine", lib.si(map_rate), lib.si(plain_rate),
  ("%.2fx"):format(map_rate / plain_rate))

-- A trivial fn never waits, so one worker runs the whole list. When every
-- item waits (here: one loom.yield), all 100 workers take turns: the cost
-- of a task switch per item.
local function yielding(x) loom.yield() return x + 1 end
local yield_rate = lib.rate(ITEMS, function()
  loom.run(function() return loom.map(items, yielding, { concurrency = 100 }) end)
end)
report:info("  (interleaved) loom.map, fn yields once per item", lib.si(yield_rate),
  lib.si(wrap_rate), ("%.2fx"):format(yield_rate / wrap_rate))

-- ---- pipeline ----------------------------------------------------------

local PIPE_ITEMS = count(200000)
local pipe_items = {}
for i = 1, PIPE_ITEMS do pipe_items[i] = i end

local function double(x) return x * 2 end
local function even(x) return x % 4 == 0 end
local function inc(x) return x + 1 end

-- Source array -> map -> filter -> map -> collected, every stage one task
-- joined to the next by the pipeline's bounded channels.
local function loom_pipeline(list)
  return loom.run(function()
    return loom.pipeline(list):map(double):filter(even):map(inc):collect()
  end)
end

lib.note("pipeline: %d items through map/filter/map", PIPE_ITEMS)
do
  local out = loom_pipeline(pipe_items)
  assert(#out == PIPE_ITEMS // 2 and out[1] == 5, "the pipeline gave wrong results")
end
local pipe_rate = lib.rate(PIPE_ITEMS, function() loom_pipeline(pipe_items) end)
report:check("3-stage pipeline items/s (1 worker per stage)", lib.si(pipe_rate), "-",
  pipe_rate / 1e3, ">=", 500, "%.0fk/s")

-- Stage by stage: what one bounded-channel hop costs, the pipeline's floor.
local function loom_channel_hops(n)
  loom.run(function()
    local ch = loom.channel(16)
    loom.spawn(function()
      for i = 1, n do ch:send(i) end
      ch:close()
    end)
    for _ in ch:iter() do end
  end)
end
local hop_rate = lib.rate(PIPE_ITEMS, function() loom_channel_hops(PIPE_ITEMS) end)
report:info("  (floor) items/s through one channel(16) between two tasks", lib.si(hop_rate), "-",
  ("%.2f hops"):format(hop_rate / pipe_rate))

-- ---- semaphore ---------------------------------------------------------

local PERMITS = count(2000000)

local function loom_semaphore(n)
  loom.run(function()
    local s = loom.semaphore(1)
    local acquire, release = s.acquire, s.release
    for _ = 1, n do
      acquire(s)
      release(s)
    end
  end)
end

-- A method call on a userdata costs something by itself: the floor is the
-- same loop calling a C method that does nothing useful.
local function loom_method_floor(n)
  loom.run(function()
    local s = loom.semaphore(1)
    local available = s.available
    for _ = 1, n do
      available(s)
      available(s)
    end
  end)
end

lib.note("semaphore: %d acquire+release pairs", PERMITS)
local sem_rate = lib.rate(PERMITS, function() loom_semaphore(PERMITS) end)
local floor_rate = lib.rate(PERMITS, function() loom_method_floor(PERMITS) end)
report:check("semaphore acquire+release pairs/s, uncontended", lib.si(sem_rate), "-",
  sem_rate / 1e6, ">=", 5, "%.1fM/s")
report:info("  (floor) two calls of sem:available()", lib.si(sem_rate), lib.si(floor_rate),
  ("%.2fx"):format(sem_rate / floor_rate))

report:finish()
