-- Soak: a hostile mix on one database, for a long time. Tasks run value,
-- query, rows (to the end and given up early), batch and transactions, many
-- of them under timeouts short enough to land at every point of a statement
-- (before it is sent, while it runs, during COMMIT). What must hold:
--   * nothing crashes or hangs (a watchdog fails the run after a bound);
--   * every transaction reported committed is in the table, and none
--     reported failed is (commit_unknown excepted: counted, and allowed only
--     when a connection broke);
--   * the pool ends healthy: nothing in use, a plain query works;
--   * resident memory is flat: what it grows after the first tenth of the
--     run, when every cache and pool is warm, stays under a small bound.
--
--   lua5.4 bench/soak.lua sqlite|pg|mysql URL [OPS]
-- (bench/soak.sh starts throwaway servers and runs all three.)
local lib = require "bench.lib"
local loom = require "loom"

local driver, url = arg[1], arg[2]
local total = tonumber(arg[3] or os.getenv("SOAK_OPS") or "") or 100000
local TASKS = 8
local WATCHDOG = tonumber(os.getenv("SOAK_WATCHDOG") or "") or 600
-- The runs here grow under 1 MB; a leak of 50 bytes an op is over 4 MB.
-- SOAK_RSS_BOUND_KB=0 turns the check off (under AddressSanitizer, whose
-- quarantine holds freed memory, RSS says nothing about leaks: LSan does).
local RSS_BOUND_KB = tonumber(os.getenv("SOAK_RSS_BOUND_KB") or "") or 4 * 1024

if not (driver and url) then
  io.stderr:write("usage: lua5.4 bench/soak.lua sqlite|pg|mysql URL [OPS]\n")
  os.exit(2)
end

-- The driver's placeholder and types: a benchmark may name its database.
local P = driver == "pg" and function(i) return "$" .. i end or function() return "?" end
local INT = driver == "mysql" and "BIGINT" or "INTEGER"
-- PostgreSQL types a parameter nothing constrains as text.
local INT_CAST = driver == "pg" and "::int" or ""
local SERIES = ({
  pg = "SELECT g FROM generate_series(1, 50) AS g",
  mysql = "SELECT seq FROM seq_1_to_50",
  sqlite = "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < 50) SELECT g FROM s",
})[driver]

local function rss_kb()
  local f = io.open("/proc/self/statm")
  local _, resident = f:read("n", "n")
  f:close()
  return resident * 4
end

local acquire = tonumber(os.getenv("SOAK_ACQUIRE_TIMEOUT") or "") or 10
local opts = driver == "sqlite" and { pool = { readers = 2 } } or { pool = { max = 4, acquire_timeout = acquire } }
local db = loom.db.open(url, opts)

local counts = { value = 0, query = 0, rows = 0, rows_early = 0, batch = 0, tx = 0,
                 timeouts = 0, committed = 0, rolled_back = 0, commit_unknown = 0, other_errors = 0 }
local committed, failed, unknown = {}, {}, {}
local next_id = 0
local rng = math.random

local function op(kind)
  if kind == 1 then
    assert(db:value("SELECT " .. P(1) .. INT_CAST, 7) == 7)
    counts.value = counts.value + 1
  elseif kind == 2 then
    local rows = db:query(SERIES)
    assert(#rows == 50)
    counts.query = counts.query + 1
  elseif kind == 3 then
    local n = 0
    for _ in db:rows(SERIES) do n = n + 1 end
    assert(n == 50)
    counts.rows = counts.rows + 1
  elseif kind == 4 then
    for _ in db:rows(SERIES) do break end -- luacheck: ignore 512 (leaving a stream early is the case)
    counts.rows_early = counts.rows_early + 1
  elseif kind == 5 then
    local r = db:batch { { "SELECT " .. P(1), 1 }, { SERIES }, { "SELECT " .. P(1), 3 } }
    assert(#r == 3)
    counts.batch = counts.batch + 1
  else
    next_id = next_id + 1
    local id = next_id
    local ok, err = pcall(db.transaction, db, function(tx)
      tx:exec("INSERT INTO soak (id, n) VALUES (" .. P(1) .. ", " .. P(2) .. ")", id, 1)
      tx:exec("UPDATE soak SET n = n + 1 WHERE id = " .. P(1), id)
    end)
    counts.tx = counts.tx + 1
    if ok then
      committed[#committed + 1] = id
      counts.committed = counts.committed + 1
    elseif loom.is_error(err, "commit_unknown") then
      unknown[#unknown + 1] = id
      counts.commit_unknown = counts.commit_unknown + 1
    else
      failed[#failed + 1] = id
      counts.rolled_back = counts.rolled_back + 1
      error(err, 0)
    end
  end
end

local rss_warm, rss_end
local done = 0
local t0 = os.time()
local ok, err = pcall(loom.run, function()
  db:exec("DROP TABLE IF EXISTS soak")
  db:exec("CREATE TABLE soak (id " .. INT .. " PRIMARY KEY, n " .. INT .. " NOT NULL)")
  local watchdog = loom.spawn(function()
    loom.sleep(WATCHDOG)
    -- A hang inside the driver may keep the run from ever returning: leave.
    print(("soak %-6s FAILED: still running after %d s with %d of %d operations done (a hang?)")
      :format(driver, WATCHDOG, done, total))
    os.exit(1)
  end)
  loom.each({ 1, 2, 3, 4, 5, 6, 7, 8 }, function()
    while done < total do
      done = done + 1
      if done == total // 10 then
        collectgarbage(); collectgarbage()
        rss_warm = rss_kb()
      end
      local kind = rng(1, 6)
      if rng() < 0.4 then
        -- 0 to 2 ms: lands before, during and after the statement.
        local okt, e = pcall(loom.timeout, rng() * 0.002, op, kind)
        if not okt then
          if loom.is_error(e, "timeout") then
            counts.timeouts = counts.timeouts + 1
          elseif not loom.is_error(e, "commit_unknown") then -- op counts those
            counts.other_errors = counts.other_errors + 1
            error(e, 0)
          end
        end
      else
        op(kind)
      end
    end
  end, { concurrency = TASKS })
  watchdog:cancel()
  collectgarbage(); collectgarbage()
  rss_end = rss_kb()

  -- What was reported is what is in the table.
  local present = {}
  for _, row in ipairs(db:query("SELECT id, n FROM soak")) do present[row.id] = row.n end
  local lost, ghosts = 0, 0
  for _, id in ipairs(committed) do if present[id] ~= 2 then lost = lost + 1 end end
  for _, id in ipairs(failed) do if present[id] ~= nil then ghosts = ghosts + 1 end end
  assert(lost == 0, ("%d transactions reported committed are missing or half done"):format(lost))
  assert(ghosts == 0, ("%d transactions reported failed are in the table"):format(ghosts))
  local stats = db:stats()
  assert(db:value("SELECT " .. P(1) .. INT_CAST, 42) == 42, "the pool does not serve after the soak")
  assert((stats.in_use or 0) <= 1, ("%d connections still in use after the soak"):format(stats.in_use or -1))
  db:exec("DROP TABLE soak")
end)
db:close()

local secs = math.max(1, os.time() - t0)
print(("soak %-6s %7d ops in %4d s (%s ops/s): value %d, query %d, rows %d, rows given up %d, batch %d, tx %d"
  .. " (committed %d, failed %d, unknown %d), timeouts %d")
  :format(driver, done, secs, lib.si(done / secs), counts.value, counts.query, counts.rows,
    counts.rows_early, counts.batch, counts.tx, counts.committed, counts.rolled_back,
    counts.commit_unknown, counts.timeouts))
if rss_warm and rss_end then
  print(("soak %-6s RSS after the first tenth %d KB, at the end %d KB (grew %d KB; bound %d KB)")
    :format(driver, rss_warm, rss_end, rss_end - rss_warm, RSS_BOUND_KB))
end
if not ok then
  print(("soak %-6s FAILED: %s"):format(driver, tostring(err)))
  os.exit(1)
end
if counts.commit_unknown > 0 then
  print(("soak %-6s FAILED: %d commit_unknown with no connection broken"):format(driver, counts.commit_unknown))
  os.exit(1)
end
if RSS_BOUND_KB > 0 and rss_end - rss_warm > RSS_BOUND_KB then
  print(("soak %-6s FAILED: resident memory grew %d KB"):format(driver, rss_end - rss_warm))
  os.exit(3)
end
print(("soak %-6s PASS"):format(driver))
