-- Run by spec/mysql_defects_spec.lua in a child lua5.4: many requests on a
-- pool of one connection, cut short by tiny timeouts. A request that never
-- comes back would hang whatever runs it, so it runs here, where a
-- watchdog can report where it stopped and end the process.
--   lua5.4 my_cancel_child.lua MODE [ITERATIONS]   (LOOM_MYSQL_URL set)
-- Prints one "done ..." line and "healthy" when all went well; anything else
-- (and a non-zero exit) says what went wrong.
local loom = require "loom"

local mode = assert(arg[1], "usage: my_cancel_child.lua MODE [ITERATIONS]")
local N = tonumber(arg[2]) or 300
-- No iteration takes more than milliseconds, or a few seconds when a
-- connection is given up and replaced; this long without any is a hang.
local STALL = 60

local db = loom.db.open(assert(os.getenv("LOOM_MYSQL_URL"), "LOOM_MYSQL_URL is not set"),
  { pool = { max = 1 } })

local function spin(seconds)
  local stop = os.clock() + seconds
  while os.clock() < stop do end
end

local function drain(sql, ...)
  for _ in db:rows(sql, ...) do end
end

-- One request of the mode, for iteration i: text and prepared statements
-- by turns, each taking a few milliseconds on the server, so timeouts of
-- 0 to 3 ms land before, during and after it.
local work = {
  rows = function(i)
    if i % 2 == 0 then drain("SELECT seq, SLEEP(0.0005) FROM seq_1_to_3")
    else drain("SELECT seq, SLEEP(0.0005) FROM seq_1_to_3 WHERE seq > ?", 0) end
  end,
  query = function(i)
    if i % 2 == 0 then db:query("SELECT seq, REPEAT('x', 100), SLEEP(0.0005) FROM seq_1_to_4")
    else db:query("SELECT seq, REPEAT('x', 100), SLEEP(0.0005) FROM seq_1_to_4 WHERE seq > ?", 0) end
  end,
  value = function(i)
    if i % 2 == 0 then db:value("SELECT SLEEP(0.002)") else db:value("SELECT SLEEP(?)", 0.002) end
  end,
  batch = function(i)
    db:batch({ { "SELECT ?", i }, { "SELECT seq FROM seq_1_to_10" }, { "DO SLEEP(0.002)" }, { "SELECT 2" } })
  end,
  transaction = function(i)
    db:transaction(function(tx)
      tx:exec("INSERT INTO spec_cancel_tx (v) VALUES (?)", i)
      tx:exec("DO SLEEP(0.001)")
      return tx:value("SELECT COUNT(*) FROM spec_cancel_tx WHERE v = ?", i)
    end)
  end,
}

local where = "starting"
local progress = loom.now()
local counts = { ok = 0, timeout = 0 }

local function step(i)
  where = ("%s, iteration %d"):format(mode, i)
  local ok, e
  if mode == "paused" then
    -- The deadline passes and the first row arrives while this task holds
    -- the loop: the stream's wait ends by timeout with a row handed over.
    local t = loom.spawn(function()
      return pcall(loom.timeout, 0.002, drain, "SELECT seq FROM seq_1_to_5")
    end)
    loom.yield()
    spin(0.02)
    local _, r1, r2 = assert(pcall(t.join, t))
    ok, e = r1, r2
  else
    ok, e = pcall(loom.timeout, (i % 4) * 0.001, work[mode], i)
  end
  if ok then
    counts.ok = counts.ok + 1
  elseif type(e) == "table" and e.kind == "timeout" then
    counts.timeout = counts.timeout + 1
  else
    error(("%s: expected success or kind timeout, got %s"):format(where, tostring(e)), 0)
  end
  -- The next statement on the connection must be untouched by the cancel
  -- (no late KILL, nothing left to read, no transaction left open).
  where = ("%s, iteration %d, the statement after it"):format(mode, i)
  local v = db:value("SELECT ?", i)
  if v ~= i then error(("%s: got %s"):format(where, tostring(v)), 0) end
  local open = db:value("SELECT @@in_transaction")
  if open ~= 0 then error(("%s: a transaction was left open"):format(where), 0) end
  progress = loom.now()
end

loom.run(function()
  if mode == "transaction" then
    db:exec("CREATE TABLE IF NOT EXISTS spec_cancel_tx (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=InnoDB")
  end
  local done = false
  local worker = loom.spawn(function()
    for i = 1, N do step(i) end
    done = true
  end)
  loom.spawn(function()
    while not done do
      loom.sleep(0.5)
      if not done and loom.now() - progress > STALL then
        io.stdout:write(("HANG: no progress for %d s, at %s; pool %s\n"):format(STALL, where,
          (function()
            local s = db:stats()
            return ("total=%d in_use=%d waiting=%d"):format(s.total, s.in_use, s.waiting)
          end)()))
        io.stdout:flush()
        os.exit(3, false)
      end
    end
  end)
  local ok, e = pcall(worker.join, worker)
  done = true
  if not ok then
    print("FAILED: " .. tostring(e))
    io.stdout:flush()
    os.exit(1, false)
  end
  -- The pool is whole: a plain query works, nothing is stuck in use.
  assert(db:value("SELECT 1") == 1)
  local s = db:stats()
  print(("done %s: ok=%d timeout=%d; pool total=%d in_use=%d waiting=%d created=%d closed=%d")
    :format(mode, counts.ok, counts.timeout, s.total, s.in_use, s.waiting, s.created, s.closed))
  if s.in_use ~= 0 or s.waiting ~= 0 or s.total > 1 then error("the pool is not idle after the run", 0) end
  if mode == "transaction" then db:exec("DROP TABLE spec_cancel_tx") end
  print("healthy")
end)
db:close()
