-- A claimed job, as its handler sees it: id, name, queue, payload,
-- attempt (1 on the first run), max_attempts, unique_key, and
-- job:complete(tx).
local loom = require "loom"

local Job = {}
Job.__index = Job

function Job.new(worker, row, payload)
  return setmetatable({
    id = row.id, name = row.name, queue = row.queue, payload = payload, priority = row.priority,
    attempt = row.attempt, max_attempts = row.max_attempts, unique_key = row.unique_key,
    timeout_ms = row.timeout_ms, run_at = row.run_at, claimed_at = row.claimed_at, worker = worker,
  }, Job)
end

-- job:complete(tx): the job is done when tx commits, with the handler's
-- own writes in tx: both or neither. Fenced like every write of a claimed
-- job; when the lease was lost (the job was taken back, maybe claimed by
-- another worker) it raises kind `lease_lost`, so tx rolls back and the
-- other run's effects are the only ones. Without tx it completes now.
function Job:complete(tx)
  if tx ~= nil and (type(tx) ~= "table" or not loom._is_callable(tx.exec)) then
    loom.error("argument", "bad argument #1 to 'complete' (a transaction of db:transaction expected)")
  end
  local w = self.worker
  local n = (tx or w.db):exec(w.sql.complete, self.id, w.id, self.attempt)
  if n ~= 1 then
    loom.error("lease_lost", ("job %d (attempt %d) is no longer this worker's: its lease was lost")
      :format(self.id, self.attempt), { job = self.id })
  end
  self.completed = true
end

function Job:__tostring()
  return ("loom.jobs job %d (%s, attempt %d)"):format(self.id, self.name, self.attempt)
end

return Job
