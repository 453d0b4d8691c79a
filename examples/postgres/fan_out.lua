-- Async queries fanned out and gathered: a dashboard needs five numbers;
-- ask for all of them at once over the pool instead of one after another.
local loom = require "loom"
local db = loom.db.open(assert(os.getenv("LOOM_PG_URL"), "set LOOM_PG_URL"), { pool = { max = 5 } })

-- Each question also says when the server started and finished it, so the
-- example can show they overlapped (which a stopwatch on a busy machine
-- cannot prove). 200 ms each: far longer than the five connections take to
-- open side by side, even on a loaded machine.
local function timed(sql)
  -- MATERIALIZED: the start is read before the sleep, the finish after it.
  return ("WITH q AS MATERIALIZED (SELECT n, extract(epoch FROM clock_timestamp())::float8 AS started,"
    .. " pg_sleep(0.2) FROM (%s) a)"
    .. " SELECT n, started, extract(epoch FROM clock_timestamp())::float8 AS finished FROM q"):format(sql)
end

local questions = {
  users = "SELECT 1200 AS n",
  orders = "SELECT 5400 AS n",
  revenue = "SELECT 98765.43::numeric AS n",
  signups = "SELECT 17 AS n",
  errors = "SELECT 0 AS n",
}

loom.run(function()
  local started = loom.now()
  local names, fns = {}, {}
  for name, sql in pairs(questions) do
    names[#names + 1] = name
    fns[#fns + 1] = function() return db:first(timed(sql)) end
  end
  local answers = { loom.all(table.unpack(fns)) }
  local elapsed = loom.now() - started
  local last_start, first_finish = -math.huge, math.huge
  for i, name in ipairs(names) do
    local row = answers[i][1]
    print(("  %-8s %s"):format(name, tostring(row.n)))
    last_start = math.max(last_start, row.started)
    first_finish = math.min(first_finish, row.finished)
  end
  print(("5 queries of 200 ms each answered in %.0f ms together"):format(elapsed * 1000))
  -- Concurrent: every query had started on the server before any finished.
  assert(last_start < first_finish, "the five queries ran at the same time")
end)
db:close()
