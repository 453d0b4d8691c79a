-- Parallel bulk insert in batches: 50,000 generated rows in 10 batches,
-- loaded by 4 tasks at a time with insert_many (one prepared INSERT, one
-- transaction per batch). SQLite has one writer, so the batches queue for
-- it and commit one after another, never meeting "database is locked";
-- meanwhile a reader connection watches the committed count grow (WAL).
local loom = require "loom"

local path = os.tmpname() -- a fresh temp file: SQLite makes it a database
local db = loom.db.open("sqlite:" .. path, { pool = { readers = 1 } })

loom.run(function()
  db:exec("CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, payload TEXT)")
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
      seen[#seen + 1] = db:value("SELECT count(*) FROM events")
      loom.sleep(0.002)
    end
  end)

  local started = loom.now()
  local counts = loom.map(batches, function(rows, b)
    local n = db:insert_many("events", { "id", "kind", "payload" }, rows)
    print(("  batch %2d: %d rows committed"):format(b, n))
    return n
  end, { concurrency = 4 })
  loading = false
  watcher:join()
  local total = db:value("SELECT count(*) FROM events")
  print(("loaded %d rows in %.2f s"):format(total, loom.now() - started))
  assert(total == 50000 and counts[10] == 5000)
  assert(db:value("SELECT payload FROM events WHERE id = 42") == "event\t42")
  assert(db:value("SELECT count(*) FROM events WHERE kind = 'click'") == 16666)

  -- The reader only ever saw whole batches: each one commits atomically.
  local steps = {}
  for _, n in ipairs(seen) do
    assert(n % 5000 == 0, "a reader never sees half a batch")
    if steps[#steps] ~= n then steps[#steps + 1] = n end
  end
  print(("a reader meanwhile saw the count go %s (whole batches only)"):format(table.concat(steps, " -> ")))
end)
db:close()
for _, suffix in ipairs({ "", "-wal", "-shm" }) do os.remove(path .. suffix) end
