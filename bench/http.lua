-- loom's side of bench/http.sh: `conc` tasks fetching URL until `n`
-- requests are done, after a warm-up round (connections open, the
-- client's handles made). Prints "rps <requests per second>" (wall time:
-- the work is the server's and the network's as much as loom's).
--   lua5.4 bench/http.lua URL N CONC
local lib = require "bench.lib"
local loom = require "loom"
local _ = lib

local url, n, conc = arg[1], tonumber(arg[2]) or 20000, tonumber(arg[3]) or 64
assert(url, "usage: lua5.4 bench/http.lua URL [N] [CONC]")

local function worker(count)
  local size
  for _ = 1, count do
    local res = loom.http.get(url)
    if res.status ~= 200 then error("status " .. res.status) end
    size = #res.body
  end
  return size
end

loom.run(function()
  local workers = {}
  for i = 1, conc do workers[i] = i end
  loom.map(workers, function() return worker(2) end)
  local share = n // conc
  local t0 = loom.now()
  loom.map(workers, function() return worker(share) end)
  local dt = loom.now() - t0
  print(("rps %.1f"):format(share * conc / dt))
end)
