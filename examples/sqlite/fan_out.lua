-- Async queries fanned out and gathered: a dashboard needs five numbers and
-- a line per region; ask for all of them at once (loom.all, loom.map)
-- instead of one after another. Reads run on the reader connections, each
-- on its own thread, while the loop stays free.
local loom = require "loom"

local path = os.tmpname() -- a fresh temp file: SQLite makes it a database
local db = loom.db.open("sqlite:" .. path, { pool = { readers = 4 } })

local REGIONS = { "north", "south", "east", "west" }

loom.run(function()
  db:exec([[CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER NOT NULL,
            region TEXT NOT NULL, cents INTEGER NOT NULL, status TEXT NOT NULL)]])
  local rows = {}
  for i = 1, 20000 do
    rows[i] = { i, i % 1200 + 1, REGIONS[i % 4 + 1], 100 + i % 900, i % 50 == 0 and "failed" or "paid" }
  end
  db:insert_many("orders", { "id", "customer", "region", "cents", "status" }, rows)
  print(("seeded %d orders into %s"):format(db:value("SELECT count(*) FROM orders"), path))

  local started = loom.now()
  local customers, orders, revenue, failed, biggest = loom.all(
    function() return db:value("SELECT count(DISTINCT customer) FROM orders") end,
    function() return db:value("SELECT count(*) FROM orders") end,
    function() return db:value("SELECT sum(cents) FROM orders WHERE status = 'paid'") end,
    function() return db:value("SELECT count(*) FROM orders WHERE status = 'failed'") end,
    function() return db:value("SELECT max(cents) FROM orders") end)
  print(("5 dashboard numbers gathered in %.1f ms:"):format((loom.now() - started) * 1000))
  print(("  customers %d, orders %d, revenue %.2f, failed %d, biggest order %.2f"):format(
    customers[1], orders[1], revenue[1] / 100, failed[1], biggest[1] / 100))
  assert(customers[1] == 1200 and orders[1] == 20000 and failed[1] == 400 and biggest[1] == 999)

  started = loom.now()
  local per_region = loom.map(REGIONS, function(region)
    return db:first("SELECT count(*) AS n, sum(cents) AS cents FROM orders WHERE region = ?", region)
  end, { concurrency = 4 })
  print(("4 region reports in %.1f ms, in input order:"):format((loom.now() - started) * 1000))
  local total = 0
  for i, region in ipairs(REGIONS) do
    print(("  %-6s %5d orders  %10.2f"):format(region, per_region[i].n, per_region[i].cents / 100))
    total = total + per_region[i].n
  end
  assert(total == 20000 and per_region[1].n == 5000)
  print(("the regions add up to all %d orders"):format(total))
end)
db:close()
for _, suffix in ipairs({ "", "-wal", "-shm" }) do os.remove(path .. suffix) end
