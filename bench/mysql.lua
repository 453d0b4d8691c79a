-- loom's side of the MySQL/MariaDB benchmark (bench/mysql.sh runs it beside
-- mariadb-slap and LuaSQL against the same server). Each mode prints one
-- line "RESULT <name> <value>" that mysql.sh reads.
--
--   lua5.4 bench/mysql.lua select URL TASKS SECONDS ROWS
--       TASKS tasks on a pool of TASKS connections, each looping
--       db:value("SELECT abalance FROM bench_accounts WHERE aid = ?", random aid)
--       for SECONDS; prints queries per second.
--   lua5.4 bench/mysql.lua luasql URL SECONDS ROWS
--       the same query through LuaSQL (luasql.mysql), one connection, the aid
--       formatted into the SQL (LuaSQL has no parameters).
--
-- Run from the repository root; LOOM_BUILD_DIR names the build (default build-bench).
package.path = "bench/?.lua;" .. package.path
local lib = require "lib" -- loom on the paths, from LOOM_BUILD_DIR

local mode, url = arg[1], assert(arg[2], "URL expected")
local SQL = "SELECT abalance FROM bench_accounts WHERE aid = ?"
local random = math.random
local result = lib.result

if mode == "select" then
  local loom = require "loom"
  local tasks = assert(tonumber(arg[3]), "TASKS expected")
  local seconds = assert(tonumber(arg[4]), "SECONDS expected")
  local nrows = assert(tonumber(arg[5]), "ROWS expected")
  local db = loom.db.open(url, { pool = { min = tasks, max = tasks } })
  local rate = lib.db_rate(loom, tasks, seconds,
    function() for _ = 1, 200 do db:value(SQL, random(1, nrows)) end end,
    function()
      for _ = 1, 20 do db:value(SQL, random(1, nrows)) end
      return 20
    end)
  db:close()
  result("select" .. tasks, rate)
elseif mode == "luasql" then
  local seconds = assert(tonumber(arg[3]), "SECONDS expected")
  local nrows = assert(tonumber(arg[4]), "ROWS expected")
  local ok, driver = pcall(require, "luasql.mysql")
  if not ok then
    io.stderr:write("luasql.mysql not installed (Debian: lua-sql-mysql)\n")
    os.exit(77)
  end
  local user, pw, host, port, dbname = url:match("^%a+://([^:]+):([^@]*)@([^:/]+):?(%d*)/([^?]+)")
  local env = driver.mysql()
  local conn = assert(env:connect(dbname, user, pw, host, tonumber(port) or 3306))
  local sql = SQL:gsub("%?", "%%d")
  local function one()
    local cur = assert(conn:execute(sql:format(random(1, nrows))))
    local v = cur:fetch()
    cur:close()
    return v
  end
  for _ = 1, 200 do one() end
  -- loom only for its clock: LuaSQL's calls block, no loop runs here.
  local now = require("loom").now
  local n, started = 0, now()
  local deadline = started + seconds
  repeat
    for _ = 1, 20 do one() end
    n = n + 20
  until now() >= deadline
  local elapsed = now() - started
  conn:close()
  env:close()
  result("luasql", n / elapsed)
else
  io.stderr:write("usage: lua5.4 bench/mysql.lua select|luasql URL ...\n")
  os.exit(2)
end
