-- Timeout protection around a slow query: a report that counts to 50
-- million gets 200 ms. The query runs on a reader connection's own thread,
-- so the loop stays free meanwhile (a ticker task keeps ticking); when the
-- time is up SQLite is interrupted (not just abandoned) and the next query
-- answers at once. With readers = 1 every single read shares one reader
-- connection, so the next query runs where the slow one was stopped.
local loom = require "loom"

local path = os.tmpname()
local db = loom.db.open("sqlite:" .. path, { pool = { readers = 1 } })

local SLOW = [[WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50000000)
               SELECT count(*) FROM c]]

loom.run(function()
  local ticks, ticking = 0, true
  local ticker = loom.spawn(function()
    while ticking do
      loom.sleep(0.02)
      ticks = ticks + 1
      if ticks % 5 == 0 then print(("  tick %d: the loop is free while the query runs"):format(ticks)) end
    end
  end)

  print("running the slow report with a 200 ms budget")
  local started = loom.now()
  local ok, err = pcall(loom.timeout, 0.2, db.value, db, SLOW)
  local took = loom.now() - started
  print(("the report gave up after %.0f ms: %s"):format(took * 1000, tostring(err)))
  assert(not ok and loom.is_error(err, "timeout"), "the report was stopped by the timeout")
  ticking = false
  ticker:join()
  print(("the ticker ticked %d times meanwhile"):format(ticks))
  -- One tick is the promise (the loop was not blocked by the query); how
  -- many fit in 200 ms depends on how busy the machine is.
  assert(ticks >= 1, "the loop kept running other tasks")

  started = loom.now()
  local answer = db:value("SELECT 40 + 2")
  local next_took = loom.now() - started
  print(("the next query answered %d in %.1f ms: the interrupted one is not still running")
    :format(answer, next_took * 1000))
  -- Counting to 50 million takes seconds; the next query on the same
  -- reader would wait that long if the interrupted one still ran. Two
  -- seconds leave room for a loaded machine.
  assert(answer == 42 and next_took < 2, "the interrupted query no longer runs")
  local stats = db:stats()
  print(("connections in use: %d"):format(stats.in_use))
  assert(stats.in_use == 0)
end)
db:close()
for _, suffix in ipairs({ "", "-wal", "-shm" }) do os.remove(path .. suffix) end
