-- MySQL/MariaDB defects that were found and fixed: cancels that left a
-- request waiting on nothing (tiny timeouts on a pool of one hung),
-- statements too large for the server's max_allowed_packet that broke the
-- connection with a cryptic message, and a procedure's several result sets
-- that crashed db:query.
local loom = require "loom"
local my = require "spec.support.my"

local URL = my.url()
local build = os.getenv("LOOM_BUILD_DIR") or "build"

-- Runs spec/support/my_cancel_child.lua in a child lua5.4: a request that
-- never comes back would hang this process, so the child runs it, under a
-- watchdog of its own (no progress for a minute: it says where and exits)
-- and `timeout` as the last resort. Returns whether it exited 0, and its
-- output.
local function run_child(mode, iterations)
  local cmd = ("LOOM_MYSQL_URL='%s' LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='%s/?.so;;' "
    .. "timeout -k 10 900 lua5.4 spec/support/my_cancel_child.lua %s %d 2>&1")
    :format(URL, build, mode, iterations)
  local p = io.popen(cmd)
  local out = p:read("a")
  local ok = p:close()
  return ok, out
end

local function check_child(mode, iterations)
  local ok, out = run_child(mode, iterations)
  assert.is_true(ok and out:find("\nhealthy\n", 1, true) ~= nil,
    ("the %s run did not end healthy:\n%s"):format(mode, out))
  local done_ok, timeouts = out:match("done %a+: ok=(%d+) timeout=(%d+)")
  assert.is_truthy(done_ok, out)
  assert.equal(iterations, tonumber(done_ok) + tonumber(timeouts))
  -- The run is only worth something if cancels really happened.
  assert.is_true(tonumber(timeouts) > 0, "no request was cut short:\n" .. out)
end

describe("mysql: a cancel never leaves a request waiting on nothing", function()
  it("a stream cut short while a row waits to be taken still completes", function()
    -- The deadline passes and the first row arrives before the task runs
    -- again: the stream is paused on a row nobody will ask past.
    check_child("paused", 20)
  end)

  for _, mode in ipairs({ "rows", "query", "value", "batch", "transaction" }) do
    it(("db:%s under timeouts of 0 to 3 ms, 300 times on a pool of one: no hang, no late KILL, the pool whole after")
      :format(mode), function()
      check_child(mode, 300)
    end)
  end

  it("a cancel whose KILL cannot reach the server gives the connection up, without waiting for the server", function()
    -- A connect timeout far beyond the freeze: only the driver's own bound
    -- on a cancelled request can end the wait before the server is back.
    local sep = URL:find("?", 1, true) and "&" or "?"
    local db = loom.db.open(URL .. sep .. "connect_timeout=600", { pool = { max = 1 } })
    loom.run(function()
      db:value("SELECT 1")
      local closed_before = db:stats().closed
      local thawed = false
      my.freeze()
      local guard = loom.spawn(function()
        pcall(loom.sleep, 60) -- the longest the server stays frozen, whatever happens here
        my.thaw()
        thawed = true
      end)
      local ok, e = pcall(loom.timeout, 0.2, db.value, db, "SELECT SLEEP(1) /* spec-frozen */")
      local came_back_frozen = not thawed
      guard:cancel()
      pcall(guard.join, guard)
      assert.is_true(thawed)
      assert.is_false(ok)
      assert.equal("timeout", e.kind)
      assert.is_true(came_back_frozen, "the cancelled call waited for the server to come back")
      -- Its state unknown, the connection was closed; the pool opened another.
      assert.equal(1, db:value("SELECT 1"))
      local s = db:stats()
      assert.equal(closed_before + 1, s.closed)
      assert.equal(0, s.in_use)
    end)
    db:close()
  end)
end)

describe("mysql: statements too large for max_allowed_packet", function()
  it("are refused before sending with kind argument, naming max_allowed_packet and the size; "
    .. "the connection is kept", function()
    local db = loom.db.open(URL, { pool = { max = 1 } })
    loom.run(function()
      local max = db:value("SELECT @@max_allowed_packet")
      local big = ("x"):rep(max)
      local function refused(e, size)
        assert.equal("argument", e.kind, tostring(e))
        assert.is_truthy(e.message:find("max_allowed_packet (" .. max .. " bytes)", 1, true), e.message)
        assert.is_truthy(e.message:find(tostring(size), 1, true), e.message)
      end
      db:with(function(s)
        local id = s:value("SELECT CONNECTION_ID()")
        -- a parameter (prepared statement)
        local ok, e = pcall(s.value, s, "SELECT LENGTH(?)", big)
        assert.is_false(ok)
        refused(e, #big)
        assert.equal(id, s:value("SELECT CONNECTION_ID()"))
        -- twice as large: it used to end in "Server has gone away"
        ok, e = pcall(s.value, s, "SELECT LENGTH(?), ?", big, big)
        assert.is_false(ok)
        refused(e, #big)
        -- the statement's own text
        local sql = "SELECT LENGTH('" .. big .. "')"
        ok, e = pcall(s.value, s, sql)
        assert.is_false(ok)
        refused(e, #sql)
        -- in a batch: that statement fails with its index, the rest is not run
        ok, e = pcall(s.batch, s, { { "SELECT 1" }, { "SELECT LENGTH(?)", big }, { "SELECT 2" } })
        assert.is_false(ok)
        refused(e, #big)
        assert.equal(2, e.batch_index)
        -- just under the limit still goes through
        local fits = big:sub(1, max - 100)
        assert.equal(#fits, s:value("SELECT LENGTH(?)", fits))
        assert.equal(id, s:value("SELECT CONNECTION_ID()"))
      end)
      local st = db:stats()
      assert.equal(0, st.closed)
      assert.equal(0, st.in_use)
      assert.equal(2, db:value("SELECT 2"))
    end)
    db:close()
  end)
end)

describe("mysql: a CALL answering with several result sets", function()
  it("gives the first set's rows to query (prepared and plain text), the rest are read and dropped", function()
    -- It crashed: the rows were dropped with the later sets, and query
    -- built its rows from no result at all.
    for _, cache in ipairs({ true, false }) do
      local db = loom.db.open(URL, { pool = { max = 1 }, statement_cache = cache })
      loom.run(function()
        db:exec("DROP PROCEDURE IF EXISTS spec_two_sets")
        db:exec("CREATE PROCEDURE spec_two_sets() BEGIN SELECT 1 AS a UNION ALL SELECT 2; SELECT 'x' AS b; END")
        local rows = db:query("CALL spec_two_sets()")
        assert.same({ { a = 1 }, { a = 2 } }, rows)
        assert.equal(1, db:value("CALL spec_two_sets()"))
        local seen = {}
        for row in db:rows("CALL spec_two_sets()") do seen[#seen + 1] = row.a end
        assert.same({ 1, 2 }, seen)
        assert.equal(2, db:exec("CALL spec_two_sets()"))
        assert.equal(7, db:value("SELECT 7"))
        db:exec("DROP PROCEDURE spec_two_sets")
        assert.equal(0, db:stats().closed)
      end)
      db:close()
    end
  end)
end)
