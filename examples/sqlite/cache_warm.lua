-- Cache warming with loom.lazy: the price list takes a query to load; the
-- first of many concurrent requests loads it, the rest wait for that load
-- instead of each running the query. reset() forgets it (say, after a
-- price change) and the next request loads it again.
local loom = require "loom"

local path = os.tmpname() -- a fresh temp file: SQLite makes it a database
local db = loom.db.open("sqlite:" .. path, { pool = { readers = 2 } })

local loads = 0
local prices = loom.lazy(function()
  loads = loads + 1
  print(("  loading the price list from the database (load %d)"):format(loads))
  local by_sku = {}
  for row in db:rows("SELECT sku, cents FROM prices") do by_sku[row.sku] = row.cents end
  return by_sku
end)

loom.run(function()
  db:exec("CREATE TABLE prices (sku INTEGER PRIMARY KEY, cents INTEGER NOT NULL)")
  db:exec([[INSERT INTO prices (sku, cents)
            WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < 20000)
            SELECT i, i * 125 FROM g]])

  local started = loom.now()
  local answers = loom.map({ 7, 42, 99, 512, 1000, 3, 64, 128 }, function(sku)
    return prices:get()[sku]
  end)
  print(("8 concurrent requests answered in %.0f ms with %d load(s): sku 42 costs %.2f"):format(
    (loom.now() - started) * 1000, loads, answers[2] / 100))
  assert(loads == 1 and answers[2] == 5250 and answers[5] == 125000)

  db:exec("UPDATE prices SET cents = cents + 100 WHERE sku = 42")
  print("sku 42 changed price; the cache still says " .. ("%.2f"):format(prices:get()[42] / 100))
  assert(loads == 1 and prices:get()[42] == 5250)
  prices:reset()
  local now = prices:get()[42]
  print(("after reset() the next request loads it again: sku 42 costs %.2f"):format(now / 100))
  assert(loads == 2 and now == 5350)
end)
db:close()
for _, suffix in ipairs({ "", "-wal", "-shm" }) do os.remove(path .. suffix) end
