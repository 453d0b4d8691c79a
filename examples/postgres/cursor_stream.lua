-- Cursor-style streaming in batches: walk 200,000 rows without ever
-- holding them all, handing them on in batches of 10,000.
local loom = require "loom"
local db = loom.db.open((assert(os.getenv("LOOM_PG_URL"), "set LOOM_PG_URL")))

loom.run(function()
  local batch, batches, total, sum = {}, 0, 0, 0
  local function flush()
    batches = batches + 1
    total = total + #batch
    print(("  batch %2d: %d rows (memory in use: %d KB)"):format(batches, #batch, collectgarbage("count") // 1))
    batch = {}
  end
  for row in db:rows("SELECT g AS id, md5(g::text) AS digest FROM generate_series(1, 200000) g") do
    batch[#batch + 1] = row
    sum = sum + row.id
    if #batch == 10000 then flush() end
  end
  if #batch > 0 then flush() end
  print(("streamed %d rows in %d batches"):format(total, batches))
  assert(total == 200000 and sum == 200000 * 200001 // 2)

  -- Leaving early cancels the rest on the server; the connection is reused.
  for row in db:rows("SELECT g FROM generate_series(1, 10000000) g") do
    if row.g == 3 then break end
  end
  print("stopped a 10M-row stream after 3 rows; the pool is clean: " .. db:value("SELECT 'yes'"))
end)
db:close()
