-- Read-modify-write in transactions: ten transfers race on one wallet.
-- Each reads the balance and writes it back less 10 with nobody else
-- writing in between, so the balance is exact; a failing transfer rolls
-- back whole. How the row is kept from others is the database's: on
-- PostgreSQL and MySQL SELECT ... FOR UPDATE locks it until the commit
-- (deadlocks and lock wait timeouts would be retried by db:transaction);
-- SQLite has no FOR UPDATE, its db:transaction begins IMMEDIATE, taking
-- the one write lock up front. Runs on any database (see database.lua).
package.path = (arg[0]:match("^(.*)/") or ".") .. "/?.lua;" .. package.path
local loom = require "loom"
local database = require "database"

local db, done = database.open({ pool = { max = 10 } })
local LOCK_ROW = { sqlite = "" }
local READ = "SELECT balance FROM example_wallets WHERE id = 1" .. (LOCK_ROW[db.driver] or " FOR UPDATE")
local WRITE = database.sql(db, "UPDATE example_wallets SET balance = ? WHERE id = 1")

loom.run(function()
  db:exec("DROP TABLE IF EXISTS example_wallets")
  db:exec("CREATE TABLE example_wallets (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0))")
  db:exec("INSERT INTO example_wallets VALUES (1, 1000), (2, 0)")
  loom.each({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, function(i)
    db:transaction(function(tx)
      local balance = tx:value(READ)
      loom.sleep(0.002) -- other tasks run meanwhile, but none can write this row
      tx:exec(WRITE, balance - 10)
      tx:exec("UPDATE example_wallets SET balance = balance + 10 WHERE id = 2")
      print(("  transfer %2d saw %d, wrote %d"):format(i, balance, balance - 10))
    end, { retries = 3 })
  end)
  local ok, err = pcall(db.transaction, db, function(tx)
    tx:exec("UPDATE example_wallets SET balance = balance + 5000 WHERE id = 2")
    tx:exec("UPDATE example_wallets SET balance = balance - 5000 WHERE id = 1") -- violates the CHECK
  end)
  print("an overdraft is refused and rolled back: " .. tostring(err))
  assert(not ok and loom.is_error(err, "query"))
  local a = db:value("SELECT balance FROM example_wallets WHERE id = 1")
  local b = db:value("SELECT balance FROM example_wallets WHERE id = 2")
  print(("final balances %d and %d: no transfer was lost, none half done"):format(a, b))
  assert(a == 900 and b == 100)
  db:exec("DROP TABLE example_wallets")
end)
done()
