-- Parallel bulk load over the pool: 50,000 generated rows in 10 batches,
-- 4 loaded at a time; insert_many sends multi-row INSERTs sized under the
-- server's max_allowed_packet, each call in one transaction.
local loom = require "loom"
local db = loom.db.open(assert(os.getenv("LOOM_MYSQL_URL"), "set LOOM_MYSQL_URL"), { pool = { max = 4 } })

loom.run(function()
  db:exec("DROP TABLE IF EXISTS example_events")
  db:exec("CREATE TABLE example_events (id BIGINT PRIMARY KEY, kind VARCHAR(16), payload TEXT)")
  local batches = {}
  for b = 1, 10 do
    local rows = {}
    for i = 1, 5000 do
      local id = (b - 1) * 5000 + i
      rows[i] = { id, id % 3 == 0 and "click" or "view", "event\t" .. id }
    end
    batches[b] = rows
  end
  local started = loom.now()
  local counts = loom.map(batches, function(rows, b)
    local n = db:insert_many("example_events", { "id", "kind", "payload" }, rows)
    print(("  batch %2d: %d rows"):format(b, n))
    return n
  end, { concurrency = 4 })
  local total = db:value("SELECT COUNT(*) FROM example_events")
  print(("loaded %d rows in %.2f s"):format(total, loom.now() - started))
  assert(total == 50000 and counts[10] == 5000)
  assert(db:value("SELECT payload FROM example_events WHERE id = ?", 42) == "event\t42")
  db:exec("DROP TABLE example_events")
end)
db:close()
