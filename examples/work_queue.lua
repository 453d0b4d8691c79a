-- Producer / consumer work queue: one producer, three consumers sharing a
-- bounded queue, and a clean stop: the producer closes the queue, consumers
-- drain what is left and exit, nothing is lost.
local loom = require "loom"

loom.run(function()
  local queue = loom.channel(4) -- the producer waits when consumers fall behind
  local done_by = {}

  loom.group(function(g)
    g:spawn(function()
      for job = 1, 20 do queue:send(job) end
      print("producer: all 20 jobs queued, closing the queue")
      queue:close()
    end)
    for id = 1, 3 do
      g:spawn(function()
        local handled = 0
        for job in queue:iter() do
          loom.sleep(0.001 * (id + job % 3))
          done_by[job] = id
          handled = handled + 1
        end
        print(("consumer %d: queue closed and drained after %d jobs"):format(id, handled))
      end)
    end
  end)

  for job = 1, 20 do assert(done_by[job], "job " .. job .. " was lost") end
  print("every job was handled exactly once")
end)
