-- A lazily computed, periodically reset cache: many tasks ask for the
-- config at once, it is loaded once; a refresher resets it every 50 ms.
local loom = require "loom"

local loads = 0
local config = loom.lazy(function()
  loads = loads + 1
  print(("  loading config (load #%d)"):format(loads))
  loom.sleep(0.01) -- a slow fetch
  return { version = loads }
end)

loom.run(function()
  local versions = loom.map({ 1, 2, 3, 4, 5, 6, 7, 8 }, function()
    return config:get().version
  end)
  print("8 concurrent readers saw version " .. table.concat(versions, ","))
  assert(loads == 1, "computed once under concurrent get")

  local refresher = loom.spawn(function()
    while true do
      loom.sleep(0.05)
      config:reset()
      print("  refresher: cache reset")
    end
  end)
  for round = 1, 3 do
    loom.sleep(0.03)
    print(("round %d reads version %d"):format(round, config:get().version))
  end
  refresher:cancel()
  assert(loads >= 2, "reset makes the next get load again")
  print(("config was loaded %d times for %d reads"):format(loads, 11))
end)
