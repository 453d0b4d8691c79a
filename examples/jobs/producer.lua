-- The producer of workers.lua: lua5.4 producer.lua URL N. Enqueues N
-- jobs: most in one batch (COPY), the rest one by one, some of them
-- inside a transaction of their own work and some for later.
local loom = require "loom"

local url, n = arg[1], math.tointeger(tonumber(arg[2]))
loom.run(function()
  local db = loom.db.open(url)
  local jobs = loom.jobs.open(db, { prefix = "example_" })
  local batch = {}
  for i = 1, n - 20 do batch[i] = { name = "receipt", payload = { ms = i % 5 } } end
  jobs:enqueue_many(batch)
  for i = 1, 20 do
    if i % 2 == 0 then
      -- The job exists only if this transaction commits.
      db:transaction(function(tx) jobs:enqueue("receipt", { ms = 1 }, { tx = tx }) end)
    else
      jobs:enqueue("receipt", { ms = 1 }, { delay = 0.5, priority = -1 })
    end
  end
  db:close()
end)
