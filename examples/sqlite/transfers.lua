-- Read-modify-write in transactions: ten transfers race on one wallet.
-- db:transaction starts with BEGIN IMMEDIATE, which takes SQLite's write
-- lock up front, so each transfer's read and write happen with nobody else
-- writing in between: the balance is exact. A failing transfer rolls back.
local loom = require "loom"

local path = os.tmpname() -- a fresh temp file: SQLite makes it a database
local db = loom.db.open("sqlite:" .. path)

loom.run(function()
  db:exec("CREATE TABLE wallets (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0))")
  db:exec("INSERT INTO wallets VALUES (1, 1000), (2, 0)")
  loom.each({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, function(i)
    db:transaction(function(tx)
      local balance = tx:value("SELECT balance FROM wallets WHERE id = 1")
      loom.sleep(0.002) -- other tasks run meanwhile, but none can write
      tx:exec("UPDATE wallets SET balance = ? WHERE id = 1", balance - 10)
      tx:exec("UPDATE wallets SET balance = balance + 10 WHERE id = 2")
      print(("  transfer %2d saw %d, wrote %d"):format(i, balance, balance - 10))
    end)
  end)
  local ok, err = pcall(db.transaction, db, function(tx)
    tx:exec("UPDATE wallets SET balance = balance + 5000 WHERE id = 2")
    tx:exec("UPDATE wallets SET balance = balance - 5000 WHERE id = 1") -- violates the CHECK
  end)
  print("an overdraft is refused and rolled back: " .. tostring(err))
  assert(not ok and loom.is_error(err, "query"))
  local a, b = db:value("SELECT balance FROM wallets WHERE id = 1"), db:value("SELECT balance FROM wallets WHERE id = 2")
  print(("final balances %d and %d: no transfer was lost, none half done"):format(a, b))
  assert(a == 900 and b == 100)
end)
db:close()
for _, suffix in ipairs({ "", "-wal", "-shm" }) do os.remove(path .. suffix) end
