-- The connection pool against a real PostgreSQL server: what DRIVERS.md
-- promises (min/max, LIFO idle, FIFO waiters, finite acquire timeout,
-- validation after idle, jittered max lifetime, capped backoff, reset on
-- release, idle trimming, stats) and that a task never deadlocks on a
-- connection it already holds. Connections are told apart on the server by
-- a unique application_name per pool and by backend pid.
local loom = require "loom"
local pg = require "spec.support.pg"

local URL = pg.url()
local ADMIN_URL = pg.admin_url()

-- A URL whose connections carry an application_name of their own.
local tags = 0
local function tagged(url)
  tags = tags + 1
  local name = ("loom_pool_spec_%d_%d"):format(math.random(1, 1e9), tags)
  url = url or URL
  return url .. (url:find("?", 1, true) and "&" or "?") .. "application_name=" .. name, name
end

local function open(opts)
  local url, name = tagged()
  return loom.db.open(url, { pool = opts }), name
end

-- Backends the server has for an application_name.
local function backends(admin, name)
  return admin:value([[SELECT count(*) FROM pg_stat_activity
    WHERE application_name = $1 AND backend_type = 'client backend']], name)
end

-- Polls cond every 10 ms until it holds, or fails with msg after `within` s.
local function eventually(within, msg, cond)
  local deadline = loom.now() + within
  while not cond() do
    if loom.now() > deadline then error(msg .. (" (not within %.1f s)"):format(within), 2) end
    loom.sleep(0.01)
  end
end

-- A task holding one pooled connection until h.release() is called.
local function hold(db)
  local got, release = loom.event(), loom.event()
  local h = {}
  h.task = loom.spawn(function()
    local ok, err = pcall(db.with, db, function(s)
      h.pid = s:value("SELECT pg_backend_pid()")
      got:set()
      release:wait()
    end)
    if not ok then h.err = err; got:set() end
  end)
  got:wait(5)
  if h.err then error(h.err, 2) end
  assert(h.pid, "the holder got no connection within 5 s")
  function h.release() release:set(); h.task:join() end
  return h
end

-- The server directory, for pausing and resuming it.
local function server_dir()
  local state = debug.getregistry()["loom.spec.pg"]
  local dir = state and state.dir or os.getenv("LOOM_PG_DIR")
  if not dir then
    error("LOOM_PG_DIR is not set: the outage test needs the directory of a server started by "
      .. "spec/support/pg_server.sh", 2)
  end
  return dir
end

local function server(cmd)
  local ok = os.execute(("bash spec/support/pg_server.sh %s %s"):format(cmd, server_dir()))
  assert(ok, "pg_server.sh " .. cmd .. " failed")
end

describe("postgres pool sizing", function()
  local admin
  setup(function() admin = loom.db.open(ADMIN_URL, { pool = { max = 2 } }) end)
  teardown(function() admin:close() end)

  it("opens min connections up front and never has more than max backends", function()
    local db, app = open({ min = 2, max = 3, acquire_timeout = 5 })
    loom.run(function()
      eventually(3, "min = 2 connections open before any query", function()
        return backends(admin, app) == 2
      end)
      local s = db:stats()
      assert.equal(2, s.total); assert.equal(2, s.idle); assert.equal(0, s.in_use)

      local watching, peak, peak_total = true, 0, 0
      local watcher = loom.spawn(function()
        while watching do
          peak = math.max(peak, backends(admin, app))
          peak_total = math.max(peak_total, db:stats().total)
          loom.sleep(0.005)
        end
      end)
      local busy, most = 0, 0
      local pids = {}
      loom.each({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, function()
        db:with(function(c)
          busy = busy + 1
          most = math.max(most, busy)
          pids[c:value("SELECT pg_backend_pid() FROM pg_sleep(0.05)")] = true
          busy = busy - 1
        end)
      end)
      watching = false
      watcher:join()
      local distinct = 0
      for _ in pairs(pids) do distinct = distinct + 1 end
      assert.equal(3, most, "ten tasks used all three connections at once")
      assert.equal(3, distinct)
      assert.is_true(peak <= 3, "server saw " .. peak .. " backends for a pool of max 3")
      assert.equal(3, peak_total)
      assert.equal(3, db:stats().total)
    end)
    db:close()
  end)

  it("trims idle connections down to min after idle_timeout, without anyone acquiring", function()
    local db, app = open({ min = 1, max = 4, idle_timeout = 0.3, validate_after = 10 })
    loom.run(function()
      loom.each({ 1, 2, 3, 4 }, function() db:value("SELECT pg_sleep(0.05)") end)
      assert.equal(4, db:stats().total)
      assert.equal(4, backends(admin, app))
      -- Nobody touches the pool: the trimming must happen by itself.
      eventually(2, "idle connections closed down to min = 1", function()
        return backends(admin, app) == 1
      end)
      local s = db:stats()
      assert.equal(1, s.total); assert.equal(1, s.idle); assert.equal(3, s.closed)
      loom.sleep(0.5)
      assert.equal(1, db:stats().total, "never below min")
      assert.equal(1, backends(admin, app))
    end)
    db:close()
  end)
end)

describe("postgres pool order", function()
  it("hands out the most recently released connection first (LIFO)", function()
    local db = open({ max = 3, validate_after = 10 })
    loom.run(function()
      local a, b, c = hold(db), hold(db), hold(db)
      assert.is_true(a.pid ~= b.pid and b.pid ~= c.pid and a.pid ~= c.pid)
      a.release(); b.release(); c.release()
      local x = hold(db)
      assert.equal(c.pid, x.pid)
      local y = hold(db)
      assert.equal(b.pid, y.pid)
      local z = hold(db)
      assert.equal(a.pid, z.pid)
      x.release(); y.release(); z.release()
      -- The warmest again, for plain queries too.
      assert.equal(z.pid, db:value("SELECT pg_backend_pid()"))
      assert.equal(z.pid, db:value("SELECT pg_backend_pid()"))
    end)
    db:close()
  end)

  it("serves waiters first in, first out", function()
    local db = open({ max = 1, acquire_timeout = 5 })
    loom.run(function()
      local holder = hold(db)
      local order, tasks = {}, {}
      for i = 1, 6 do
        tasks[i] = loom.spawn(function()
          db:with(function(s)
            order[#order + 1] = i
            assert.equal(holder.pid, s:backend_id())
            loom.sleep(0.005)
          end)
        end)
        loom.sleep(0.005)
        assert.equal(i, db:stats().waiting)
      end
      -- A latecomer arriving while others wait queues behind them.
      holder.release()
      tasks[7] = loom.spawn(function() db:with(function() order[#order + 1] = 7 end) end)
      for _, t in ipairs(tasks) do t:join() end
      assert.same({ 1, 2, 3, 4, 5, 6, 7 }, order)
      assert.equal(0, db:stats().waiting)
    end)
    db:close()
  end)
end)

describe("postgres pool waiters that leave", function()
  local admin
  setup(function() admin = loom.db.open(ADMIN_URL, { pool = { max = 2 } }) end)
  teardown(function() admin:close() end)

  it("a cancelled waiter leaves the queue and no connection is lost", function()
    local db = open({ max = 1, acquire_timeout = 5 })
    loom.run(function()
      local holder = hold(db)
      local waiter = loom.spawn(function() return db:value("SELECT 1") end)
      local timed = loom.spawn(function() return pcall(loom.timeout, 0.05, db.value, db, "SELECT 1") end)
      loom.sleep(0.01)
      assert.equal(2, db:stats().waiting)
      waiter:cancel("not needed")
      local ok, e = timed:join()
      assert.is_false(ok); assert.equal("timeout", e.kind)
      assert.equal(0, db:stats().waiting)
      holder.release()
      assert.is_false(pcall(waiter.join, waiter))
      local s = db:stats()
      assert.equal(1, s.total); assert.equal(1, s.idle); assert.equal(0, s.in_use)
      assert.equal(holder.pid, db:value("SELECT pg_backend_pid()"))
    end)
    db:close()
  end)

  it("closing the pool fails its waiters and closes every connection, in-use ones when released", function()
    local db, app = open({ max = 2, acquire_timeout = 5 })
    loom.run(function()
      local a, b = hold(db), hold(db)
      assert.equal(2, backends(admin, app))
      local late = loom.spawn(function() return pcall(db.value, db, "SELECT 1") end)
      loom.sleep(0.01)
      assert.equal(1, db:stats().waiting)
      db:close()
      local ok, e = late:join()
      assert.is_false(ok)
      assert.equal("closed", e.kind)
      assert.matches("closed while waiting", e.message)
      local ok2, e2 = pcall(db.value, db, "SELECT 1")
      assert.is_false(ok2); assert.equal("closed", e2.kind)
      -- In use: closed when given back.
      assert.equal(2, backends(admin, app))
      a.release(); b.release()
      eventually(2, "no backend left after close", function() return backends(admin, app) == 0 end)
    end)
  end)
end)

describe("postgres pool acquire timeout", function()
  it("a waiter gives up with kind pool_timeout after acquire_timeout", function()
    -- The holder's acquire opens the connection under the same timeout:
    -- under the sanitizers on a loaded machine a connect took over 0.2 s.
    -- 1.5 s leaves it room; the waiter's wait is then checked against it
    -- (at least the timeout, and not far past it: 5 s of slack for load).
    local db = open({ max = 1, acquire_timeout = 1.5 })
    loom.run(function()
      local holder = hold(db)
      local started = loom.now()
      local ok, e = pcall(db.value, db, "SELECT 1")
      local waited = loom.now() - started
      assert.is_false(ok)
      assert.equal("pool_timeout", e.kind)
      assert.matches("acquire timeout", e.message)
      assert.is_true(waited >= 1.45 and waited < 6.5, ("waited %.3f s for a 1.5 s timeout"):format(waited))
      local s = db:stats()
      assert.equal(1, s.timeouts); assert.equal(0, s.waiting)
      assert.is_true(s.wait_time >= 1.45)
      holder.release()
      assert.equal(1, db:value("SELECT 1"))
    end)
    db:close()
  end)

  it("the default acquire timeout is finite (10 s)", function()
    local db = open({ max = 1 })
    loom.run(function()
      local holder = hold(db)
      local started = loom.now()
      -- Much longer than the default: a hang shows as kind "timeout".
      local ok, e = pcall(loom.timeout, 20, db.value, db, "SELECT 1")
      local waited = loom.now() - started
      assert.is_false(ok)
      assert.equal("pool_timeout", e.kind)
      assert.is_true(waited >= 9.5 and waited < 12, ("waited %.1f s"):format(waited))
      holder.release()
    end)
    db:close()
  end)
end)

describe("postgres pool health", function()
  local admin
  setup(function() admin = loom.db.open(ADMIN_URL, { pool = { max = 2 } }) end)
  teardown(function() admin:close() end)

  it("validates a connection idle past validate_after: a killed backend is replaced, never an error", function()
    local db = open({ max = 1, validate_after = 0.2 })
    loom.run(function()
      local pid = db:value("SELECT pg_backend_pid()")
      assert.is_true(admin:value("SELECT pg_terminate_backend($1::int)", pid))
      loom.sleep(0.3)
      local again = db:value("SELECT pg_backend_pid()")
      assert.is_true(again ~= pid)
      assert.equal(1, db:stats().closed)
      assert.equal(2, db:stats().created)
    end)
    db:close()
  end)

  it("retires connections at a jittered max_lifetime, not all at the same instant", function()
    -- Four seconds: up to 400 ms of jitter, well beyond a stall of a loaded
    -- machine, which could otherwise retire them all at one wake-up. What
    -- is asserted is the promise (none retired early, none used long after
    -- its lifetime, not all at one instant), with slack for such stalls.
    local N, LIFE = 6, 4.0
    local db = open({ max = N, max_lifetime = LIFE, validate_after = 10 })
    loom.run(function()
      local first, last = {}, {}
      local start = loom.now()
      local stop = false
      local workers = {}
      for w = 1, N do
        workers[w] = loom.spawn(function()
          while not stop do
            db:with(function(s)
              local pid = s:backend_id()
              first[pid] = first[pid] or loom.now()
              last[pid] = loom.now()
              loom.sleep(0.002)
            end)
            loom.yield()
          end
        end)
      end
      loom.sleep(LIFE + 1.5)
      stop = true
      for _, t in ipairs(workers) do t:join() end
      local gen1, lo, hi = 0, math.huge, -math.huge
      for pid, t in pairs(first) do
        -- The first generation: connections in use before any could retire
        -- (a loaded machine may take a while to open all of them).
        if t - start < 0.85 * LIFE then
          gen1 = gen1 + 1
          local age = last[pid] - start
          lo, hi = math.min(lo, age), math.max(hi, age)
          assert.is_true(age >= 0.85 * LIFE,
            ("backend %d retired after %.3f s, before 90%% of max_lifetime"):format(pid, age))
          -- A second of slack: a stalled loop may read the clock late.
          assert.is_true(age <= LIFE + 1.0, ("backend %d still used after %.3f s"):format(pid, age))
        end
      end
      assert.equal(N, gen1)
      assert.is_true(hi - lo >= 0.015,
        ("all %d connections retired within %.0f ms of each other: no jitter"):format(N, (hi - lo) * 1000))
      local s = db:stats()
      assert.is_true(s.created >= 2 * N, "the retired ones were replaced")
      assert.is_true(s.closed >= N)
    end)
    db:close()
  end)

  it("a server that refuses connections fails acquires fast with kind connection, "
    .. "with capped backoff and no busy loop", function()
    -- Nothing listens on port 1.
    local db = loom.db.open("postgres://loom:secret-pw@127.0.0.1:1/loom_test",
      { pool = { max = 2, acquire_timeout = 10 } })
    loom.run(function()
      local started = loom.now()
      local ok, e = pcall(db.value, db, "SELECT 1")
      assert.is_false(ok)
      assert.equal("connection", e.kind)
      assert.is_true(loom.now() - started < 1, "the first failure is reported at once, not at the acquire timeout")
      assert.matches("refused", e.message, 1, true)
      assert.is_nil(tostring(e):find("secret-pw", 1, true))
      -- Callers retrying in a tight loop are paced by the backoff.
      local cpu, tries = os.clock(), 0
      local deadline = loom.now() + 1.5
      while loom.now() < deadline do
        local ok2, e2 = pcall(db.value, db, "SELECT 1")
        assert.is_false(ok2)
        assert.equal("connection", e2.kind)
        tries = tries + 1
      end
      cpu = os.clock() - cpu
      local s = db:stats()
      assert.is_true(s.failed_connects >= 3 and s.failed_connects <= 12,
        ("%d connect attempts in 1.5 s: no backoff"):format(s.failed_connects))
      assert.is_true(tries <= s.failed_connects + 2, "each failed acquire waited for a connect attempt")
      assert.is_true(cpu < 0.5, ("%.2f s of CPU while the server was down"):format(cpu))
      assert.equal(0, s.total); assert.equal(0, s.waiting)
    end)
    db:close()
  end)
end)

describe("postgres pool reset on release", function()
  local db, admin
  setup(function()
    db = open({ max = 1, validate_after = 10, acquire_timeout = 5 })
    admin = loom.db.open(ADMIN_URL, { pool = { max = 1 } })
    loom.run(function()
      admin:exec([[DO $$ BEGIN CREATE ROLE loom_pool_spec_role;
        EXCEPTION WHEN duplicate_object THEN NULL; END $$]])
      admin:exec("GRANT loom_pool_spec_role TO loom")
      db:exec("DROP TABLE IF EXISTS pool_spec_reset")
    end)
  end)
  teardown(function()
    db:close()
    loom.run(function()
      admin:exec("DROP TABLE IF EXISTS pool_spec_reset")
      admin:exec("REVOKE loom_pool_spec_role FROM loom")
      -- A leaked role may still own a temporary table of a closing backend.
      pcall(admin.exec, admin, "DROP ROLE IF EXISTS loom_pool_spec_role")
    end)
    admin:close()
  end)

  -- Runs dirty(session) on the pool's one connection, releases it, and
  -- returns that backend's pid; the next user must find it clean.
  local function dirty(fn)
    local pid
    db:with(function(s)
      pid = s:backend_id()
      fn(s)
    end)
    return pid
  end

  local function next_user_same_backend(pid)
    assert.equal(pid, db:value("SELECT pg_backend_pid()"), "the connection was reset and reused, not replaced")
  end

  it("an open transaction is rolled back", function()
    loom.run(function()
      local pid = dirty(function(s)
        s:exec("BEGIN")
        s:exec("CREATE TABLE pool_spec_reset (x int)")
      end)
      next_user_same_backend(pid)
      assert.equal(loom.null, db:value("SELECT to_regclass('pool_spec_reset')::text"))
      assert.equal(loom.null, db:value("SELECT pg_current_xact_id_if_assigned()::text"))
      assert.equal("idle", admin:value("SELECT state FROM pg_stat_activity WHERE pid = $1", pid))
      next_user_same_backend(pid)
    end)
  end)

  it("an aborted transaction never reaches the next user", function()
    loom.run(function()
      local pid = dirty(function(s)
        s:exec("BEGIN")
        assert.is_false(pcall(s.value, s, "SELECT 1 / 0"))
      end)
      assert.equal(7, db:value("SELECT 7"))
      next_user_same_backend(pid)
    end)
  end)

  it("advisory locks are released", function()
    loom.run(function()
      local pid = dirty(function(s)
        s:exec("SELECT pg_advisory_lock(424242)")
        s:exec("SELECT pg_advisory_lock_shared(434343)")
      end)
      -- The reset runs as the connection goes back: the next user of the
      -- pool (max = 1) waits for it, another connection might not.
      next_user_same_backend(pid)
      assert.equal(0, admin:value("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1", pid))
      assert.is_true(admin:value("SELECT pg_try_advisory_lock(424242)"))
      admin:exec("SELECT pg_advisory_unlock(424242)")
    end)
  end)

  it("LISTENs are dropped", function()
    loom.run(function()
      local pid = dirty(function(s) s:exec("LISTEN pool_spec_channel") end)
      assert.equal(0, db:value("SELECT count(*) FROM pg_listening_channels()"))
      next_user_same_backend(pid)
    end)
  end)

  it("SET and set_config session settings are reset", function()
    loom.run(function()
      local pid = dirty(function(s)
        s:exec("SET statement_timeout = '4321ms'")
        s:exec("SET loom_spec.var = 'leaked'")
      end)
      assert.equal("0", db:value("SELECT current_setting('statement_timeout')"))
      assert.is_true(db:value("SELECT coalesce(current_setting('loom_spec.var', true), '')") ~= "leaked")
      next_user_same_backend(pid)
      -- Whatever blank follows the keyword.
      pid = dirty(function(s) s:exec("SET\tloom_spec.tab = 'leaked'") end)
      assert.is_true(db:value("SELECT coalesce(current_setting('loom_spec.tab', true), '')") ~= "leaked")
      next_user_same_backend(pid)
      pid = dirty(function(s)
        s:value("SELECT set_config('loom_spec.fn', 'leaked', false)")
        s:value("SELECT set_config('work_mem', '7777kB', false)")
      end)
      assert.is_true(db:value("SELECT coalesce(current_setting('loom_spec.fn', true), '')") ~= "leaked")
      assert.is_true(db:value("SELECT current_setting('work_mem')") ~= "7777kB")
      next_user_same_backend(pid)
    end)
  end)

  it("SET ROLE is undone", function()
    loom.run(function()
      local pid = dirty(function(s)
        s:exec("SET ROLE loom_pool_spec_role")
        assert.equal("loom_pool_spec_role", s:value("SELECT current_user::text"))
      end)
      assert.equal("loom", db:value("SELECT current_user::text"))
      next_user_same_backend(pid)
    end)
  end)

  it("temporary tables and held cursors are dropped", function()
    loom.run(function()
      local pid = dirty(function(s)
        s:exec("CREATE\n  TEMPORARY TABLE pool_spec_tmp (x int)")
        s:exec("DECLARE pool_spec_cur CURSOR WITH HOLD FOR SELECT 1")
      end)
      assert.equal(loom.null, db:value("SELECT to_regclass('pg_temp.pool_spec_tmp')::text"))
      assert.equal(0, db:value("SELECT count(*) FROM pg_cursors WHERE name = 'pool_spec_cur'"))
      next_user_same_backend(pid)
    end)
  end)

  it("a clean connection goes back as it is", function()
    loom.run(function()
      local pid = dirty(function(s) s:value("SELECT 1") end)
      next_user_same_backend(pid)
      local s = db:stats()
      assert.equal(1, s.total); assert.equal(1, s.created); assert.equal(0, s.closed)
    end)
  end)
end)

describe("postgres pool stats", function()
  it("reports size, total, idle, in_use, waiting, acquired, timeouts, created, closed, wait_time", function()
    -- One second: long enough for both connects on a loaded machine under
    -- sanitizers (the first two acquires must not time out), short enough
    -- for the third to time out quickly.
    local db = open({ max = 2, acquire_timeout = 1, validate_after = 10 })
    loom.run(function()
      local s = db:stats()
      local fields = { "size", "total", "idle", "in_use", "waiting", "acquired", "timeouts", "created", "closed" }
      for _, k in ipairs(fields) do
        assert.equal("integer", math.type(s[k]), "stats()." .. k)
        assert.equal(0, s[k], "stats()." .. k .. " of a fresh pool")
      end
      assert.equal("number", type(s.wait_time))

      local a, b = hold(db), hold(db)
      s = db:stats()
      assert.equal(2, s.size); assert.equal(2, s.total); assert.equal(2, s.in_use)
      assert.equal(0, s.idle); assert.equal(2, s.acquired); assert.equal(2, s.created)

      local waiter = loom.spawn(function() return pcall(db.value, db, "SELECT 1") end)
      loom.sleep(0.02)
      assert.equal(1, db:stats().waiting)
      local ok, e = waiter:join()
      assert.is_false(ok); assert.equal("pool_timeout", e.kind)
      s = db:stats()
      assert.equal(0, s.waiting); assert.equal(1, s.timeouts)
      assert.is_true(s.wait_time >= 0.9, "wait_time counts the time waited")

      a.release()
      s = db:stats()
      assert.equal(1, s.idle); assert.equal(1, s.in_use); assert.equal(2, s.total)
      b.release()
      for _ = 1, 5 do db:value("SELECT 1") end
      s = db:stats()
      assert.equal(7, s.acquired); assert.equal(2, s.idle); assert.equal(0, s.in_use)
      assert.equal(s.created - s.closed, s.total)
    end)
    db:close()
    assert.equal(0, db:stats().total)
  end)
end)

describe("postgres pool re-entry", function()
  it("db calls inside db:transaction and db:with use the task's connection, even with max = 1", function()
    -- The connection is opened up front (min = 1), so that the short
    -- acquire timeout only ever times the other task's wait.
    local db = open({ min = 1, max = 1, acquire_timeout = 0.3 })
    loom.run(function()
      eventually(10, "the pool's connection open", function() return db:stats().idle == 1 end)
      loom.timeout(5, function()
        db:transaction(function(tx)
          local pid = tx:value("SELECT pg_backend_pid()")
          tx:exec("CREATE TEMP TABLE pool_spec_nested (x int) ON COMMIT DROP")
          -- db:* inside the transaction sees its uncommitted work: same connection, same transaction.
          assert.equal(1, db:exec("INSERT INTO pool_spec_nested VALUES (1)"))
          assert.equal(1, db:value("SELECT count(*) FROM pool_spec_nested"))
          assert.equal(pid, db:first("SELECT pg_backend_pid() AS p").p)
          local n = 0
          for _ in db:rows("SELECT x FROM pool_spec_nested") do n = n + 1 end
          assert.equal(1, n)
          db:with(function(s) assert.equal(pid, s:value("SELECT pg_backend_pid()")) end)
          db:transaction(function(inner) inner:exec("INSERT INTO pool_spec_nested VALUES (2)") end)
          assert.equal(2, db:value("SELECT count(*) FROM pool_spec_nested"))
          -- Another task needs a connection of its own: a clear error, not a hang.
          local ok, e = loom.spawn(function() return pcall(db.value, db, "SELECT 1") end):join()
          assert.is_false(ok)
          assert.equal("pool_timeout", e.kind)
        end)
        db:with(function(s)
          local pid = s:backend_id()
          assert.equal(pid, db:value("SELECT pg_backend_pid()"))
          db:transaction(function(tx) assert.equal(pid, tx:value("SELECT pg_backend_pid()")) end)
          local again <close> = db:acquire()
          assert.equal(pid, again:backend_id())
        end)
      end)
      local s = db:stats()
      assert.equal(1, s.total); assert.equal(1, s.idle); assert.equal(0, s.in_use)
    end)
    db:close()
  end)
end)

-- Last: it stops the shared server for a moment.
describe("postgres pool outage", function()
  it("fails with kind connection while the server is down and heals when it is back", function()
    local db = open({ max = 2, acquire_timeout = 10 })
    loom.run(function()
      assert.equal(1, db:value("SELECT 1"))
      server("pause")
      local ok, resumed = pcall(function()
        local cpu = os.clock()
        local deadline = loom.now() + 1
        while loom.now() < deadline do
          local ok2, e = pcall(db.value, db, "SELECT 1")
          assert.is_false(ok2)
          assert.equal("connection", e.kind, tostring(e))
        end
        cpu = os.clock() - cpu
        assert.is_true(cpu < 0.4, ("%.2f s of CPU while the server was down"):format(cpu))
      end)
      server("resume")
      if not ok then error(resumed, 0) end
      local started = loom.now()
      local healed
      while loom.now() - started < 8 do
        local ok3, v = pcall(db.value, db, "SELECT 42")
        if ok3 then healed = v break end
        assert.equal("connection", v.kind, tostring(v))
      end
      assert.equal(42, healed, "the pool heals once the server is back")
      assert.is_true(loom.now() - started < 6.5, "reconnect backoff is capped")
      loom.each({ 1, 2, 3, 4 }, function(i) assert.equal(i, db:value("SELECT $1::int", i)) end)
      assert.is_true(db:stats().failed_connects >= 1)
      -- A connect still in flight when the pool closes finishes on the loop;
      -- let it, so nothing is left behind when the loop stops.
      eventually(5, "the last connect finished", function() return db:stats().connecting == 0 end)
    end)
    db:close()
  end)
end)
