-- Pessimistic locking with SELECT ... FOR UPDATE inside a transaction: ten
-- transfers race on one account; the row lock makes them queue, so the
-- balance is exact. Deadlocks and lock wait timeouts (1213, 1205) would be
-- retried by db:transaction.
local loom = require "loom"
local db = loom.db.open(assert(os.getenv("LOOM_MYSQL_URL"), "set LOOM_MYSQL_URL"), { pool = { max = 10 } })

loom.run(function()
  db:exec("DROP TABLE IF EXISTS example_wallets")
  db:exec("CREATE TABLE example_wallets (id INT PRIMARY KEY, balance INT NOT NULL) ENGINE=InnoDB")
  db:exec("INSERT INTO example_wallets VALUES (1, 1000)")
  loom.each({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, function(i)
    db:transaction(function(tx)
      local balance = tx:value("SELECT balance FROM example_wallets WHERE id = 1 FOR UPDATE")
      loom.sleep(0.002) -- with the row locked, nobody else can read-modify-write it
      tx:exec("UPDATE example_wallets SET balance = ? WHERE id = 1", balance - 10)
      print(("  transfer %2d saw %d, wrote %d"):format(i, balance, balance - 10))
    end, { retries = 3 })
  end)
  local final = db:value("SELECT balance FROM example_wallets WHERE id = 1")
  print(("final balance %d: no transfer was lost"):format(final))
  assert(final == 900)
  db:exec("DROP TABLE example_wallets")
end)
db:close()
