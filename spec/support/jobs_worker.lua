-- A worker process of spec/jobs_chaos_spec.lua: serves the jobs of
-- prefix arg[2] on arg[1] until it is killed. "effect" jobs write a row
-- and complete in one transaction (exactly once); "plain" jobs write a
-- row and return (at least once).
local loom = require "loom"

local url, prefix = arg[1], arg[2]
loom.run(function()
  local db = loom.db.open(url, { pool = { max = 12 } })
  local jobs = loom.jobs.open(db, { prefix = prefix, backoff = function() return 0.05 end })
  local effect = ("INSERT INTO %seffects (job_id) VALUES ($1)"):format(prefix)
  local run = ("INSERT INTO %sruns (job_id) VALUES ($1)"):format(prefix)
  jobs:handle("effect", function(job)
    db:transaction(function(tx)
      tx:exec(effect, job.id)
      if job.payload.i % 7 == 0 then loom.sleep(0.005) end -- some in flight when the kill comes
      job:complete(tx)
    end)
  end)
  jobs:handle("plain", function(job)
    db:exec(run, job.id)
  end)
  jobs:work { queues = { default = 8 }, poll = 0.2, lease = 1, heartbeat = 0.25, rescue_every = 0.5 }
  print("worker up")
  io.stdout:flush()
end)
