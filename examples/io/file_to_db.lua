-- Loading a big CSV file into SQLite: the file is read line by line with
-- loom.fs.open (the reads run on libuv's thread pool, 256 KiB at a time),
-- and every 5,000 lines go in with one db:insert_many. Neither the
-- reading nor the inserting stops the loop: a ticker keeps ticking.
local loom = require "loom"

local path = os.tmpname()
local csv = path .. ".csv"
local db = loom.db.open("sqlite:" .. path)

loom.run(function()
  -- The input: 100,000 readings, written (atomically) with loom.fs.write.
  local lines = { "id,sensor,value" }
  for i = 1, 100000 do lines[#lines + 1] = ("%d,sensor-%d,%.1f"):format(i, i % 16, i * 0.5) end
  loom.fs.write(csv, table.concat(lines, "\n") .. "\n")
  print(("%s: %d bytes"):format(csv:match("[^/]+$"), loom.fs.stat(csv).size))

  db:exec("CREATE TABLE readings (id INTEGER PRIMARY KEY, sensor TEXT NOT NULL, value REAL NOT NULL)")

  local ticks = 0
  local ticker = loom.spawn(function()
    while true do loom.sleep(0.005) ticks = ticks + 1 end
  end)

  local f <close> = loom.fs.open(csv)
  assert(f:read("l") == "id,sensor,value", "a header line")
  local batch, batches, total = {}, 0, 0
  local function flush()
    total = total + db:insert_many("readings", { "id", "sensor", "value" }, batch)
    batches = batches + 1
    batch = {}
  end
  for line in f:lines() do
    local id, sensor, value = line:match("^(%d+),([^,]+),(.+)$")
    batch[#batch + 1] = { tonumber(id), sensor, tonumber(value) }
    if #batch == 5000 then flush() end
  end
  if #batch > 0 then flush() end
  ticker:cancel()

  print(("inserted %d rows in %d batches; the loop ticked %d times meanwhile"):format(total, batches, ticks))
  assert(total == 100000 and db:value("SELECT count(*) FROM readings") == 100000)
  assert(db:value("SELECT sum(value) FROM readings") == 0.5 * 100000 * 100001 / 2)
  print("loaded 100000 rows from the file")
end)

db:close()
for _, p in ipairs({ csv, path, path .. "-wal", path .. "-shm" }) do os.remove(p) end
