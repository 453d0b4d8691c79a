-- loom demo: tasks, channels and a parallel map, with progress you can watch.
--   make demo    (or: lua5.4 examples/demo.lua with loom on the Lua paths)
local loom = require "loom"

local function step(title) print(("\n== %s"):format(title)) end

loom.run(function()
  step("tasks run side by side")
  local started = loom.now()
  local a = loom.spawn(function() loom.sleep(0.2); return "tea is ready" end)
  local b = loom.spawn(function() loom.sleep(0.2); return "toast is ready" end)
  print(("  %s, %s - both in %.2f s, not 0.4"):format(a:join(), b:join(), loom.now() - started))

  step("a channel hands values from a producer to a consumer")
  local ch = loom.channel(2)
  loom.spawn(function()
    for i = 1, 5 do
      ch:send(i * i)
      print(("  producer sent %d"):format(i * i))
    end
    ch:close()
  end)
  for v in ch:iter() do
    print(("  consumer got  %d"):format(v))
    loom.sleep(0.02)
  end

  step("a parallel map: 40 jobs, 8 at a time")
  local jobs = {}
  for i = 1, 40 do jobs[i] = i end
  local done, width = 0, 40
  local function bar()
    local filled = done * width // #jobs
    io.write(("\r  [%s%s] %2d/%d"):format(("#"):rep(filled), ("."):rep(width - filled), done, #jobs))
    io.flush()
  end
  started = loom.now()
  local squares = loom.map(jobs, function(n)
    loom.sleep(0.01 + (n % 5) * 0.01) -- pretend each job does some I/O
    done = done + 1
    bar()
    return n * n
  end, { concurrency = 8 })
  io.write("\n")
  local sum = 0
  for _, s in ipairs(squares) do sum = sum + s end
  print(("  sum of squares 1..40 = %d, in %.2f s (one at a time would take ~1.2 s)"):format(
    sum, loom.now() - started))
  assert(sum == 22140)

  step("a timeout stops work that takes too long")
  local ok, err = pcall(loom.timeout, 0.1, function() loom.sleep(5) end)
  print(("  %s"):format(ok and "finished?!" or tostring(err)))
end)
