-- A shell pipeline, `seq 1 100000 | grep 7 | wc -l`, built with
-- loom.process.spawn: each process's stdout is pumped into the next one's
-- stdin by a task, chunk by chunk; a write waits while the next process
-- is busy (backpressure), so no more than a chunk or two is ever held.
local loom = require "loom"

-- Copies from one stream into another, then closes the writer: the next
-- process sees the end of its input.
local function pump(from, to)
  local bytes = 0
  while true do
    local chunk = from:read(65536)
    if not chunk then break end
    to:write(chunk)
    bytes = bytes + #chunk
  end
  to:close()
  from:close()
  return bytes
end

loom.run(function()
  local seq = loom.process.spawn("seq", { 1, 100000 }, { stdin = "null", stderr = "inherit" })
  local grep = loom.process.spawn("grep", { "7" }, { stderr = "inherit" })
  local wc = loom.process.spawn("wc", { "-l" }, { stderr = "inherit" })

  local moved = loom.group(function(g)
    local a = g:spawn(pump, seq.stdout, grep.stdin)
    local b = g:spawn(pump, grep.stdout, wc.stdin)
    return { a:join(), b:join() }
  end)
  local count = tonumber(wc.stdout:read("a"))
  wc.stdout:close()
  for name, p in pairs({ seq = seq, grep = grep, wc = wc }) do
    assert(p:wait() == 0, name .. " failed")
  end

  -- The same count in plain Lua.
  local expected = 0
  for i = 1, 100000 do
    if tostring(i):find("7", 1, true) then expected = expected + 1 end
  end
  print(("seq | grep 7 | wc -l: %d (pumped %d and %d bytes)"):format(count, moved[1], moved[2]))
  assert(count == expected, ("expected %d"):format(expected))
  print("the pipeline matches plain Lua: " .. expected)
end)
