-- Cursor-style streaming in batches: walk 100,000 rows without ever
-- holding them all, handing them on in batches of 10,000. The memory in
-- use stays flat from the first batch to the last. Leaving a stream early
-- (break) stops the statement and gives the connection back clean.
local loom = require "loom"

local path = os.tmpname() -- a fresh temp file: SQLite makes it a database
local db = loom.db.open("sqlite:" .. path, { pool = { readers = 1 } })

loom.run(function()
  db:exec("CREATE TABLE readings (id INTEGER PRIMARY KEY, sensor TEXT NOT NULL, value REAL NOT NULL)")
  db:exec([[INSERT INTO readings (id, sensor, value)
            WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < 100000)
            SELECT i, 'sensor-' || (i % 16), i * 0.5 FROM g]])
  print(("%d readings on disk"):format(db:value("SELECT count(*) FROM readings")))

  collectgarbage()
  local batch, batches, total, sum = {}, 0, 0, 0
  local low, high = math.huge, 0
  local function flush()
    batches = batches + 1
    total = total + #batch
    local kb = collectgarbage("count") // 1
    low, high = math.min(low, kb), math.max(high, kb)
    if batches % 4 == 1 or batches == 10 then
      print(("  batch %2d: %d rows (memory in use: %d KB)"):format(batches, #batch, kb))
    end
    batch = {}
  end
  for row in db:rows("SELECT id, sensor, value FROM readings ORDER BY id") do
    batch[#batch + 1] = row
    sum = sum + row.id
    if #batch == 10000 then flush() end
  end
  if #batch > 0 then flush() end
  print(("streamed %d rows in %d batches; memory stayed between %d and %d KB"):format(total, batches, low, high))
  assert(total == 100000 and sum == 100000 * 100001 // 2)
  -- All 100,000 rows as tables would take well over 10 MB; a batch or two is all
  -- that is ever alive.
  assert(high < 10 * 1024, "memory stayed flat")

  -- Leaving early stops the statement on its thread and gives the
  -- connection back to the pool, clean.
  local first = {}
  local ten_million = "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < 10000000) "
    .. "SELECT i FROM g"
  for row in db:rows(ten_million) do
    first[#first + 1] = row.i
    if row.i == 3 then break end
  end
  local stats = db:stats()
  print(("stopped a 10M-row stream after %d rows; connections in use: %d"):format(#first, stats.in_use))
  assert(#first == 3 and stats.in_use == 0)
  print("the connection is clean: " .. db:value("SELECT 'yes'"))
end)
db:close()
for _, suffix in ipairs({ "", "-wal", "-shm" }) do os.remove(path .. suffix) end
