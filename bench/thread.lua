-- loom.thread against its baselines, in one run (ratios side by side):
--   parallel map   CPU-bound Lua over a pool of 2 workers against the same
--                  work in this one state: >= 1.8x (2.0x is the limit).
--   round trips    offloading a tiny function and waiting for its result,
--                  one after another, against luv's work queue
--                  (uv.new_work / uv.queue_work, Debian lua-luv): >= 1x.
--   ticker         a 10 ms ticker on the loop while both workers run
--                  CPU-bound Lua: its worst lateness <= 5 ms.
--   memory         per idle worker state: the Lua state's own count, and
--                  the process's resident growth per worker (information).
-- Wall-clock times (the work runs on several threads, so CPU time would
-- add them up), best of BENCH_REPS runs. The machine these run on is
-- shared and loaded: the figures are ratios of one run, taken side by side.
--
--   lua5.4 bench/thread.lua      (from the repository root; run.sh does it)
-- Environment: LOOM_BUILD_DIR (build-bench), BENCH_REPS (5), BENCH_SCALE
-- (1.0: multiplies the amounts of work).
local lib = dofile((arg[0]:match("^(.*)/") or ".") .. "/lib.lua")
local loom = require "loom"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1.0
local report = lib.report("loom.thread (bench/thread.lua)")

local function best_wall(fn, reps) return lib.best_wall(loom.now, fn, reps) end

local function spin(n)
  local x = 0
  for i = 1, n do x = x + i % 7 end
  return x
end

local function ms(s) return ("%.1f ms"):format(s * 1e3) end

loom.run(function()
  local pool = loom.thread.pool { size = 2 }

  -- Parallel map: 8 items of CPU-bound work, one item per job.
  local N = math.max(1, math.floor(4e6 * scale))
  local items = {}
  for i = 1, 8 do items[i] = N end
  local expected = spin(N)
  -- Taken in turns, so a change in the machine's load hits both alike.
  local single, parallel = math.huge, math.huge
  for _ = 1, lib.reps do
    single = math.min(single, best_wall(function()
      for i = 1, #items do assert(spin(items[i]) == expected) end
    end, 1))
    parallel = math.min(parallel, best_wall(function()
      local r = pool:map(items, spin, { chunk = 1 })
      for i = 1, #items do assert(r[i] == expected) end
    end, 1))
  end
  report:check("CPU-bound map, 8 items on 2 workers vs one state", ms(parallel), ms(single),
    single / parallel, ">=", 1.8)

  -- Round trips of a tiny function, one after another.
  local TRIPS = math.max(100, math.floor(20000 * scale))
  local function tiny(x) return x + 1 end
  local loom_rt = best_wall(function()
    local v = 0
    for _ = 1, TRIPS do v = pool:run(tiny, v) end
    assert(v == TRIPS)
  end)
  if lib.have("luv") then
    local uv = require "luv"
    local luv_rt
    -- luv runs its own loop: outside loom's, in a plain coroutine-free call.
    local function luv_trips()
      local done = 0
      local work
      work = uv.new_work(function(x) return x + 1 end, function(v)
        done = done + 1
        if done < TRIPS then uv.queue_work(work, v) end
      end)
      uv.queue_work(work, 0)
      uv.run()
      assert(done == TRIPS)
    end
    luv_rt = best_wall(luv_trips)
    report:check(("round trips of a tiny function (%d), vs luv's work queue"):format(TRIPS),
      ("%s/s"):format(lib.si(TRIPS / loom_rt)), ("%s/s"):format(lib.si(TRIPS / luv_rt)),
      luv_rt / loom_rt, ">=", 1)
  else
    report:skip("round trips vs luv's work queue", "lua-luv is missing (apt-get install lua-luv)")
  end

  -- A 10 ms ticker while both workers run CPU-bound Lua.
  local late, ticks, lates = 0, 0, {}
  local busy = loom.spawn(function()
    pool:map({ N * 2, N * 2, N * 2, N * 2 }, spin, { chunk = 1 })
  end)
  local ticker = loom.spawn(function()
    local next_at = loom.now() + 0.01
    while busy:status() ~= "done" do
      loom.sleep(math.max(0, next_at - loom.now()))
      late = math.max(late, loom.now() - next_at)
      ticks = ticks + 1
      lates[ticks] = loom.now() - next_at
      next_at = next_at + 0.01
    end
  end)
  busy:join()
  ticker:join()
  report:check(("10 ms ticker while both workers compute (%d ticks): worst lateness"):format(ticks),
    ("%.2f ms"):format(late * 1e3), "-", late * 1e3, "<=", 5, "%.2f ms")
  report:info("  (the same ticks) median and 90th percentile lateness",
    ("%.2f / %.2f ms"):format(lib.median(lates) * 1e3, lib.quantile(lates, 0.9) * 1e3))

  pool:close()

  -- Memory of an idle worker state.
  local function rss_kb()
    local f = io.open("/proc/self/statm")
    if not f then return nil end
    local pages = f:read("n") and f:read("n")
    f:close()
    return pages and pages * 4
  end
  local kb = loom.thread.run(function() collectgarbage(); collectgarbage(); return collectgarbage("count") end)
  local WORKERS = 16
  lib.settle()
  local before = rss_kb()
  local big = loom.thread.pool { size = WORKERS }
  big:map({ 1 }, tiny)
  loom.sleep(0.1)
  local after = rss_kb()
  big:close()
  report:info("memory of an idle worker's Lua state (collectgarbage count)", ("%.0f KB"):format(kb))
  if before and after then
    report:info(("resident growth per worker (a pool of %d)"):format(WORKERS),
      ("%.0f KB"):format((after - before) / WORKERS))
  end
end)

report:finish()
