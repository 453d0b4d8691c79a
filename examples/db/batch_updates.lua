-- Concurrent updates in id batches: give every account 5% interest, 500 ids
-- per statement, 4 batches in flight at a time, each in its own
-- transaction. On SQLite db:transaction begins IMMEDIATE: the one writer
-- is taken up front, so batches queue instead of failing with "database is
-- locked"; on a server they run side by side on their own connections.
-- Runs on any database (see database.lua).
package.path = (arg[0]:match("^(.*)/") or ".") .. "/?.lua;" .. package.path
local loom = require "loom"
local database = require "database"

local db, done = database.open({ pool = { max = 4 } })
local UPDATE = database.sql(db, "UPDATE example_accounts SET cents = cents * 105 / 100 WHERE id BETWEEN ? AND ?")

loom.run(function()
  db:exec("DROP TABLE IF EXISTS example_accounts")
  db:exec("CREATE TABLE example_accounts (id INTEGER PRIMARY KEY, cents INTEGER NOT NULL)")
  local rows = {}
  for i = 1, 5000 do rows[i] = { i, 10000 } end
  db:insert_many("example_accounts", { "id", "cents" }, rows)
  print(("%d accounts of 100.00 each"):format(db:value("SELECT count(*) FROM example_accounts")))

  local ranges = {}
  for first = 1, 5000, 500 do ranges[#ranges + 1] = { first, first + 499 } end
  local updated = loom.map(ranges, function(r)
    return db:transaction(function(tx)
      local n = tx:exec(UPDATE, r[1], r[2])
      print(("  ids %4d..%4d: %d updated"):format(r[1], r[2], n))
      return n
    end)
  end, { concurrency = 4 })
  local total = 0
  for _, n in ipairs(updated) do total = total + n end
  print(("updated %d accounts in %d batches"):format(total, #ranges))
  assert(total == 5000)
  assert(db:value("SELECT count(*) FROM example_accounts WHERE cents <> 10500") == 0)
  print(("every balance is now %.2f"):format(db:value("SELECT cents FROM example_accounts WHERE id = 1") / 100))
  db:exec("DROP TABLE example_accounts")
end)
done()
