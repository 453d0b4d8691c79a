-- The database API every driver offers, asserted once and run against each
-- database: SQLite in a file and in memory, PostgreSQL and MariaDB (servers
-- from spec/support/pg.lua and my.lua). What a driver answers differently
-- comes from its entry in spec/support/drivers.lua. Cases only one driver
-- can have stay in that driver's own spec.
local loom = require "loom"
local support = require "spec.support.db"
local drivers = require "spec.support.drivers"

local unique = support.unique

for _, target in ipairs(drivers.targets) do
  local T = drivers.dialects[target.driver]
  local S = T.server
  local q = T.sql
  local function url() return target.url(target) end
  local function open(opts) return loom.db.open(url(), opts) end

describe("db conformance: " .. target.name, function()
  local db
  setup(function() db = open({ pool = { max = 4 } }) end)
  teardown(function()
    db:close()
    collectgarbage()
    if target.cleanup then target.cleanup(target) end
  end)

  describe("values", function()
    it("round-trips parameters of every kind, loom.null and nil as NULL", function()
      loom.run(function()
        local blob = "a\0b\255"
        local r = db:first(T.params_sql, math.maxinteger, 0.1, false, "tab\there", blob, loom.null, nil)
        assert.equal(math.maxinteger, r.i); assert.equal("integer", math.type(r.i))
        assert.equal(0.1, r.f); assert.equal(T.bool[false], r.b)
        assert.equal("tab\there", r.t); assert.equal(blob, r.x)
        assert.equal(loom.null, r.n1); assert.equal(loom.null, r.n2)
        assert.equal(42, db:value(q "SELECT ? + 1", 41))
        assert.equal(math.mininteger, db:value(T.echo, math.mininteger))
      end)
    end)

    it("query returns rows and info, exec affected rows and the last insert id, first and value", function()
      loom.run(function()
        local t = unique("spec_t")
        db:exec(("CREATE TABLE %s (id %s, name TEXT)"):format(t, T.serial))
        local n, id = db:exec(("INSERT INTO %s (name) VALUES ('a'), ('b'), ('c')"):format(t))
        assert.equal(3, n); assert.equal(T.insert_ids[1], id)
        n, id = db:exec(q(("INSERT INTO %s (name) VALUES (?)"):format(t)), "d")
        assert.equal(1, n); assert.equal(T.insert_ids[2], id)
        local rows, info = db:query(("SELECT id, name FROM %s ORDER BY id"):format(t))
        assert.equal(4, #rows)
        assert.same({ "id", "name" }, info.columns)
        assert.same({ id = 2, name = "b" }, rows[2])
        assert.is_nil(db:first(("SELECT * FROM %s WHERE id = 99"):format(t)))
        assert.is_nil(db:value(q(("SELECT name FROM %s WHERE id = ?"):format(t)), 99))
        assert.equal("c", db:value(q(("SELECT name FROM %s WHERE id = ?"):format(t)), 3))
        -- affected counts rows matched, also where nothing changed
        assert.equal(1, db:exec(q(("UPDATE %s SET name = name WHERE id = ?"):format(t)), 1))
        assert.equal(4, db:exec(("UPDATE %s SET name = name"):format(t)))
        assert.equal(3, db:exec(q(("DELETE FROM %s WHERE id > ?"):format(t)), 1))
        db:exec("DROP TABLE " .. t)
      end)
    end)
  end)

  describe("errors", function()
    it("carry kind, the driver's code, message, driver and sql", function()
      loom.run(function()
        local ok, e = pcall(db.query, db, "SELEC 1")
        assert.is_false(ok)
        assert.equal("query", e.kind); assert.equal(T.syntax.code, e.code)
        assert.equal(T.syntax.sqlstate, e.sqlstate)
        assert.matches(T.syntax.message, e.message, 1, true)
        assert.equal(target.driver, e.driver); assert.equal("SELEC 1", e.sql)
        assert.equal(("query [%s]"):format(e.code), tostring(e):sub(1, #tostring(e.code) + 8))
        ok, e = pcall(db.query, db, q "SELECT * FROM no_such_table WHERE 1 = ?", 1)
        assert.is_false(ok)
        assert.equal("query", e.kind); assert.equal(T.no_table.code, e.code)
        assert.equal(T.no_table.sqlstate, e.sqlstate)
        assert.matches("no_such_table", e.message)
        local t = unique("spec_u")
        db:exec(("CREATE TABLE %s (id INTEGER PRIMARY KEY, email VARCHAR(40) UNIQUE)"):format(t))
        db:exec(("INSERT INTO %s VALUES (1, 'a@x')"):format(t))
        ok, e = pcall(db.exec, db, q(("INSERT INTO %s VALUES (?, 'a@x')"):format(t)), 2)
        assert.is_false(ok)
        assert.equal("query", e.kind); assert.equal(T.unique.code, e.code)
        assert.equal(T.unique.sqlstate, e.sqlstate)
        assert.matches(T.unique.text, tostring(e) .. " " .. (e.detail or ""), 1, true)
        ok, e = pcall(db.value, db, "SELECT 1 +")
        assert.is_false(ok)
        assert.equal("query", e.kind); assert.equal(T.syntax.code, e.code)
        db:exec("DROP TABLE " .. t)
        assert.equal(1, db:value("SELECT 1"))
      end)
    end)

    it("catch a wrong number of parameters and unsupported types before sending", function()
      loom.run(function()
        local ok, e = pcall(db.value, db, q "SELECT ?, ?", 1)
        assert.is_false(ok)
        assert.equal("argument", e.kind)
        assert.matches("takes 2 parameters (" .. T.placeholder, e.message, 1, true)
        ok, e = pcall(db.value, db, T.echo, {})
        assert.is_false(ok)
        assert.equal("argument", e.kind); assert.matches("parameter 1 is a table", e.message)
        ok, e = pcall(db.query, db, 42)
        assert.is_false(ok)
        assert.equal("argument", e.kind)
        assert.is_true(db:stats().total >= 1)
      end)
    end)
  end)

  describe("transactions", function()
    local t
    setup(function()
      t = unique("spec_acct")
      loom.run(function()
        db:exec(("CREATE TABLE %s (id INTEGER PRIMARY KEY, v INTEGER)"):format(t))
        db:exec(("INSERT INTO %s VALUES (1, 0), (2, 0)"):format(t))
      end)
    end)
    teardown(function() loom.run(function() db:exec("DROP TABLE " .. t) end) end)

    local function v() return db:value(("SELECT v FROM %s WHERE id = 1"):format(t)) end

    it("commit, roll back on error, nest savepoints", function()
      loom.run(function()
        db:transaction(function(tx) tx:exec(("UPDATE %s SET v = 1 WHERE id = 1"):format(t)) end)
        assert.equal(1, v())
        local ok = pcall(db.transaction, db, function(tx)
          tx:exec(("UPDATE %s SET v = 2 WHERE id = 1"):format(t))
          error("no")
        end)
        assert.is_false(ok)
        assert.equal(1, v())
        db:transaction(function(tx)
          tx:exec(("UPDATE %s SET v = 10 WHERE id = 1"):format(t))
          pcall(tx.savepoint, tx, function(sp)
            sp:exec(("UPDATE %s SET v = 20 WHERE id = 1"):format(t))
            error("undo me")
          end)
          assert.equal(10, tx:value(("SELECT v FROM %s WHERE id = 1"):format(t)))
          -- db calls inside the transaction use its connection
          assert.equal(10, v())
          assert.equal("active", tx.conn:_txn())
        end)
        assert.equal(10, v())
      end)
    end)

    it("read only refuses writes; an unknown isolation level is an argument error", function()
      loom.run(function()
        local ok, e = pcall(db.transaction, db, function(tx)
          assert.equal(10, tx:value(("SELECT v FROM %s WHERE id = 1"):format(t)))
          tx:exec(("UPDATE %s SET v = 0"):format(t))
        end, { read_only = true })
        assert.is_false(ok)
        assert.equal("query", e.kind); assert.equal(T.read_only.code, e.code)
        assert.equal(T.read_only.sqlstate, e.sqlstate)
        assert.equal(10, v())
        ok, e = pcall(db.transaction, db, function() end, { isolation = "chaotic" })
        assert.is_false(ok)
        assert.equal("argument", e.kind)
      end)
    end)

    it("a connection released mid-transaction is rolled back", function()
      loom.run(function()
        local s = db:acquire()
        s:exec("BEGIN")
        s:exec(("UPDATE %s SET v = 999"):format(t))
        s:release()
        loom.sleep(0.05)
        assert.equal(10, v())
        -- and whoever gets that connection next is not inside a transaction
        for _ = 1, 4 do
          db:with(function(s2) assert.equal("idle", s2.conn:_txn()) end)
        end
      end)
    end)
  end)

  describe("streaming and batches", function()
    it("streams rows one at a time and cleans up after break", function()
      loom.run(function()
        local n = 0
        for row in db:rows(T.series(50000)) do n = n + row.x end
        assert.equal(50000 * 50001 // 2, n)
        n = 0
        for _ in db:rows(q(("SELECT x FROM (%s) s WHERE x > ?"):format(T.series(50000))), 49990) do n = n + 1 end
        assert.equal(10, n)
        local started, seen = loom.now(), 0
        for row in db:rows(T.endless) do
          seen = seen + 1
          if row.x == 2 then break end
        end
        assert.equal(2, seen)
        -- Reading the rest would take minutes (more under sanitizers);
        -- giving up on it takes well under this bound.
        assert.is_true(loom.now() - started < 20, "the rest was not read to the end")
        assert.equal(1, db:value("SELECT 1"))
        assert.equal(0, db:stats().in_use)
        local ok, e = pcall(function() for _ in db:rows(T.stream_error.sql) do end end)
        assert.is_false(ok)
        assert.equal("query", e.kind); assert.equal(T.stream_error.code, e.code)
        for _ = 1, 3 do
          for row in db:rows(q(("SELECT x FROM (%s) s WHERE x > ?"):format(T.series(10000))), 0) do
            if row.x == 5 then break end
          end
        end
        assert.equal(2, db:value(T.echo, 2))
        assert.equal(0, db:stats().in_use)
      end)
    end)

    it("batches statements in one trip, results in order, the first error with its index", function()
      loom.run(function()
        local t = unique("spec_b")
        db:exec(("CREATE TABLE %s (id %s, v TEXT)"):format(t, T.serial))
        local res = db:batch({
          { q(("INSERT INTO %s (v) VALUES (?)"):format(t)), "one" },
          { q(("INSERT INTO %s (v) VALUES (?)"):format(t)), "two" },
          { ("SELECT v FROM %s ORDER BY id"):format(t) },
          { q(("SELECT count(*) AS n FROM %s WHERE v = ?"):format(t)), "two" },
          { "SELECT 1 AS a" }, { q "SELECT ? AS b", "x" }, { T.series(3) },
        })
        assert.equal(7, #res)
        assert.same({ { v = "one" }, { v = "two" } }, res[3])
        assert.equal(1, res[4][1].n)
        assert.equal(1, res[5][1].a); assert.equal("x", res[6][1].b); assert.equal(3, #res[7])
        local ok, e = pcall(db.batch, db, { { "SELECT 1" }, { "SELECT nope" },
          { ("INSERT INTO %s (v) VALUES ('never')"):format(t) } })
        assert.is_false(ok)
        assert.equal("query", e.kind); assert.equal(T.unknown_column, e.code); assert.equal(2, e.batch_index)
        assert.equal(0, db:value(("SELECT count(*) FROM %s WHERE v = 'never'"):format(t)))
        assert.equal(1, db:value("SELECT 1"))
        db:exec("DROP TABLE " .. t)
      end)
    end)
  end)

  describe("insert_many", function()
    it("escapes what needs it, takes array and keyed rows, and inserts all or nothing", function()
      loom.run(function()
        local t = unique("spec_many")
        db:exec(("CREATE TABLE %s (id INTEGER PRIMARY KEY, t TEXT, b %s, f %s, ok %s)")
          :format(t, T.types.blob, T.types.float, T.types.bool))
        local tricky = "a\tb\nc\\d\re'\"`"
        local rows = {
          { 1, tricky, "x\0y", 0.5, true },
          { id = 2, t = loom.null, ok = false },
          { 3, "\\N", loom.null, 1e300, loom.null },
        }
        for i = 4, 5000 do
          rows[i] = i % 2 == 0 and { i, ("row\t%d"):format(i), nil, i / 2, i % 4 == 0 }
                   or { id = i, t = ("row\n%d"):format(i), f = i / 2 }
        end
        assert.equal(5000, db:insert_many(t, { "id", "t", "b", "f", "ok" }, rows))
        local r = db:query(("SELECT * FROM %s WHERE id <= 3 ORDER BY id"):format(t))
        assert.equal(tricky, r[1].t); assert.equal("x\0y", r[1].b); assert.equal(0.5, r[1].f)
        assert.equal(T.bool[true], r[1].ok)
        assert.equal(loom.null, r[2].t); assert.equal(T.bool[false], r[2].ok)
        assert.equal("\\N", r[3].t); assert.equal(1e300, r[3].f); assert.equal(loom.null, r[3].ok)
        assert.equal(5000, db:value(("SELECT count(*) FROM %s"):format(t)))
        assert.equal("row\t4", db:value(q(("SELECT t FROM %s WHERE id = ?"):format(t)), 4))
        assert.equal("row\n5", db:value(q(("SELECT t FROM %s WHERE id = ?"):format(t)), 5))
        assert.equal(loom.null, db:value(q(("SELECT b FROM %s WHERE id = ?"):format(t)), 5))
        -- a failing row leaves nothing of the call behind
        local bad = {}
        for i = 1, 3000 do bad[i] = { 10000 + i, "new" } end
        bad[2500] = { 1, "duplicate" }
        local ok, e = pcall(db.insert_many, db, t, { "id", "t" }, bad)
        assert.is_false(ok)
        assert.equal("query", e.kind); assert.equal(T.primary_key, e.code)
        assert.equal(5000, db:value(("SELECT count(*) FROM %s"):format(t)))
        -- a value that cannot be sent is an argument error, nothing sent
        ok, e = pcall(db.insert_many, db, t, { "id", "t" }, { { 20001, "fine" }, { 20002, {} } })
        assert.is_false(ok)
        assert.equal("argument", e.kind)
        assert.equal(5000, db:value(("SELECT count(*) FROM %s"):format(t)))
        db:exec("DROP TABLE " .. t)
      end)
    end)
  end)

  describe("locks", function()
    it("lock serializes, times out, and always releases", function()
      loom.run(function()
        local inside, most = 0, 0
        loom.each({ 1, 2, 3, 4, 5 }, function()
          db:lock("spec-lock", function()
            inside = inside + 1
            most = math.max(most, inside)
            loom.sleep(0.01)
            inside = inside - 1
          end)
        end)
        assert.equal(1, most)
        assert.is_false((pcall(db.lock, db, 7, function() error("boom") end)))
        assert.equal("free", db:lock(7, function() return "free" end, { timeout = 1 }))
        local t = loom.spawn(function() db:lock(8, function() loom.sleep(10) end) end)
        loom.sleep(0.05)
        local ok, e = pcall(db.lock, db, 8, function() end, { timeout = 0.1 })
        assert.is_false(ok)
        assert.equal("timeout", e.kind)
        t:cancel()
        pcall(t.join, t)
        assert.equal("released on cancel", db:lock(8, function() return "released on cancel" end, { timeout = 1 }))
        assert.equal("long", db:lock(("k"):rep(100), function() return "long" end))
      end)
    end)

    if not T.listens then
      it("listen and notify are an argument error", function()
        local ok, e = pcall(db.listen, db, "x")
        assert.is_false(ok); assert.equal("argument", e.kind)
        ok, e = pcall(db.notify, db, "x", "y")
        assert.is_false(ok); assert.equal("argument", e.kind)
      end)
    end
  end)

  describe("handles", function()
    it("collecting a db handle with queries in flight is safe", function()
      loom.run(function()
        local results = {}
        do
          local gone = open({ pool = { max = 3 } })
          for i = 1, 6 do
            loom.spawn(function() results[i] = gone:value(T.slow_value, i) end)
          end
        end
        for _ = 1, 5 do collectgarbage() loom.sleep(0.02) end
        -- Bounded: the statements finish with nobody holding the handle.
        local function answered()
          local n = 0
          for i = 1, 6 do if results[i] ~= nil then n = n + 1 end end
          return n
        end
        loom.timeout(30, function()
          while answered() < 6 do collectgarbage() loom.sleep(0.05) end
        end)
        collectgarbage()
        for i = 1, 6 do assert.equal(i, results[i]) end
      end)
      collectgarbage()
    end)
  end)

  if not S then return end

  -- What only a server has: sessions of their own, a password, queries to
  -- cancel on the other side, connections to kill.
  local server = require(S.support)

  describe("server sessions", function()
    it("a task holding a connection reuses it instead of deadlocking", function()
      local small = open({ pool = { max = 2, acquire_timeout = 1 } })
      loom.run(function()
        small:with(function(s)
          local me = s:backend_id()
          -- the pool has 2 connections; nested calls must not take the other
          assert.equal(me, small:value(S.backend_sql))
          small:with(function(inner) assert.equal(me, inner:backend_id()) end)
          small:transaction(function(tx) assert.equal(me, tx:value(S.backend_sql)) end)
        end)
      end)
      small:close()
    end)

    it("times out acquiring with kind pool_timeout", function()
      local small = open({ pool = { max = 2, acquire_timeout = 1 } })
      loom.run(function()
        -- Two other tasks hold both connections.
        local release = loom.event()
        local holders = {}
        for i = 1, 2 do
          holders[i] = loom.spawn(function() small:with(function() release:wait() end) end)
        end
        loom.sleep(0.1)
        local started = loom.now()
        local ok, e = pcall(small.value, small, "SELECT 1")
        assert.is_false(ok)
        assert.equal("pool_timeout", e.kind)
        assert.is_true(loom.now() - started >= 0.9)
        release:set()
        for _, h in ipairs(holders) do h:join() end
        assert.equal(1, small:value("SELECT 1"))
        assert.is_true(small:stats().timeouts >= 1)
      end)
      small:close()
    end)

    it("never show the password", function()
      local bad_url = url():gsub("^(%a+://[^:/@]+):([^@]+)@", "%1:wrong-secret-pw@")
      assert.truthy(bad_url:find("wrong-secret-pw", 1, true), "the test URL has a password to replace")
      local bad = loom.db.open(bad_url, { pool = { acquire_timeout = 5 } })
      assert.is_falsy(tostring(bad):find("wrong-secret-pw", 1, true))
      local ok, e = pcall(function() return loom.run(function() return bad:value("SELECT 1") end) end)
      assert.is_false(ok)
      assert.equal("connection", e.kind)
      assert.equal(S.wrong_password, e.code)
      assert.is_falsy(tostring(e):find("wrong-secret-pw", 1, true))
      assert.is_falsy((e.message or ""):find("wrong-secret-pw", 1, true))
      bad:close()
    end)
  end)

  describe("server cancellation", function()
    local admin
    setup(function() admin = loom.db.open(server.admin_url()) end)
    teardown(function() admin:close() end)

    it("a timeout cancels the query on the server and the connection stays usable", function()
      loom.run(function()
        local started = loom.now()
        local ok, e = pcall(loom.timeout, 0.2, db.value, db, S.sleep(10) .. " /* spec-timeout */")
        assert.is_false(ok)
        assert.equal("timeout", e.kind)
        assert.is_true(loom.now() - started < 3)
        assert.equal(0, S.running(admin, "spec-timeout"))
        for _ = 1, 5 do assert.equal(1, db:value("SELECT 1")) end
        -- with parameters (a prepared statement) too
        ok, e = pcall(loom.timeout, 0.2, db.value, db, S.sleep_param .. " /* spec-timeout-ps */", 10)
        assert.is_false(ok)
        assert.equal("timeout", e.kind)
        assert.equal(0, S.running(admin, "spec-timeout-ps"))
        assert.equal(3, db:value(T.echo, 3))
      end)
    end)

    it("task:cancel cancels the query on the server", function()
      loom.run(function()
        local t = loom.spawn(function() return db:value(S.sleep(10) .. " /* spec-cancel */") end)
        loom.sleep(0.2)
        t:cancel("stop it")
        local ok, e = pcall(t.join, t)
        assert.is_false(ok)
        assert.equal("cancelled", e.kind)
        assert.equal(0, S.running(admin, "spec-cancel"))
        assert.equal(2, db:value("SELECT 2"))
      end)
    end)

    it("a late cancel never hits the next query", function()
      loom.run(function()
        -- Cancel right as quick queries finish, many times over.
        for i = 1, 50 do
          pcall(loom.timeout, 0.0005 * (i % 5), db.value, db, S.sleep(0.001))
          assert.equal(i, db:value(T.echo, i))
        end
      end)
    end)
  end)

  describe("server faults", function()
    local function no_password(e)
      local password = url():match("^%a+://[^:/@]+:([^@]+)@")
      local text = tostring(e) .. " " .. tostring(type(e) == "table" and e.message or "")
      assert.is_falsy(text:find(password, 1, true), "the password leaked into an error: " .. text)
    end

    it("the pool heals after its connections are killed", function()
      local healing = open({ pool = { max = 4 } })
      local admin = loom.db.open(server.admin_url())
      loom.run(function()
        loom.each({ 1, 2, 3, 4 }, function() healing:value(S.sleep(0.01)) end)
        assert.equal(4, healing:stats().total)
        assert.is_true(S.kill_all(admin) >= 4)
        loom.sleep(0.2) -- the loop sees the sockets close
        for i = 1, 20 do assert.equal(i, healing:value(T.echo, i)) end
        assert.is_true(healing:stats().closed >= 4)
      end)
      healing:close(); admin:close()
    end)

    it("survives a server restart under load: in-flight work fails with kind connection, later work succeeds",
      function()
      local loaded = open({ pool = { max = 4, acquire_timeout = 20 } })
      local kinds, done = {}, 0
      loom.run(function()
        local workers = {}
        local stop = false
        for w = 1, 4 do
          workers[w] = loom.spawn(function()
            while not stop do
              local ok, e = pcall(loaded.value, loaded, S.sleep(0.02))
              if ok then done = done + 1
              elseif e.kind == "cancelled" then error(e) -- never swallow our own cancellation
              else
                kinds[e.kind] = (kinds[e.kind] or 0) + 1
                no_password(e)
              end
            end
          end)
        end
        loom.sleep(0.3)
        -- blocks this process for a moment: the loop simply waits
        local restarted, why = pcall(server.restart)
        if not restarted then
          stop = true -- or the workers would keep run() from returning
          error(why, 0)
        end
        loom.sleep(0.5)
        local after = done
        loom.sleep(1)
        stop = true
        for _, t in ipairs(workers) do loom.timeout(30, t.join, t) end
        assert.is_true(done > after, "queries succeed again after the restart")
        for kind in pairs(kinds) do
          assert.is_true(kind == "connection" or kind == "pool_timeout", "unexpected error kind " .. kind)
        end
        assert.equal(1, loaded:value("SELECT 1"))
      end)
      loaded:close()
    end)

    it("memory stays flat over many queries", function()
      local total = tonumber(os.getenv("LOOM_SOAK_QUERIES") or "") or S.soak_queries
      local soak = open({ pool = { max = 4 } })
      loom.run(function()
        local per_task = total // 4
        local function run(n)
          loom.each({ 1, 2, 3, 4 }, function()
            for i = 1, n do soak:value(T.echo, i) end
          end)
        end
        run(per_task // 10)
        collectgarbage(); collectgarbage()
        local before = collectgarbage("count")
        run(per_task - per_task // 10)
        collectgarbage(); collectgarbage()
        local after = collectgarbage("count")
        assert.is_true(after - before < 512, ("Lua heap grew by %.0f KB over %d queries"):format(after - before, total))
      end)
      soak:close()
    end)
  end)
end)
end
