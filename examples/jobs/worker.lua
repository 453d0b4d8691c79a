-- One worker process of workers.lua: lua5.4 worker.lua URL NAME. Serves the
-- "receipt" jobs until a NOTIFY on example_shutdown, then stops
-- gracefully: no new claims, running jobs finish (5 s at most), the rest go
-- back to the queue for the other workers.
local loom = require "loom"

local url, name = arg[1], arg[2]
loom.run(function()
  local db = loom.db.open(url, { pool = { max = 6 } })
  local jobs = loom.jobs.open(db, { prefix = "example_" })
  jobs:handle("receipt", function(job)
    loom.sleep(job.payload.ms / 1000) -- the work
    db:transaction(function(tx)
      tx:exec("INSERT INTO example_receipts (job_id, worker) VALUES ($1, $2)", job.id, name)
      job:complete(tx) -- the receipt and the job's completion commit together
    end)
  end)
  local shutdown = db:listen("example_shutdown")
  jobs:work { queues = { default = 4 } }
  -- A bound, so a worker never outlives a producer that failed.
  loom.select { { shutdown, "recv" }, timeout = 150 }
  jobs:stop(5)
  db:close()
end)
