-- Peer: LuaSQL PostgreSQL (synchronous libpq binding, Lua 5.4), point selects on one
-- connection for SECONDS. LuaSQL has no parameters: the aid is formatted into the SQL,
-- which runs through the simple query protocol (as LuaSQL users do).
--   lua5.4 bench/peers/pg_luasql.lua URL SECONDS [SCALE]
local driver = require "luasql.postgres"
local url, seconds = assert(arg[1], "URL expected"), assert(tonumber(arg[2]), "SECONDS expected")
local naccounts = (tonumber(arg[3]) or 10) * 100000
local env = driver.postgres()
local con = assert(env:connect(url)) -- libpq takes a URI as the database name
local random = math.random
local function one()
  local cur = assert(con:execute("SELECT abalance FROM pgbench_accounts WHERE aid = " .. random(1, naccounts)))
  local v = cur:fetch()
  cur:close()
  return v
end
for _ = 1, 200 do one() end
-- os.time() ticks in whole seconds: start on a tick, stop on a tick.
local t = os.time()
while os.time() == t do one() end
local t0 = os.time()
local deadline, n = t0 + math.max(1, math.floor(seconds + 0.5)), 0
while os.time() < deadline do
  one()
  n = n + 1
end
io.write(("RESULT luasql %.1f\n"):format(n / (deadline - t0)))
con:close()
env:close()
