-- A semaphore limiting concurrent work: 10 tasks want a scarce resource
-- (say, 3 licences); `with` gives it back even when the work fails.
local loom = require "loom"

local licences = loom.semaphore(3)
local in_use, peak, failures = 0, 0, 0

loom.run(function()
  loom.each({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, function(job)
    local ok = pcall(licences.with, licences, function()
      in_use = in_use + 1
      peak = math.max(peak, in_use)
      print(("  job %2d holds a licence (%d in use)"):format(job, in_use))
      loom.sleep(0.005)
      in_use = in_use - 1
      if job % 4 == 0 then error("job " .. job .. " failed") end
    end)
    if not ok then failures = failures + 1 end
  end)
end)

print(("all jobs done; at most %d ran at once; %d failed and still gave their licence back"):format(peak, failures))
assert(peak == 3 and licences:available() == 3 and failures == 2)
