-- What only the PostgreSQL driver does, against a real server: its types,
-- statement cache, error fields, dollar quoting, isolation levels, COPY and
-- LISTEN/NOTIFY. What every driver does is in db_conformance_spec.lua.
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

  it("carry the position in the SQL and the detail", function()
    loom.run(function()
      local ok, e = pcall(db.query, db, "SELECT * FROM no_such_table")
      assert.is_false(ok)
      assert.equal("42P01", e.code); assert.equal(15, e.position)
      assert.equal("SELECT * FROM no_such_table", e.sql)
      db:exec("DROP TABLE IF EXISTS spec_u"); db:exec("CREATE TABLE spec_u (id int PRIMARY KEY)")
      db:exec("INSERT INTO spec_u VALUES (1)")
      ok, e = pcall(db.exec, db, "INSERT INTO spec_u VALUES (1)")
      assert.is_false(ok)
      assert.equal("23505", e.code); assert.matches("already exists", e.detail)
      db:exec("DROP TABLE spec_u")
    end)
  end)

  it("count no placeholder inside quotes, dollar quotes or comments", function()
    loom.run(function()
      local ok, e = pcall(db.value, db, "SELECT '$1', $$ $2 $$, 1 -- $3", 1)
      assert.is_false(ok)
      assert.equal("argument", e.kind); assert.matches("takes 0 parameters", e.message)
    end)
  end)

  it("never show a password given as a URL parameter, or with an unknown scheme", function()
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

  it("uses the isolation level", function()
    loom.run(function()
      assert.equal("serializable", db:transaction(function(tx) return tx:value("SHOW transaction_isolation") end,
        { isolation = "serializable" }))
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
      assert.equal(2, db:value("SELECT v FROM spec_acct"))
    end)
  end)
end)

describe("postgres COPY", function()
  local db
  setup(function() db = open() end)
  teardown(function() db:close() end)

  it("insert_many fails whole on a value the server cannot read", function()
    loom.run(function()
      db:exec("DROP TABLE IF EXISTS spec_copy")
      db:exec("CREATE TABLE spec_copy (id int)")
      assert.equal(2, db:insert_many("spec_copy", { "id" }, { { 1 }, { 2 } }))
      local ok, e = pcall(db.insert_many, db, "spec_copy", { "id" }, { { 3 }, { "nope" } })
      assert.is_false(ok)
      assert.equal("22P02", e.code)
      assert.equal(2, db:value("SELECT count(*) FROM spec_copy"))
      db:exec("DROP TABLE spec_copy")
    end)
  end)
end)

describe("postgres listen/notify", function()
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
end)
