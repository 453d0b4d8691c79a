-- A race of redundant sources with a timeout: ask three mirrors, take the
-- first answer, cancel the others; give up on all of them after 0.2 s.
local loom = require "loom"

local function mirror(name, delay, fails)
  return function()
    print(("  asking %s"):format(name))
    local ok, err = pcall(loom.sleep, delay)
    if not ok then
      print(("  %s cancelled (%s)"):format(name, err.kind))
      error(err, 0)
    end
    if fails then error(name .. " is down") end
    return name .. " says 42"
  end
end

loom.run(function()
  local answer = loom.timeout(0.2, loom.first,
    mirror("mirror-a", 0.05, true),
    mirror("mirror-b", 0.03),
    mirror("mirror-c", 0.5))
  print("first answer: " .. answer)
  assert(answer == "mirror-b says 42")

  local ok, err = pcall(loom.timeout, 0.05, loom.first,
    mirror("slow-1", 1), mirror("slow-2", 1))
  print(("when every mirror is slow: %s"):format(tostring(err)))
  assert(not ok and err.kind == "timeout")
end)
