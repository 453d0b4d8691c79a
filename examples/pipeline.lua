-- A multi-stage pipeline with backpressure: parse -> enrich (4 workers,
-- order kept) -> batch -> store. The source counts how far ahead of the
-- slow store stage it gets: bounded channels keep that small.
local loom = require "loom"

local produced, stored = 0, 0
local max_ahead = 0

local function lines()
  local i = 0
  return function()
    if i == 400 then return nil end
    i = i + 1
    produced = produced + 1
    max_ahead = math.max(max_ahead, produced - stored)
    return ("%d,item-%d"):format(i, i)
  end
end

loom.run(function()
  loom.pipeline(lines())
    :map(function(line)
      local id, name = line:match("^(%d+),(.+)$")
      return { id = tonumber(id), name = name }
    end)
    :map(function(rec)
      loom.sleep(0.001) -- a lookup per record
      rec.upper = rec.name:upper()
      return rec
    end, { workers = 4, ordered = true })
    :batch(10)
    :each(function(batch)
      loom.sleep(0.005) -- the slow stage: a bulk write
      stored = stored + #batch
      if stored % 80 == 0 then print(("stored batch %d..%d (%d stored, source at most %d ahead)"):format(
        batch[1].id, batch[#batch].id, stored, max_ahead)) end
      for k = 2, #batch do assert(batch[k].id == batch[k - 1].id + 1, "order kept") end
    end)
end)

assert(stored == 400)
-- The channels between stages hold about 130 records in all; without
-- backpressure the source would finish all 400 before the first write.
assert(max_ahead < 200, "backpressure: the source never ran far ahead")
print(("done: %d records; the source was never more than %d records ahead"):format(stored, max_ahead))
