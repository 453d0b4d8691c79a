-- Concurrent updates in id batches: give every account interest, 500 ids
-- per statement, 4 statements at a time, each batch in its own transaction.
local loom = require "loom"
local db = loom.db.open(assert(os.getenv("LOOM_PG_URL"), "set LOOM_PG_URL"), { pool = { max = 4 } })

loom.run(function()
  db:exec("DROP TABLE IF EXISTS example_accounts")
  db:exec("CREATE TABLE example_accounts (id int PRIMARY KEY, balance numeric NOT NULL)")
  db:exec("INSERT INTO example_accounts SELECT g, 100 FROM generate_series(1, 5000) g")

  local ranges = {}
  for first = 1, 5000, 500 do ranges[#ranges + 1] = { first, first + 499 } end
  local updated = loom.map(ranges, function(r)
    return db:transaction(function(tx)
      return tx:exec("UPDATE example_accounts SET balance = balance * 1.05 WHERE id BETWEEN $1 AND $2",
        r[1], r[2])
    end)
  end, { concurrency = 4 })
  local total = 0
  for _, n in ipairs(updated) do total = total + n end
  print(("updated %d accounts in %d batches"):format(total, #ranges))
  assert(total == 5000)
  assert(db:value("SELECT sum(balance) FROM example_accounts") == "525000.00")
  print("every balance is now 105.00, as a numeric string: "
    .. db:value("SELECT balance FROM example_accounts WHERE id = 1"))
  db:exec("DROP TABLE example_accounts")
end)
db:close()
