-- PostgreSQL driver, pool and database API against a real server.
-- spec/support/pg.lua starts a throwaway server unless LOOM_PG_URL is set.
local loom = require "loom"
local pg = require "spec.support.pg"

local URL = pg.url()

local function open(opts) return loom.db.open(URL, opts) end

describe("postgres values", function()
  local db
  setup(function() db = open() end)
  teardown(function() db:close() end)

  it("maps types as API.md says", function()
    loom.run(function()
      local r = db:first([[SELECT 1::int2 AS i2, 2::int4 AS i4, 9007199254740993::int8 AS i8,
        1.5::float4 AS f4, 2.25::float8 AS f8, true AS b, 12345678901234567890.123::numeric AS n,
        '\x00ff10'::bytea AS bin, 'héllo'::text AS t, '{"a": 1}'::json AS j, '{"b": 2}'::jsonb AS jb,
        '2024-02-03'::date AS d, '2024-02-03 04:05:06.5'::timestamp AS ts,
        '2024-02-03 04:05:06+00'::timestamptz AS tstz, NULL::int AS nothing,
        ARRAY[1, NULL, 3]::int8[] AS arr, ARRAY['a,b', 'c"d', NULL]::text[] AS tarr,
        ARRAY[1.5, 2.5]::float8[] AS farr, ARRAY[true, false] AS barr]])
      assert.equal(1, r.i2); assert.equal(2, r.i4)
      assert.equal(9007199254740993, r.i8); assert.is_true(math.type(r.i8) == "integer")
      assert.equal(1.5, r.f4); assert.equal(2.25, r.f8)
      assert.is_true(r.b)
      assert.equal("12345678901234567890.123", r.n)
      assert.equal("\0\255\16", r.bin)
      assert.equal("héllo", r.t)
      assert.equal('{"a": 1}', r.j); assert.equal('{"b": 2}', r.jb)
      assert.equal("2024-02-03", r.d)
      assert.equal("2024-02-03T04:05:06.5", r.ts)
      assert.equal("2024-02-03T04:05:06+00", r.tstz)
      assert.equal(loom.null, r.nothing)
      assert.same({ 1, loom.null, 3 }, r.arr)
      assert.same({ "a,b", 'c"d', loom.null }, r.tarr)
      assert.same({ 1.5, 2.5 }, r.farr)
      assert.same({ true, false }, r.barr)
    end)
  end)

  it("round-trips parameters of every kind, loom.null and nil as NULL", function()
    loom.run(function()
      local blob = "a\0b\255"
      local r = db:first("SELECT $1::int8 AS i, $2::float8 AS f, $3::bool AS b, $4::text AS t, $5::bytea AS x, $6::int AS n1, $7::text AS n2",
        math.maxinteger, 0.1, false, "tab\there", blob, loom.null, nil)
      assert.equal(math.maxinteger, r.i); assert.equal(0.1, r.f); assert.is_false(r.b)
      assert.equal("tab\there", r.t); assert.equal(blob, r.x)
      assert.equal(loom.null, r.n1); assert.equal(loom.null, r.n2)
      assert.equal(42, db:value("SELECT $1 + 1", 41))
    end)
  end)

  it("query returns rows and info, exec affected rows, first and value", function()
    loom.run(function()
      db:exec("DROP TABLE IF EXISTS spec_t")
      db:exec("CREATE TABLE spec_t (id int PRIMARY KEY, name text)")
      assert.equal(3, db:exec("INSERT INTO spec_t VALUES (1, 'a'), (2, 'b'), (3, 'c')"))
      local rows, info = db:query("SELECT id, name FROM spec_t ORDER BY id")
      assert.equal(3, #rows)
      assert.same({ "id", "name" }, info.columns)
      assert.same({ id = 2, name = "b" }, rows[2])
      assert.is_nil(db:first("SELECT * FROM spec_t WHERE id = 99"))
      assert.is_nil(db:value("SELECT name FROM spec_t WHERE id = 99"))
      assert.equal("c", db:value("SELECT name FROM spec_t WHERE id = $1", 3))
      assert.equal(2, db:exec("DELETE FROM spec_t WHERE id > $1", 1))
      db:exec("DROP TABLE spec_t")
    end)
  end)

  it("caches prepared statements and survives DISCARD ALL", function()
    loom.run(function()
      local s <close> = db:acquire()
      for i = 1, 5 do assert.equal(i, s:value("SELECT $1::int", i)) end
      local prepared = s:value("SELECT count(*) FROM pg_prepared_statements")
      assert.is_true(prepared >= 1)
      s:exec("DISCARD ALL")
      -- The cache notices the statements are gone and prepares again.
      local ok = pcall(s.value, s, "SELECT $1::int", 6)
      if not ok then assert.equal(7, s:value("SELECT $1::int", 7)) end
      assert.equal(8, s:value("SELECT $1::int", 8))
    end)
  end)
end)

describe("postgres errors", function()
  local db
  setup(function() db = open() end)
  teardown(function() db:close() end)

  it("carry kind, SQLSTATE, message, detail, hint, position and sql", function()
    loom.run(function()
      local ok, e = pcall(db.query, db, "SELECT * FROM no_such_table")
      assert.is_false(ok)
      assert.equal("query", e.kind); assert.equal("42P01", e.code)
      assert.matches("no_such_table", e.message)
      assert.equal(15, e.position); assert.equal("postgres", e.driver)
      assert.equal("SELECT * FROM no_such_table", e.sql)
      assert.matches("^query %[42P01%]", tostring(e))
      db:exec("DROP TABLE IF EXISTS spec_u"); db:exec("CREATE TABLE spec_u (id int PRIMARY KEY)")
      db:exec("INSERT INTO spec_u VALUES (1)")
      ok, e = pcall(db.exec, db, "INSERT INTO spec_u VALUES (1)")
      assert.equal("23505", e.code); assert.matches("already exists", e.detail)
      ok, e = pcall(db.value, db, "SELECT 1 +")
      assert.equal("42601", e.code)
      db:exec("DROP TABLE spec_u")
    end)
  end)

  it("catch a wrong number of parameters and unsupported types before sending", function()
    loom.run(function()
      local ok, e = pcall(db.value, db, "SELECT $1, $2", 1)
      assert.equal("argument", e.kind); assert.matches("takes 2 parameters", e.message)
      ok, e = pcall(db.value, db, "SELECT '$1', $$ $2 $$, 1 -- $3", 1)
      assert.equal("argument", e.kind); assert.matches("takes 0 parameters", e.message)
      ok, e = pcall(db.value, db, "SELECT $1", {})
      assert.equal("argument", e.kind); assert.matches("parameter 1 is a table", e.message)
      ok, e = pcall(db.query, db, 42)
      assert.equal("argument", e.kind)
      assert.equal(1, db:stats().total >= 1 and 1 or 0)
    end)
  end)

  it("never show the password", function()
    local url = pg.url():gsub("^postgres://([^:]+):([^@]+)@", "postgres://%1:wrong-secret-pw@")
    local bad = loom.db.open(url, { pool = { acquire_timeout = 5 } })
    assert.is_falsy(tostring(bad):find("wrong-secret-pw", 1, true))
    local ok, e = pcall(function() return loom.run(function() return bad:value("SELECT 1") end) end)
    assert.is_false(ok)
    assert.equal("connection", e.kind)
    assert.is_falsy(tostring(e):find("wrong-secret-pw", 1, true))
    assert.is_falsy((e.message or ""):find("wrong-secret-pw", 1, true))
    bad:close()
    local other = loom.db.open("postgres://u@127.0.0.1:1/db?password=hunter2")
    assert.is_falsy(tostring(other):find("hunter2", 1, true))
    other:close()
    local ok2, e2 = pcall(loom.db.open, "nosuchdb://u:hunter2@h/db")
    assert.is_false(ok2)
    assert.is_falsy(tostring(e2):find("hunter2", 1, true))
  end)
end)

describe("postgres transactions", function()
  local db
  setup(function()
    db = open({ pool = { max = 4 } })
    loom.run(function()
      db:exec("DROP TABLE IF EXISTS spec_acct")
      db:exec("CREATE TABLE spec_acct (id int PRIMARY KEY, v int)")
      db:exec("INSERT INTO spec_acct VALUES (1, 0)")
    end)
  end)
  teardown(function() loom.run(function() db:exec("DROP TABLE spec_acct") end) db:close() end)

  it("commits, rolls back on error, nests savepoints", function()
    loom.run(function()
      db:transaction(function(tx) tx:exec("UPDATE spec_acct SET v = 1") end)
      assert.equal(1, db:value("SELECT v FROM spec_acct"))
      local ok = pcall(db.transaction, db, function(tx) tx:exec("UPDATE spec_acct SET v = 2") error("no") end)
      assert.is_false(ok)
      assert.equal(1, db:value("SELECT v FROM spec_acct"))
      db:transaction(function(tx)
        tx:exec("UPDATE spec_acct SET v = 10")
        pcall(tx.savepoint, tx, function(sp) sp:exec("UPDATE spec_acct SET v = 20") error("undo me") end)
        assert.equal(10, tx:value("SELECT v FROM spec_acct"))
        -- db calls inside the transaction use its connection
        assert.equal(10, db:value("SELECT v FROM spec_acct"))
      end)
      assert.equal(10, db:value("SELECT v FROM spec_acct"))
    end)
  end)

  it("uses the isolation level and read only", function()
    loom.run(function()
      assert.equal("serializable", db:transaction(function(tx) return tx:value("SHOW transaction_isolation") end, { isolation = "serializable" }))
      local ok, e = pcall(db.transaction, db, function(tx) tx:exec("UPDATE spec_acct SET v = 0") end, { read_only = true })
      assert.equal("25006", e.code)
    end)
  end)

  it("retries serialization failures", function()
    loom.run(function()
      local attempts = 0
      local gate = loom.event()
      loom.each({ 1, 2 }, function(i)
        db:transaction(function(tx)
          attempts = attempts + 1
          local v = tx:value("SELECT v FROM spec_acct WHERE id = 1")
          if i == 1 then gate:wait(1) else gate:set() loom.sleep(0.05) end
          tx:exec("UPDATE spec_acct SET v = $1 WHERE id = 1", v + 1)
        end, { isolation = "serializable", retries = 5 })
      end)
      assert.is_true(attempts >= 3, "one of the two was retried")
      assert.equal(12, db:value("SELECT v FROM spec_acct"))
    end)
  end)

  it("a connection released mid-transaction is rolled back", function()
    loom.run(function()
      local s = db:acquire()
      s:exec("BEGIN")
      s:exec("UPDATE spec_acct SET v = 999")
      s:release()
      loom.sleep(0.05)
      assert.equal(12, db:value("SELECT v FROM spec_acct"))
      -- and whoever gets that connection next is not inside a transaction
      for _ = 1, 4 do
        db:with(function(s2) assert.equal("idle", s2.conn:_txn()) end)
      end
    end)
  end)
end)

describe("postgres sessions, streaming, batches, COPY", function()
  local db
  setup(function() db = open({ pool = { max = 2, acquire_timeout = 1 } }) end)
  teardown(function() db:close() end)

  it("a task holding a connection reuses it instead of deadlocking", function()
    loom.run(function()
      db:with(function(s)
        local me = s:backend_id()
        -- the pool has 2 connections; nested calls must not take the other
        assert.equal(me, db:value("SELECT pg_backend_pid()"))
        db:with(function(inner) assert.equal(me, inner:backend_id()) end)
        db:transaction(function(tx) assert.equal(me, tx:value("SELECT pg_backend_pid()")) end)
      end)
    end)
  end)

  it("times out acquiring with kind pool_timeout", function()
    loom.run(function()
      -- Two other tasks hold both connections.
      local release = loom.event()
      local holders = {}
      for i = 1, 2 do
        holders[i] = loom.spawn(function() db:with(function() release:wait() end) end)
      end
      loom.sleep(0.1)
      local started = loom.now()
      local ok, e = pcall(db.value, db, "SELECT 1")
      assert.equal("pool_timeout", e.kind)
      assert.is_true(loom.now() - started >= 0.9)
      release:set()
      for _, t in ipairs(holders) do t:join() end
      assert.equal(1, db:value("SELECT 1"))
      assert.is_true(db:stats().timeouts >= 1)
    end)
  end)

  it("streams rows one at a time and cleans up after break", function()
    loom.run(function()
      local n = 0
      for row in db:rows("SELECT g FROM generate_series(1, 50000) g") do n = n + row.g end
      assert.equal(50000 * 50001 // 2, n)
      for row in db:rows("SELECT g FROM generate_series(1, 100000000) g") do
        if row.g == 2 then break end
      end
      assert.equal(1, db:value("SELECT 1"))
      assert.equal(0, db:stats().in_use)
      local ok, e = pcall(function() for _ in db:rows("SELECT 1/(g-3) FROM generate_series(1,5) g") do end end)
      assert.equal("22012", e.code)
    end)
  end)

  it("batches statements into one round trip, results in order", function()
    loom.run(function()
      local res = db:batch({ { "SELECT 1 AS a" }, { "SELECT $1::text AS b", "x" }, { "SELECT g FROM generate_series(1,3) g" } })
      assert.equal(1, res[1][1].a); assert.equal("x", res[2][1].b); assert.equal(3, #res[3])
      local ok, e = pcall(db.batch, db, { { "SELECT 1" }, { "SELECT nope" }, { "SELECT 3" } })
      assert.equal("42703", e.code); assert.equal(2, e.batch_index)
      assert.equal(1, db:value("SELECT 1"))
    end)
  end)

  it("insert_many escapes tabs, newlines, backslashes and NULL", function()
    loom.run(function()
      db:exec("DROP TABLE IF EXISTS spec_copy")
      db:exec("CREATE TABLE spec_copy (id int, t text, b bytea, f float8, ok bool)")
      local tricky = "a\tb\nc\\d\re"
      local n = db:insert_many("spec_copy", { "id", "t", "b", "f", "ok" }, {
        { 1, tricky, "x\0y", 0.5, true },
        { id = 2, t = loom.null, ok = false },
        { 3, "\\N", loom.null, 1e300, loom.null },
      })
      assert.equal(3, n)
      local rows = db:query("SELECT * FROM spec_copy ORDER BY id")
      assert.equal(tricky, rows[1].t); assert.equal("x\0y", rows[1].b); assert.equal(0.5, rows[1].f)
      assert.equal(loom.null, rows[2].t); assert.is_false(rows[2].ok)
      assert.equal("\\N", rows[3].t); assert.equal(1e300, rows[3].f)
      local ok, e = pcall(db.insert_many, db, "spec_copy", { "id" }, { { "nope" } })
      assert.equal("22P02", e.code)
      assert.equal(3, db:value("SELECT count(*) FROM spec_copy"))
      db:exec("DROP TABLE spec_copy")
    end)
  end)
end)

describe("postgres cancellation", function()
  local db
  setup(function() db = open({ pool = { max = 2 } }) end)
  teardown(function() db:close() end)

  local function running(sql_fragment)
    return db:value("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()",
      "%" .. sql_fragment .. "%")
  end

  it("a timeout cancels the query on the server and the connection stays usable", function()
    loom.run(function()
      local ok, e = pcall(loom.timeout, 0.1, db.value, db, "SELECT pg_sleep(10) /* spec-timeout */")
      assert.equal("timeout", e.kind)
      assert.equal(0, running("spec-timeout"))
      for _ = 1, 5 do assert.equal(1, db:value("SELECT 1")) end
    end)
  end)

  it("task:cancel cancels the query on the server", function()
    loom.run(function()
      local t = loom.spawn(function() return db:value("SELECT pg_sleep(10) /* spec-cancel */") end)
      loom.sleep(0.1)
      t:cancel("stop it")
      local ok, e = pcall(t.join, t)
      assert.equal("cancelled", e.kind)
      assert.equal(0, running("spec-cancel"))
      assert.equal(2, db:value("SELECT 2"))
    end)
  end)

  it("a late cancel never hits the next query", function()
    loom.run(function()
      -- Cancel right as quick queries finish, many times over.
      for i = 1, 50 do
        pcall(loom.timeout, 0.0005 * (i % 5), db.value, db, "SELECT pg_sleep(0.001)")
        assert.equal(i, db:value("SELECT $1::int", i))
      end
    end)
  end)
end)

describe("postgres listen/notify and advisory locks", function()
  local db
  setup(function() db = open({ pool = { max = 4 } }) end)
  teardown(function() db:close() end)

  it("delivers notifications and tells of gaps after reconnecting", function()
    loom.run(function()
      local ch = db:listen("spec_events")
      db:notify("spec_events", "one")
      local m = loom.timeout(5, ch.recv, ch)
      assert.equal("one", m.payload); assert.equal("spec_events", m.channel)
      assert.is_true(math.type(m.pid) == "integer")
      db:exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'")
      m = loom.timeout(5, ch.recv, ch)
      assert.is_true(m.gap)
      db:notify("spec_events", "two")
      m = loom.timeout(5, ch.recv, ch)
      while m.gap do m = loom.timeout(5, ch.recv, ch) end
      assert.equal("two", m.payload)
      ch:close()
    end)
  end)

  it("lock serializes, times out, and always releases", function()
    loom.run(function()
      local inside, max = 0, 0
      loom.each({ 1, 2, 3 }, function()
        db:lock("spec-lock", function() inside = inside + 1; max = math.max(max, inside); loom.sleep(0.01); inside = inside - 1 end)
      end)
      assert.equal(1, max)
      pcall(db.lock, db, 7, function() error("boom") end)
      assert.equal("free", db:lock(7, function() return "free" end, { timeout = 1 }))
      local t = loom.spawn(function() db:lock(8, function() loom.sleep(10) end) end)
      loom.sleep(0.05)
      local ok, e = pcall(db.lock, db, 8, function() end, { timeout = 0.05 })
      assert.equal("timeout", e.kind)
      t:cancel()
      pcall(t.join, t)
      assert.equal("released on cancel", db:lock(8, function() return "released on cancel" end, { timeout = 1 }))
    end)
  end)
end)
