-- Parallel bulk insert in batches: 50,000 generated rows in 10 batches,
-- loaded by 4 tasks at a time with insert_many, each batch committed as a
-- whole (PostgreSQL: one COPY; MySQL: multi-row INSERTs sized under
-- max_allowed_packet in one transaction; SQLite: one prepared INSERT in one
-- transaction, the batches queueing for its one writer). Meanwhile a
-- reader watches the committed count grow: it only ever sees whole
-- batches. Runs on any database (see database.lua).
package.path = (arg[0]:match("^(.*)/") or ".") .. "/?.lua;" .. package.path
local loom = require "loom"
local database = require "database"

local db, done = database.open({ pool = { max = 5 } })

loom.run(function()
  db:exec("DROP TABLE IF EXISTS example_events")
  db:exec("CREATE TABLE example_events (id BIGINT PRIMARY KEY, kind VARCHAR(16) NOT NULL, payload TEXT)")
  local batches = {}
  for b = 1, 10 do
    local rows = {}
    for i = 1, 5000 do
      local id = (b - 1) * 5000 + i
      rows[i] = { id, id % 3 == 0 and "click" or "view", "event\t" .. id }
    end
    batches[b] = rows
  end

  local loading, seen = true, {}
  local watcher = loom.spawn(function()
    while loading do
      seen[#seen + 1] = db:value("SELECT count(*) FROM example_events")
      loom.sleep(0.002)
    end
  end)

  local started = loom.now()
  local counts = loom.map(batches, function(rows, b)
    local n = db:insert_many("example_events", { "id", "kind", "payload" }, rows)
    print(("  batch %2d: %d rows committed"):format(b, n))
    return n
  end, { concurrency = 4 })
  loading = false
  watcher:join()
  local total = db:value("SELECT count(*) FROM example_events")
  print(("loaded %d rows in %.2f s"):format(total, loom.now() - started))
  assert(total == 50000 and counts[10] == 5000)
  assert(db:value(database.sql(db, "SELECT payload FROM example_events WHERE id = ?"), 42) == "event\t42")
  assert(db:value("SELECT count(*) FROM example_events WHERE kind = 'click'") == 16666)

  local steps = {}
  for _, n in ipairs(seen) do
    assert(n % 5000 == 0, "a reader never sees half a batch")
    if steps[#steps] ~= n then steps[#steps + 1] = n end
  end
  print(("a reader meanwhile saw the count go %s (whole batches only)"):format(table.concat(steps, " -> ")))
  db:exec("DROP TABLE example_events")
end)
done()
