-- loom's side of the PostgreSQL benchmark (bench/pg.sh runs it beside the
-- peers against the same server). Each mode prints one line
-- "RESULT <name> <value>" that pg.sh reads.
--
--   lua5.4 bench/pg.lua select URL TASKS SECONDS [SCALE]
--       TASKS tasks on a pool of TASKS connections, each looping
--       db:value("SELECT abalance FROM pgbench_accounts WHERE aid = $1", random aid)
--       for SECONDS; prints queries per second.
--   lua5.4 bench/pg.lua batch URL CONNS SECONDS [SCALE]
--       CONNS tasks on a pool of CONNS, each looping db:batch of 10 such selects
--       (one round trip); prints queries (not batches) per second.
--   lua5.4 bench/pg.lua insert URL ROWS
--       db:insert_many of ROWS generated rows (int, text, float, timestamp) into
--       bench_pg_copy; prints rows per second (the call alone, not building the rows).
--   lua5.4 bench/pg.lua copyfile ROWS PATH
--       writes the same rows in COPY text format, for psql \copy.
--
-- Run from the repository root; LOOM_BUILD_DIR names the build (pg.sh sets
-- build-pgbench).
package.path = "bench/?.lua;" .. package.path
local lib = require "lib" -- loom on the paths, from LOOM_BUILD_DIR

local mode = arg[1]
local SQL = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
local result = lib.result

-- The rows insert_many and the COPY file hold: an id, a text that now and
-- then carries a tab, a newline or a backslash, a float, a timestamp.
local function row(i)
  local note
  if i % 10 == 0 then
    note = "order " .. i .. "\tgift wrap\nleave at door"
  elseif i % 37 == 0 then
    note = "path C:\\orders\\" .. i
  else
    note = "order " .. i .. " standard delivery"
  end
  local t = 1700000000 + i * 7
  local ts = os.date("!%Y-%m-%d %H:%M:%S", t) .. (".%06d"):format((i * 7919) % 1000000)
  return i, note, i * 0.25 + 0.125, ts
end

local function copy_escape(s)
  return (s:gsub("[\\\t\n\r]", { ["\\"] = "\\\\", ["\t"] = "\\t", ["\n"] = "\\n", ["\r"] = "\\r" }))
end

if mode == "copyfile" then
  local n, path = tonumber(arg[2]), arg[3]
  local f = assert(io.open(path, "w"))
  local buf, k = {}, 0
  for i = 1, n do
    local id, note, score, ts = row(i)
    k = k + 1
    buf[k] = ("%d\t%s\t%.17g\t%s\n"):format(id, copy_escape(note), score, ts)
    if k == 10000 then
      f:write(table.concat(buf, "", 1, k))
      k = 0
    end
  end
  f:write(table.concat(buf, "", 1, k))
  f:close()
  return
end

local loom = require "loom"
local url = assert(arg[2], "URL expected")

if mode == "select" or mode == "batch" then
  local tasks = assert(tonumber(arg[3]), "TASKS expected")
  local seconds = assert(tonumber(arg[4]), "SECONDS expected")
  local naccounts = (tonumber(arg[5]) or 10) * 100000
  local db = loom.db.open(url, { pool = { min = tasks, max = tasks } })
  local random = math.random
  local step
  if mode == "select" then
    step = function()
      for _ = 1, 20 do db:value(SQL, random(1, naccounts)) end
      return 20
    end
  else
    local list = {}
    for k = 1, 10 do list[k] = { SQL, 0 } end
    step = function()
      for k = 1, 10 do list[k][2] = random(1, naccounts) end
      local res = db:batch(list)
      assert(#res == 10)
      return 10
    end
  end
  -- Warm up: every connection open and its statement prepared.
  local rate = lib.db_rate(loom, tasks, seconds,
    function() for _ = 1, 200 do db:value(SQL, random(1, naccounts)) end end, step)
  db:close()
  result(mode .. tasks, rate)
elseif mode == "insert" then
  local n = assert(tonumber(arg[3]), "ROWS expected")
  local db = loom.db.open(url, { pool = { max = 1 } })
  local rows = {}
  for i = 1, n do rows[i] = { row(i) } end
  local elapsed
  loom.run(function()
    db:exec("TRUNCATE bench_pg_copy")
    local t0 = loom.now()
    local got = db:insert_many("bench_pg_copy", { "id", "note", "score", "created" }, rows)
    elapsed = loom.now() - t0
    assert(got == n, ("inserted %d rows, expected %d"):format(got, n))
  end)
  db:close()
  result("insert", n / elapsed)
else
  io.stderr:write("usage: lua5.4 bench/pg.lua select|batch|insert|copyfile ...\n")
  os.exit(2)
end
