-- loom.jobs measurements for bench/jobs.sh, one per run, each printing
-- "RESULT <name> <value>" lines:
--   drain URL N C          N no-op jobs queued, one worker of concurrency C: jobs/s
--   enqueue URL N          enqueue_many of N jobs: jobs/s
--   gw_enqueue URL N       graphile-worker's add_jobs of N jobs: jobs/s
--   gw_fill URL N          N no-op jobs for graphile-worker (its own drain is timed by jobs.sh)
--   listen URL K C         a worker that records K jobs' enqueue-to-start latency: p50, p99 ms
--   produce URL K GAP SYS  K jobs one by one, GAP s apart, for SYS = loom or graphile
--   latency FILE           p50 and p99 of the milliseconds in FILE (graphile-worker's)
-- Workers prefetch 500 jobs, as graphile-worker's localQueue.size in
-- bench/jobs.sh. Enqueue-to-start latency: the producer puts loom.now() (the monotonic
-- clock, the one Node's process.hrtime reads too) in the payload; the
-- handler subtracts it from its own.
local loom = require "loom"

local mode, url = arg[1], arg[2]
local PREFIX = "bench_jobs_"

local function result(name, v) print(("RESULT %s %.1f"):format(name, v)) end

local function percentiles(list)
  table.sort(list)
  local function at(p) return list[math.max(1, math.ceil(#list * p))] end
  return at(0.5), at(0.99)
end

-- The pool's connections are made before anything is timed, as
-- graphile-worker's startup is taken off its figure.
local function open(max)
  max = max or 25
  local db = loom.db.open(url, { pool = { max = max } })
  local list = {}
  for i = 1, max do list[i] = i end
  loom.map(list, function() return db:value("SELECT 1 FROM pg_sleep(0.01)") end, { concurrency = max })
  return db, loom.jobs.open(db, { prefix = PREFIX })
end

local function noops(n)
  local list = {}
  for i = 1, n do list[i] = { name = "noop", payload = { id = i } } end
  return list
end

-- graphile-worker's add_jobs, given the jobs as one JSON array.
local function gw_add(db, n)
  local parts = {}
  for i = 1, n do parts[i] = ('{"identifier":"log_if_999","payload":{"id":%d}}'):format(i) end
  return db:value("SELECT count(*) FROM graphile_worker.add_jobs(array(SELECT json_populate_recordset("
    .. "null::graphile_worker.job_spec, $1::json)))", "[" .. table.concat(parts, ",") .. "]")
end

loom.run(function()
  if mode == "drain" then
    local n, c = tonumber(arg[3]), math.tointeger(tonumber(arg[4]))
    local db, jobs = open(c + 1)
    db:exec("DELETE FROM " .. PREFIX .. "jobs")
    jobs:enqueue_many(noops(n))
    local done, count = loom.event(), 0
    jobs:handle("noop", function()
      count = count + 1
      if count == n then done:set() end
    end)
    jobs:work { queues = { default = c }, prefetch = 500 }
    local t0 = loom.now() -- the worker's tasks start at the first wait, below
    done:wait()
    jobs:stop()
    result("loom_drain", n / (loom.now() - t0))
    assert(db:value("SELECT count(*) FROM " .. PREFIX .. "jobs") == 0, "jobs left over")
    db:close()
  elseif mode == "enqueue" then
    local n = tonumber(arg[3])
    local db, jobs = open()
    db:exec("DELETE FROM " .. PREFIX .. "jobs")
    local list = noops(n)
    local t0 = loom.now()
    jobs:enqueue_many(list)
    result("loom_enqueue", n / (loom.now() - t0))
    db:exec("DELETE FROM " .. PREFIX .. "jobs")
    db:close()
  elseif mode == "gw_enqueue" or mode == "gw_fill" then
    local n = tonumber(arg[3])
    local db = loom.db.open(url)
    db:exec("DELETE FROM graphile_worker._private_jobs")
    local t0 = loom.now()
    assert(gw_add(db, n) == n)
    if mode == "gw_enqueue" then
      result("graphile_enqueue", n / (loom.now() - t0))
      db:exec("DELETE FROM graphile_worker._private_jobs")
    end
    db:close()
  elseif mode == "listen" then
    local k, c = tonumber(arg[3]), math.tointeger(tonumber(arg[4]))
    local db, jobs = open(c + 1)
    db:exec("DELETE FROM " .. PREFIX .. "jobs")
    local lat, done = {}, loom.event()
    jobs:handle("lat", function(job)
      lat[#lat + 1] = (loom.now() - job.payload.t) * 1000
      if #lat == k then done:set() end
    end)
    jobs:work { queues = { default = c }, prefetch = 500 }
    print("READY")
    io.stdout:flush()
    done:wait()
    jobs:stop()
    local p50, p99 = percentiles(lat)
    result("loom_p50", p50)
    result("loom_p99", p99)
    db:close()
  elseif mode == "produce" then
    local k, gap, sys = tonumber(arg[3]), tonumber(arg[4]), arg[5]
    local db, jobs = open(2)
    for _ = 1, k do
      -- A float, also when whole: JSON keeps it as written.
      if sys == "loom" then
        jobs:enqueue("lat", { t = loom.now() })
      else
        db:exec("SELECT graphile_worker.add_job('lat', json_build_object('t', $1::float8))", loom.now())
      end
      loom.sleep(gap)
    end
    db:close()
  elseif mode == "latency" then
    local lat = {}
    for line in io.lines(url) do lat[#lat + 1] = tonumber(line) end
    local p50, p99 = percentiles(lat)
    result("graphile_p50", p50)
    result("graphile_p99", p99)
  else
    error("usage: lua5.4 bench/jobs.lua drain|enqueue|gw_enqueue|gw_fill|listen|produce|latency ...")
  end
end)
