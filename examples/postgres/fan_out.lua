-- Async queries fanned out and gathered: a dashboard needs five numbers;
-- ask for all of them at once over the pool instead of one after another.
local loom = require "loom"
local db = loom.db.open(assert(os.getenv("LOOM_PG_URL"), "set LOOM_PG_URL"), { pool = { max = 5 } })

local questions = {
  users = "SELECT 1200 AS n FROM pg_sleep(0.05)",
  orders = "SELECT 5400 AS n FROM pg_sleep(0.05)",
  revenue = "SELECT 98765.43::numeric AS n FROM pg_sleep(0.05)",
  signups = "SELECT 17 AS n FROM pg_sleep(0.05)",
  errors = "SELECT 0 AS n FROM pg_sleep(0.05)",
}

loom.run(function()
  local started = loom.now()
  local names, fns = {}, {}
  for name, sql in pairs(questions) do
    names[#names + 1] = name
    fns[#fns + 1] = function() return db:value(sql) end
  end
  local answers = { loom.all(table.unpack(fns)) }
  local elapsed = loom.now() - started
  for i, name in ipairs(names) do
    print(("  %-8s %s"):format(name, tostring(answers[i][1])))
  end
  print(("5 queries of 50 ms each answered in %.0f ms together"):format(elapsed * 1000))
  assert(elapsed < 0.25, "they ran concurrently")
end)
db:close()
