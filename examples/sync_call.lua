-- A synchronous library call offloaded: io.popen blocks its thread until
-- the command exits (as any synchronous C library call would). On worker
-- threads four such calls run side by side, and the loop keeps serving a
-- ticker with 10 ms deadlines meanwhile; a timeout still answers on time
-- even when the call it gave up on cannot be stopped.
local loom = require "loom"

local function slow_call(label)
  local p = assert(io.popen("sleep 0.2; echo " .. label))
  local out = p:read("a")
  p:close()
  return (out:gsub("%s+$", ""))
end

loom.run(function()
  local pool = loom.thread.pool { size = 4 }
  local late, ticks = 0, 0
  local ticker = loom.spawn(function()
    while true do
      local t0 = loom.now()
      loom.sleep(0.01)
      late = math.max(late, loom.now() - t0 - 0.01)
      ticks = ticks + 1
    end
  end)

  local t0 = loom.now()
  local answers = loom.map({ "a", "b", "c", "d" }, function(label)
    return pool:run(slow_call, label)
  end)
  local took = loom.now() - t0
  print(("4 blocking calls of 0.2 s took %.2f s together, the loop ticking %d times meanwhile: %s")
    :format(took, ticks, table.concat(answers, " ")))
  assert(table.concat(answers) == "abcd")
  assert(ticks > 0, "the loop kept running during the calls")

  -- A call that takes too long: the caller gets its timeout on time, the
  -- call finishes alone on its worker (pool:stats().stuck counts it), and a
  -- new worker thread takes that one's place meanwhile (stats().threads).
  t0 = loom.now()
  local ok, err = pcall(loom.timeout, 0.05, function() return pool:run(function() os.execute("sleep 0.5") end) end)
  local st = pool:stats()
  print(("gave up after %.2f s (%s); stuck jobs now: %d, worker threads: %d")
    :format(loom.now() - t0, tostring(err), st.stuck, st.threads))
  assert(not ok and err.kind == "timeout")
  -- The call it gave up on ends on its own; the stuck count says when.
  while pool:stats().stuck > 0 do loom.sleep(0.05) end
  print(("the stuck call ended %.2f s after it started"):format(loom.now() - t0))
  ticker:cancel()
  print(("the loop ticked %d times, at most %.1f ms late"):format(ticks, late * 1000))
  pool:close()
end)
print("synchronous calls ran off the loop")
