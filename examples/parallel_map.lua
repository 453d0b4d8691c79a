-- Parallel map with a concurrency limit: fetch 12 "pages" (simulated with
-- sleeps), at most 4 at a time, and get the results back in input order.
local loom = require "loom"

local pages = {}
for i = 1, 12 do pages[i] = ("page-%02d"):format(i) end

local running, peak = 0, 0
local started = loom.now()

local sizes = loom.map(pages, function(page, i)
  running = running + 1
  peak = math.max(peak, running)
  print(("  start %s (%d running)"):format(page, running))
  loom.sleep(0.01 + (i % 3) * 0.01) -- pretend to download
  running = running - 1
  return #page * i
end, { concurrency = 4 })

print(("fetched %d pages in %.2f s, never more than %d at once"):format(
  sizes.n, loom.now() - started, peak))
for i, size in ipairs(sizes) do assert(size == #pages[i] * i, "results keep input order") end
assert(peak == 4, "the limit is reached and never exceeded")
print("results are in input order: " .. table.concat(sizes, " "))
