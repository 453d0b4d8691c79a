-- Retry with backoff behind a circuit breaker: a flaky service is retried;
-- when it goes down for good, the breaker opens and calls fail fast instead
-- of piling up, then a probe finds the service back and closes it.
local loom = require "loom"

local healthy, calls = true, 0
local function service(n)
  calls = calls + 1
  if not healthy or n % 3 == 1 and calls % 2 == 1 then error("service unavailable") end
  return "result " .. n
end

local breaker = loom.breaker{ failures = 3, reset_after = 0.1,
  on_change = function(new, old) print(("  breaker: %s -> %s"):format(old, new)) end }

local function request(n)
  return breaker:call(loom.retry, function() return service(n) end,
    { attempts = 3, backoff = 0.005, factor = 2, jitter = 0.5 })
end

loom.run(function()
  for n = 1, 4 do print("request " .. n .. ": " .. request(n)) end

  healthy = false
  print("the service goes down")
  for n = 5, 9 do
    local ok, err = pcall(request, n)
    print(("request %d failed: %s"):format(n, err.kind or tostring(err)))
    assert(not ok)
  end
  assert(breaker:state() == "open")

  healthy = true
  print("the service comes back; waiting for the breaker to half-open")
  loom.sleep(0.12)
  print("request 10: " .. request(10))
  assert(breaker:state() == "closed")
end)
