-- 1000 lookups on a pool of 10: loom.map without `concurrency` (a task per
-- item, most of them waiting for a connection) against `concurrency = 10`
-- (10 tasks, none waiting), wall time, on SQLite and PostgreSQL. Run
-- through bench/pool.sh, which starts the PostgreSQL server.
local lib = require "bench.lib"
local loom = require "loom"

local dir = assert(os.getenv("DIR"), "run through bench/pool.sh")
local pg_url = os.getenv("PG_URL") or ""
local reps = tonumber(os.getenv("BENCH_REPS")) or 15
local N, ROWS = 1000, 10000

local ids = {}
for i = 1, N do ids[i] = (i * 7919) % ROWS + 1 end

local function ms(s) return ("%.1f ms"):format(s * 1e3) end

local function open(url)
  return loom.db.open(url, { pool = { max = 10 } })
end

local function setup(url, sql)
  local db = open(url)
  loom.run(function()
    db:exec("DROP TABLE IF EXISTS bench_lookup")
    db:exec("CREATE TABLE bench_lookup (id integer PRIMARY KEY, v integer, name text)")
    local rows = {}
    for i = 1, ROWS do rows[i] = { i, i * 2, "item " .. i } end
    db:insert_many("bench_lookup", { "id", "v", "name" }, rows)
    -- Every connection opened and its statement prepared: what is measured
    -- is the map, not the pool filling up.
    loom.map(ids, function(id) return db:value(sql, id) end, { concurrency = 10 })
  end)
  return db
end

local OPTS = { unbounded = nil, bounded = { concurrency = 10 } }

local function lookups(db, sql, mode)
  local t0 = loom.now()
  local got = loom.map(ids, function(id) return db:value(sql, id) end, OPTS[mode])
  local dt = loom.now() - t0
  assert(got.n == N and got[N] == ids[N] * 2, "a lookup came back wrong")
  return dt
end

-- Both maps once per round, the order flipped every round; the best of each.
local function measure(db, sql)
  local best = { unbounded = math.huge, bounded = math.huge }
  local timers = 0
  loom.run(function()
    for r = 1, reps do
      local order = r % 2 == 1 and { "unbounded", "bounded" } or { "bounded", "unbounded" }
      for _, mode in ipairs(order) do
        lib.settle()
        best[mode] = math.min(best[mode], lookups(db, sql, mode))
      end
    end
    -- How many timers the loop holds while the unbounded map's tasks wait.
    local peek = loom.spawn(function()
      loom.yield()
      timers = loom.stats().timers
    end)
    lookups(db, sql, "unbounded")
    peek:join()
  end)
  return best, timers
end

-- The first map on a fresh handle also opens the pool's connections (what
-- a measurement that runs one map per mode in one process sees first).
local function cold(url, sql, mode)
  local best = math.huge
  for _ = 1, 3 do
    local db = open(url)
    loom.run(function() best = math.min(best, lookups(db, sql, mode)) end)
    db:close()
  end
  return best
end

local report = lib.report(("pool waiters (bench/pool.lua): %d lookups on a pool of 10, best of %d, wall time")
  :format(N, reps))

local function run(name, url, sql)
  lib.note("pool: %s ...", name)
  local db = setup(url, sql)
  local best, timers = measure(db, sql)
  db:close()
  report:check(name .. ": loom.map unbounded vs concurrency = 10",
    ms(best.unbounded), ms(best.bounded), best.unbounded / best.bounded, "<=", 1.5)
  report:info(("  (waiting) timers armed while the unbounded map's tasks wait"), tostring(timers), "-")
  local cu, cb = cold(url, sql, "unbounded"), cold(url, sql, "bounded")
  report:info("  (cold pool) first map, unbounded vs concurrency = 10", ms(cu), ms(cb),
    ("%.2fx"):format(cu / cb))
end

run("SQLite", "sqlite:" .. dir .. "/pool.sqlite", "SELECT v FROM bench_lookup WHERE id = ?")
if pg_url ~= "" then
  run("PostgreSQL", pg_url, "SELECT v FROM bench_lookup WHERE id = $1")
else
  report:skip("PostgreSQL: loom.map unbounded vs concurrency = 10", "no server (bench/pool.sh starts one)")
end
report:finish()
