-- Background jobs across processes: three worker processes and a producer
-- process share one PostgreSQL database, as they would on several
-- machines. Each job writes a receipt and completes in the same
-- transaction, so a receipt exists exactly once per job whichever worker
-- ran it. When every job is done, one NOTIFY tells the workers to stop
-- gracefully.
--   LOOM_PG_URL=postgres://... lua5.4 examples/jobs/workers.lua
--   bash scripts/example.sh examples/jobs/workers.lua   (a throwaway server)
local loom = require "loom"

local url = assert(os.getenv("LOOM_PG_URL"), "set LOOM_PG_URL to a PostgreSQL database")
local here = arg[0]:match("^(.*)/") or "."
local JOBS = 300

-- Starts `lua5.4 here/script url ...` in the background, its output ours.
local function start(script, ...)
  local cmd = { "lua5.4", here .. "/" .. script, url, ... }
  for i, a in ipairs(cmd) do cmd[i] = "'" .. a:gsub("'", "'\\''") .. "'" end
  local p = io.popen(table.concat(cmd, " ") .. " & echo $!")
  local pid = p:read("l")
  p:close()
  return pid
end

loom.run(function()
  local db = loom.db.open(url)
  db:exec("DROP TABLE IF EXISTS example_jobs, example_workers, example_periodic, example_jobs_schema, "
    .. "example_receipts")
  db:exec("CREATE TABLE example_receipts (job_id bigint NOT NULL, worker text NOT NULL)")
  -- Opening creates the job tables; the workers and the producer opening
  -- them at the same moment would be just as safe.
  local jobs = loom.jobs.open(db, { prefix = "example_" })

  for i = 1, 3 do start("worker.lua", "worker-" .. i) end
  start("producer.lua", tostring(JOBS))

  local deadline = loom.now() + 120
  repeat
    loom.sleep(0.2)
    assert(loom.now() < deadline, "the jobs did not finish in time")
  until db:value("SELECT count(*) FROM example_receipts") >= JOBS and jobs:stats().queued == 0
    and jobs:stats().running == 0
  db:notify("example_shutdown")

  -- Every worker left (its row removed by jobs:stop).
  repeat
    loom.sleep(0.1)
    assert(loom.now() < deadline, "the workers did not stop")
  until db:value("SELECT count(*) FROM example_workers") == 0

  local rows = db:query("SELECT worker, count(*) AS n FROM example_receipts GROUP BY worker ORDER BY worker")
  for _, r in ipairs(rows) do print(("%s ran %d jobs"):format(r.worker, r.n)) end
  local once = db:value("SELECT count(DISTINCT job_id) FROM example_receipts")
  assert(once == JOBS and db:value("SELECT count(*) FROM example_receipts") == JOBS)
  print(("%d jobs done by %d worker processes, each exactly once"):format(JOBS, #rows))
  db:close()
end)
