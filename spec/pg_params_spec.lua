-- PostgreSQL parameters take the type the statement gives them (issue 11):
-- the server infers each one from context, and a Lua value is encoded for
-- that type, as pgx and asyncpg do.
-- spec/support/pg.lua starts a throwaway server unless LOOM_PG_URL is set.
local loom = require "loom"
local pg = require "spec.support.pg"

local URL = pg.url()

local function argument_error(fn, ...)
  local ok, e = pcall(fn, ...)
  assert.is_false(ok, "no error")
  assert.equal("argument", e.kind, tostring(e))
  return e
end

-- The same cases with the statement cache on and off, and on the paths a
-- statement can take: value (prepared and cached, or not), rows (a
-- stream), batch.
for _, cache in ipairs({ true, false }) do
  describe(("postgres parameters, statement_cache = %s:"):format(cache), function()
    local db
    setup(function() db = loom.db.open(URL, { statement_cache = cache, pool = { max = 2 } }) end)
    teardown(function() db:close() end)

    it("integers go to int4, int2 and numeric functions", function()
      loom.run(function()
        for _ = 1, 3 do -- first use prepares; later ones reuse the statement
          assert.equal("xxx", db:value("SELECT repeat('x', $1)", 3))
          assert.equal("2024-02-03", db:value("SELECT make_date($1, $2, $3)", 2024, 2, 3))
          assert.equal("2.3", db:value("SELECT round($1, 1)", 2.25))
          assert.equal("7.0", db:value("SELECT round($1, 1)", 7))
          assert.equal(12, db:value("SELECT $1::int2 * 2", 6))
          assert.equal(42, db:value("SELECT $1 + 1", 41))
          assert.equal(false, db:value("SELECT pg_terminate_backend($1)", 1))
        end
      end)
    end)

    it("the same SQL takes an integer one time and a float the next", function()
      loom.run(function()
        assert.equal(1.0, db:value("SELECT $1::float8", 1))
        assert.equal(1.5, db:value("SELECT $1::float8", 1.5))
        assert.equal("3", db:value("SELECT $1::numeric", 3))
        assert.equal("0.1", db:value("SELECT $1::numeric", 0.1))
        assert.equal("NaN", db:value("SELECT $1::numeric", 0 / 0))
        assert.equal(math.maxinteger, db:value("SELECT $1::int8", math.maxinteger))
        assert.equal(math.mininteger, db:value("SELECT $1::int8", math.mininteger))
        assert.equal(9007199254740992, db:value("SELECT $1::int8", 2.0 ^ 53))
        assert.equal(3, db:value("SELECT $1::int4", 3.0))
        assert.equal(-32768, db:value("SELECT $1::int2", -32768))
      end)
    end)

    it("strings go to bytea as they are, backslashes and NUL bytes included", function()
      loom.run(function()
        assert.equal("a\\b", db:value("SELECT $1::bytea", "a\\b"))
        assert.equal("\\x00", db:value("SELECT $1::bytea", "\\x00"))
        assert.equal("a\0b\255", db:value("SELECT $1::bytea", "a\0b\255"))
        assert.equal(4, db:value("SELECT length($1::bytea)", "a\0b\255"))
      end)
    end)

    it("booleans and loom.null go anywhere the server accepts them", function()
      loom.run(function()
        assert.equal(true, db:value("SELECT $1::bool", true))
        assert.equal(false, db:value("SELECT NOT $1", true))
        assert.equal(loom.null, db:value("SELECT $1::int", loom.null))
        assert.equal(loom.null, db:value("SELECT repeat('x', $1)", nil))
        assert.equal("{\"a\" : true}", db:value("SELECT json_build_object('a', $1::bool)::text", true))
      end)
    end)

    it("an unconstrained parameter is text: what the README says `select $1` gives", function()
      loom.run(function()
        assert.equal("42", db:value("SELECT $1", 42))
        assert.equal("1.5", db:value("SELECT $1", 1.5))
        assert.equal("0.1", db:value("SELECT $1", 0.1))
        assert.equal("2", db:value("SELECT $1", 2.0))
        assert.equal("true", db:value("SELECT $1", true))
        assert.equal("héllo", db:value("SELECT $1", "héllo"))
        assert.equal("-9223372036854775808", db:value("SELECT $1", math.mininteger))
      end)
    end)

    it("streams and batches infer the same types", function()
      loom.run(function()
        local got = {}
        for r in db:rows("SELECT g, repeat('y', $1) AS s FROM generate_series(1, $2) g", 2, 3) do
          got[#got + 1] = r.s
        end
        assert.same({ "yy", "yy", "yy" }, got)
        local res = db:batch({
          { "SELECT repeat('z', $1) AS s", 4 },
          { "SELECT make_date($1, $2, $3) AS d", 2020, 1, 31 },
          { "SELECT repeat('z', $1) AS s", 1 },
        })
        assert.same({ { { s = "zzzz" } }, { { d = "2020-01-31" } }, { { s = "z" } } }, res)
      end)
    end)

    it("writes into int2, int4, numeric, bytea and bool columns", function()
      loom.run(function()
        local t = "spec_params_" .. (cache and "c" or "n")
        db:exec("DROP TABLE IF EXISTS " .. t)
        db:exec("CREATE TABLE " .. t .. " (a int2, b int4, c numeric, d bytea, e bool, f float4)")
        assert.equal(1,
          db:exec("INSERT INTO " .. t .. " VALUES ($1, $2, $3, $4, $5, $6)", 7, 70000, 1.25, "x\\y", true, 0.5))
        local r = db:first("SELECT * FROM " .. t)
        assert.same({ a = 7, b = 70000, c = "1.25", d = "x\\y", e = true, f = 0.5 }, r)
        assert.equal(1, db:exec("UPDATE " .. t .. " SET a = a + $1 WHERE b = $2", 1, 70000))
        assert.equal(8, db:value("SELECT a FROM " .. t))
        db:exec("DROP TABLE " .. t)
      end)
    end)
  end)
end

-- With the cache the driver knows each parameter's type before sending and
-- refuses what cannot fit, naming the parameter; without it the server
-- does the same check (SQLSTATE 22003, 22P02).
describe("postgres parameters that cannot fit", function()
  local db
  setup(function() db = loom.db.open(URL, { pool = { max = 1 } }) end)
  teardown(function() db:close() end)

  it("are argument errors naming the parameter, on first use and after", function()
    loom.run(function()
      for _ = 1, 2 do
        local e = argument_error(db.value, db, "SELECT repeat('x', $1)", 2147483648)
        assert.matches("parameter $1", e.message, 1, true)
        assert.matches("int4", e.message, 1, true)
        e = argument_error(db.value, db, "SELECT make_date($1, $2, $3)", 2024, 2, 3.5)
        assert.matches("parameter $3", e.message, 1, true)
        e = argument_error(db.value, db, "SELECT $1::int2", 32768)
        assert.matches("parameter $1", e.message, 1, true)
        e = argument_error(db.value, db, "SELECT $1::int8", 2.0 ^ 63)
        assert.matches("parameter $1", e.message, 1, true)
        e = argument_error(db.value, db, "SELECT $1::text", "a\0b")
        assert.matches("parameter $1", e.message, 1, true)
        -- the statement and the connection are fine for the next call
        assert.equal("xx", db:value("SELECT repeat('x', $1)", 2))
      end
    end)
  end)

  it("in a batch, fail the batch before anything runs", function()
    loom.run(function()
      db:exec("DROP TABLE IF EXISTS spec_params_b")
      db:exec("CREATE TABLE spec_params_b (v int4)")
      local e = argument_error(db.batch, db, {
        { "INSERT INTO spec_params_b VALUES ($1)", 1 },
        { "INSERT INTO spec_params_b VALUES ($1)", 1 << 40 },
      })
      assert.matches("parameter $1", e.message, 1, true)
      assert.equal(0, db:value("SELECT count(*) FROM spec_params_b"))
      db:exec("DROP TABLE spec_params_b")
    end)
  end)

  it("a statement the server cannot prepare reports the server's error", function()
    loom.run(function()
      local ok, e = pcall(db.value, db, "SELECT no_such_function($1)", 1)
      assert.is_false(ok)
      assert.equal("query", e.kind)
      assert.equal("42883", e.code)
      assert.equal(1, db:value("SELECT 1"))
    end)
  end)
end)
