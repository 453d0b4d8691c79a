-- Cache warming with loom.lazy: a price list is expensive to load; the
-- first of many concurrent requests loads it, the rest wait for that load.
local loom = require "loom"
local db = loom.db.open(assert(os.getenv("LOOM_PG_URL"), "set LOOM_PG_URL"), { pool = { max = 8 } })

local loads = 0
local prices = loom.lazy(function()
  loads = loads + 1
  print("  loading the price list from the database")
  local rows = db:query("SELECT g AS sku, (g * 1.25)::numeric(10,2) AS price "
    .. "FROM generate_series(1, 1000) g, pg_sleep(0.05)")
  local by_sku = {}
  for _, r in ipairs(rows) do by_sku[r.sku] = r.price end
  return by_sku
end)

loom.run(function()
  local started = loom.now()
  local answers = loom.map({ 7, 42, 99, 512, 1000, 3, 64, 128 }, function(sku)
    return prices:get()[sku]
  end)
  print(("8 concurrent requests answered in %.0f ms with %d load(s): sku 42 costs %s"):format(
    (loom.now() - started) * 1000, loads, answers[2]))
  assert(loads == 1 and answers[2] == "52.50")
  prices:reset()
  prices:get()
  assert(loads == 2)
  print("after reset() the next request loads it again")
end)
db:close()
