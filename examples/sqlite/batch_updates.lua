-- Concurrent updates in id batches: give every account 5% interest, 500 ids
-- per statement, 4 batches in flight at a time, each in its own
-- transaction (BEGIN IMMEDIATE: the writer is taken up front, so batches
-- queue instead of failing with "database is locked").
local loom = require "loom"

local path = os.tmpname() -- a fresh temp file: SQLite makes it a database
local db = loom.db.open("sqlite:" .. path)

loom.run(function()
  db:exec("CREATE TABLE accounts (id INTEGER PRIMARY KEY, cents INTEGER NOT NULL)")
  db:exec([[INSERT INTO accounts (id, cents)
            WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < 5000)
            SELECT i, 10000 FROM g]])
  print(("%d accounts of 100.00 each"):format(db:value("SELECT count(*) FROM accounts")))

  local ranges = {}
  for first = 1, 5000, 500 do ranges[#ranges + 1] = { first, first + 499 } end
  local updated = loom.map(ranges, function(r)
    return db:transaction(function(tx)
      local n = tx:exec("UPDATE accounts SET cents = cents * 105 / 100 WHERE id BETWEEN ? AND ?", r[1], r[2])
      print(("  ids %4d..%4d: %d updated"):format(r[1], r[2], n))
      return n
    end)
  end, { concurrency = 4 })
  local total = 0
  for _, n in ipairs(updated) do total = total + n end
  print(("updated %d accounts in %d batches"):format(total, #ranges))
  assert(total == 5000)
  assert(db:value("SELECT sum(cents) FROM accounts") == 5000 * 10500)
  assert(db:value("SELECT count(*) FROM accounts WHERE cents <> 10500") == 0)
  print(("every balance is now %.2f"):format(db:value("SELECT cents FROM accounts WHERE id = 1") / 100))
end)
db:close()
for _, suffix in ipairs({ "", "-wal", "-shm" }) do os.remove(path .. suffix) end
