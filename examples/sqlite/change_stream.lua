-- A change stream with db:changes(): every row written through this db
-- handle is announced as {op=, table=, rowid=} after its transaction
-- commits. A consumer task prints them as they arrive; work that is rolled
-- back never appears.
local loom = require "loom"

local path = os.tmpname() -- a fresh temp file: SQLite makes it a database
local db = loom.db.open("sqlite:" .. path)

loom.run(function()
  db:exec("CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT NOT NULL)")

  local changes = db:changes({ buffer = 100 })
  local seen = {}
  local consumer = loom.spawn(function()
    for change in changes:iter() do
      print(("  change: %s %s #%d"):format(change.op, change.table, change.rowid))
      seen[#seen + 1] = change.op .. " " .. change.rowid
    end
  end)

  print("insert two orders, pay and ship #1")
  db:exec("INSERT INTO orders (status) VALUES ('new'), ('new')")
  db:exec("UPDATE orders SET status = 'paid' WHERE id = 1")
  db:exec("UPDATE orders SET status = 'shipped' WHERE id = 1")

  print("a transaction that inserts #3 and cancels #2, then fails: rolled back")
  local ok, err = pcall(db.transaction, db, function(tx)
    tx:exec("INSERT INTO orders (status) VALUES ('new')")
    tx:exec("DELETE FROM orders WHERE id = 2")
    error("payment provider said no")
  end)
  assert(not ok and tostring(err):find("payment provider said no", 1, true))

  print("a transaction that cancels #2 and commits")
  db:transaction(function(tx) tx:exec("DELETE FROM orders WHERE id = 2") end)

  -- Changes are in the channel once their commit returns; closing it
  -- unsubscribes, and the consumer still drains what is buffered.
  changes:close()
  consumer:join()
  local all = table.concat(seen, ", ")
  print(("the consumer saw %d changes, in commit order: %s"):format(#seen, all))
  assert(all == "insert 1, insert 2, update 1, update 1, delete 2", all)
  print("nothing of the rolled-back transaction appeared")

  -- A subscriber that does not keep up loses changes rather than holding
  -- up writers, and is told so with {gap = true} once it has room again.
  local slow = db:changes({ buffer = 3 })
  db:insert_many("orders", { "status" }, { { "bulk" }, { "bulk" }, { "bulk" }, { "bulk" }, { "bulk" } })
  local got = {}
  while #slow > 0 do got[#got + 1] = slow:recv().op end
  db:exec("UPDATE orders SET status = 'paid' WHERE status = 'bulk'")
  local note = slow:recv()
  print(("a subscriber with room for 3 got %d of 5 inserts, then gap = %s: time to re-read the table"):format(
    #got, tostring(note.gap)))
  assert(#got == 3 and note.gap == true)
  slow:close()
end)
db:close()
for _, suffix in ipairs({ "", "-wal", "-shm" }) do os.remove(path .. suffix) end
