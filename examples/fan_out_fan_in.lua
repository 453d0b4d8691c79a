-- Fan-out / fan-in: several workers produce partial results on one channel;
-- a collector sums them as they arrive, in whatever order they finish.
local loom = require "loom"

loom.run(function()
  local results = loom.channel(8)
  local wg = loom.waitgroup()
  for worker = 1, 5 do
    wg:add(1)
    loom.spawn(function()
      for part = 1, 3 do
        loom.sleep(0.002 * ((worker + part) % 4))
        results:send({ worker = worker, value = worker * part })
      end
      wg:done()
    end)
  end
  -- Close the channel once every worker is done, so the collector's loop ends.
  loom.spawn(function() wg:wait(); results:close() end)

  local total, count = 0, 0
  for r in results:iter() do
    total, count = total + r.value, count + 1
    print(("  got %2d from worker %d (running total %d)"):format(r.value, r.worker, total))
  end
  print(("fan-in complete: %d parts, total %d"):format(count, total))
  assert(count == 15 and total == 90)
end)
