-- Timeout protection around a slow report: the report gets 200 ms; when it
-- overruns, the query is cancelled on the server (not just abandoned) and
-- a cheaper fallback answers instead.
local loom = require "loom"
local db = loom.db.open(assert(os.getenv("LOOM_PG_URL"), "set LOOM_PG_URL"), { pool = { max = 2 } })

local function slow_report()
  return db:value("SELECT count(*) FROM generate_series(1, 1000) g, pg_sleep(3)")
end

loom.run(function()
  local started = loom.now()
  local ok, err = pcall(loom.timeout, 0.2, slow_report)
  print(("the report gave up after %.0f ms: %s"):format((loom.now() - started) * 1000, tostring(err)))
  assert(not ok and err.kind == "timeout")
  local still_running = db:value(
    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(3)%' AND state = 'active' "
      .. "AND pid <> pg_backend_pid()")
  print(("queries of it still running on the server: %d"):format(still_running))
  assert(still_running == 0)
  print("fallback answer: " .. db:value("SELECT 1000"))
end)
db:close()
