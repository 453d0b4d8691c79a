-- PostgreSQL defects found by adversarial testing (issue 10): each case
-- failed (or crashed the process) before its fix.
-- spec/support/pg.lua starts a throwaway server unless LOOM_PG_URL is set.
local loom = require "loom"
local pg = require "spec.support.pg"

local URL = pg.url()

local function open(opts) return loom.db.open(URL, opts) end

-- One connection, so every statement below runs on the connection the
-- one before it left behind.
describe("postgres: a stream leaves nothing behind on its connection", function()
  local db
  setup(function() db = open({ pool = { max = 1 } }) end)
  teardown(function() db:close() end)

  local function pid() return db:value("SELECT pg_backend_pid()") end

  it("rows run to the end, then a batch, round after round", function()
    loom.run(function()
      local me = pid()
      for i = 1, 5 do
        local n = 0
        for r in db:rows("SELECT 1 AS one") do n = n + r.one end
        assert.equal(1, n)
        local res = db:batch({ { "SELECT 1 AS one" }, { "SELECT $1::int AS i", i } })
        assert.same({ { { one = 1 } }, { { i = i } } }, res)
      end
      assert.equal(me, pid())
    end)
  end)

  it("rows run to the end, then value, query, first, exec, transaction and batch", function()
    loom.run(function()
      local me = pid()
      local stream = "SELECT g FROM generate_series(1, 3) g"
      local steps = {
        function() assert.equal(7, db:value("SELECT 7")) end,
        function() assert.equal(3, #db:query(stream)) end,
        function() assert.equal(1, db:first(stream).g) end,
        function() assert.equal(1, db:exec("SELECT 1")) end,
        function()
          assert.equal(2, db:transaction(function(tx) return tx:value("SELECT 2") end))
        end,
        function()
          db:with(function(s) assert.same({ { { g = 1 }, { g = 2 }, { g = 3 } } }, s:batch({ { stream } })) end)
        end,
      }
      for _ = 1, 2 do
        for _, step in ipairs(steps) do
          local n = 0
          for _ in db:rows(stream) do n = n + 1 end
          assert.equal(3, n)
          step()
        end
      end
      assert.equal(me, pid())
    end)
  end)

  it("rows left early, or ended by an error, then a batch", function()
    loom.run(function()
      local me = pid()
      for _ = 1, 3 do
        for r in db:rows("SELECT g FROM generate_series(1, 100000) g") do
          if r.g == 2 then break end
        end
        assert.same({ { { a = 1 } } }, db:batch({ { "SELECT 1 AS a" } }))
        local ok, e = pcall(function()
          for _ in db:rows("SELECT 1 / (g - 3) FROM generate_series(1, 5) g") do end
        end)
        assert.is_false(ok); assert.equal("22012", e.code)
        assert.same({ { { a = 1 } } }, db:batch({ { "SELECT 1 AS a" } }))
      end
      assert.equal(me, pid())
    end)
  end)

  it("without the statement cache too", function()
    loom.run(function()
      local nocache = open({ pool = { max = 1 }, statement_cache = false })
      for i = 1, 3 do
        for _ in nocache:rows("SELECT 1") do end
        assert.same({ { { i = i } } }, nocache:batch({ { "SELECT $1::int AS i", i } }))
        for _ in nocache:rows("SELECT 1") do end
        assert.equal(i, nocache:value("SELECT $1::int", i))
      end
      nocache:close()
    end)
  end)

  it("a mixed run of rows, batch and value on one connection", function()
    loom.run(function()
      local me = pid()
      for i = 1, 60 do
        local k = i % 3
        if k == 0 then
          for _ in db:rows("SELECT g FROM generate_series(1, $1::int) g", i % 4) do end
        elseif k == 1 then
          assert.equal(i, db:batch({ { "SELECT $1::int AS i", i } })[1][1].i)
        else
          assert.equal(i, db:value("SELECT $1::int", i))
        end
      end
      assert.equal(me, pid())
    end)
  end)
end)

describe("postgres: more parameters than the protocol carries", function()
  local db
  setup(function() db = open({ pool = { max = 1 } }) end)
  teardown(function() db:close() end)

  local function statement(n)
    local parts, args = {}, {}
    for i = 1, n do parts[i] = "$" .. i; args[i] = i end
    return "SELECT cardinality(ARRAY[" .. table.concat(parts, ",") .. "]::int8[])", args
  end

  it("are refused with kind argument before sending; the connection stays", function()
    loom.run(function()
      local me = db:value("SELECT pg_backend_pid()")
      local sql, args = statement(65536)
      local function refused(ok, e)
        assert.is_false(ok)
        assert.equal("argument", e.kind)
        assert.matches("65535", e.message)
        assert.equal(me, db:value("SELECT pg_backend_pid()"))
      end
      refused(pcall(db.value, db, sql, table.unpack(args)))
      refused(pcall(db.batch, db, { { "SELECT 1" }, { sql, table.unpack(args) } }))
      refused(pcall(function() for _ in db:rows(sql, table.unpack(args)) do end end))
      local nocache = open({ pool = { max = 1 }, statement_cache = false })
      local ok, e = pcall(nocache.value, nocache, sql, table.unpack(args))
      assert.is_false(ok)
      assert.equal("argument", e.kind)
      assert.equal(1, nocache:value("SELECT 1"))
      nocache:close()
      -- The most the protocol carries still works.
      sql, args = statement(65535)
      assert.equal(65535, db:value(sql, table.unpack(args)))
      assert.equal(me, db:value("SELECT pg_backend_pid()"))
      assert.equal(1, db:stats().created)
    end)
  end)
end)

describe("postgres: listen/notify names and lock keys", function()
  local db
  setup(function() db = open({ pool = { max = 2 } }) end)
  teardown(function() db:close() end)

  local function refused(what, pattern, f, ...)
    local ok, e = pcall(f, ...)
    assert.is_false(ok, what)
    assert.equal("argument", e.kind, what)
    assert.matches(pattern, e.message, 1, true)
  end

  it("a channel name PostgreSQL would truncate is refused, 63 bytes works", function()
    loom.run(function()
      refused("64 bytes", "63", db.listen, db, ("c"):rep(64))
      refused("multibyte", "63", db.listen, db, ("é"):rep(32))
      local name = ("d"):rep(63)
      local ch = db:listen(name)
      db:notify(name, "at the limit")
      local m = loom.timeout(5, ch.recv, ch)
      assert.equal("at the limit", m.payload); assert.equal(name, m.channel)
      ch:close()
    end)
  end)

  it("NUL bytes in names, payloads and lock keys are refused with kind argument", function()
    loom.run(function()
      refused("listen", "NUL", db.listen, db, "a\0b")
      refused("notify channel", "NUL", db.notify, db, "a\0b", "x")
      refused("notify payload", "NUL", db.notify, db, "spec_nul", "x\0y")
      refused("lock key", "NUL", db.lock, db, "k\0ey", function() end)
      assert.equal("ok", db:lock("key", function() return "ok" end))
    end)
  end)

  -- Each on a db of its own: a listener of its own, whose connection the
  -- test ends.
  local function reconnects(prepare)
    loom.run(function()
      local own = open()
      local ch = own:listen("spec_reconnect")
      prepare(own)
      own:exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'")
      local m = loom.timeout(5, ch.recv, ch)
      assert.is_true(m.gap)
      own:notify("spec_reconnect", "still here")
      m = loom.timeout(5, ch.recv, ch)
      while m.gap do m = loom.timeout(5, ch.recv, ch) end
      assert.equal("still here", m.payload)
      own:close()
    end)
  end

  it("a refused name does not break the listener's reconnect", function()
    reconnects(function(own)
      pcall(own.listen, own, "a\0b")
      pcall(own.listen, own, ("c"):rep(64))
    end)
  end)

  it("a closed subscription does not break the listener's reconnect", function()
    reconnects(function(own) own:listen("spec_closed"):close() end)
  end)
end)

describe("postgres: values", function()
  local db
  setup(function() db = open() end)
  teardown(function() db:close() end)

  it("multi-dimensional arrays come back as nested tables", function()
    loom.run(function()
      local N = loom.null
      local r = db:first([==[SELECT '{{1,2},{3,4}}'::int[] AS i2,
        '{{{1},{2}},{{3},{4}}}'::int8[] AS i3,
        ARRAY[['a', NULL], ['b"c', 'd,e'], ['{x}', '}']]::text[] AS t2,
        ARRAY[['\', ' sp '], ['NULL', '']]::text[] AS t2q,
        '[0:1][1:2]={{1,2},{3,4}}'::int[] AS bounds,
        '{{1.5,NULL},{NaN,-2}}'::float8[] AS f2,
        '{{t,f}}'::bool[] AS b2,
        '{}'::int[][] AS empty]==])
      assert.same({ { 1, 2 }, { 3, 4 } }, r.i2)
      assert.same({ { { 1 }, { 2 } }, { { 3 }, { 4 } } }, r.i3)
      assert.same({ { "a", N }, { 'b"c', "d,e" }, { "{x}", "}" } }, r.t2)
      assert.same({ { "\\", " sp " }, { "NULL", "" } }, r.t2q)
      assert.same({ { 1, 2 }, { 3, 4 } }, r.bounds)
      assert.equal(1.5, r.f2[1][1]); assert.equal(N, r.f2[1][2])
      assert.is_true(r.f2[2][1] ~= r.f2[2][1]); assert.equal(-2, r.f2[2][2])
      assert.same({ { true, false } }, r.b2)
      assert.same({}, r.empty)
      -- A streamed row decodes the same way.
      for row in db:rows("SELECT '{{5,6}}'::int[] AS a") do assert.same({ { 5, 6 } }, row.a) end
    end)
  end)

  it("insert_many writes NaN and infinities as PostgreSQL spells them", function()
    loom.run(function()
      db:exec("DROP TABLE IF EXISTS spec_nan")
      db:exec("CREATE TABLE spec_nan (id int, f float8, t text)")
      local inf = math.huge
      db:insert_many("spec_nan", { "id", "f", "t" },
        { { 1, 0 / 0, 0 / 0 }, { 2, inf, inf }, { 3, -inf, -inf }, { 4, -(0 / 0), -(0 / 0) } })
      local rows = db:query("SELECT id, f::text AS f, t FROM spec_nan ORDER BY id")
      assert.same({ { id = 1, f = "NaN", t = "NaN" }, { id = 2, f = "Infinity", t = "Infinity" },
        { id = 3, f = "-Infinity", t = "-Infinity" }, { id = 4, f = "NaN", t = "NaN" } }, rows)
      -- The same as exec writes. (One parameter per column: the server types
      -- each parameter from its use, and one cannot be float8 and text.)
      db:exec("INSERT INTO spec_nan VALUES (5, $1, $2), (6, $3, $4), (7, $5, $6)", 0 / 0, 0 / 0, inf, inf, -inf, -inf)
      rows = db:query("SELECT f::text AS f FROM spec_nan WHERE id >= 5 ORDER BY id")
      assert.same({ { f = "NaN" }, { f = "Infinity" }, { f = "-Infinity" } }, rows)
      db:exec("DROP TABLE spec_nan")
    end)
  end)
end)

-- Found by bench/soak.lua: a batch naming the same SQL twice prepared it
-- twice in one pipeline ("prepared statement loom_1 already exists").
describe("postgres: a batch that repeats a statement", function()
  it("prepares it once, first use and later, with cancels in between", function()
    local db = open({ pool = { max = 1 } })
    loom.run(function()
      local list = { { "SELECT $1::int AS i", 1 }, { "SELECT 2 AS i" }, { "SELECT $1::int AS i", 3 } }
      for _ = 1, 3 do
        assert.same({ { { i = 1 } }, { { i = 2 } }, { { i = 3 } } }, db:batch(list))
      end
      -- A batch cut short by a timeout leaves the cache consistent: the
      -- next ones still prepare (or reuse) each statement exactly once.
      for round = 1, 200 do
        local fresh = { { "SELECT $1::int + " .. round .. " AS i", 1 }, { "SELECT pg_sleep(0.0005)" },
                        { "SELECT $1::int + " .. round .. " AS i", 3 } }
        pcall(loom.timeout, (round % 7) * 0.0003, db.batch, db, fresh)
        local r = db:batch(fresh)
        assert.equal(round + 1, r[1][1].i)
        assert.equal(round + 3, r[3][1].i)
      end
    end)
    db:close()
  end)
end)

-- Found by the test run under LeakSanitizer: a listener given up while it
-- connected (its task cancelled, or the handle closed) left the connect to
-- the driver with nobody to close what it opened, and the request lived
-- in the listener's userdata, collected while the driver still held it.
describe("postgres: a listener given up while it connects", function()
  local child = require "spec.support.child"
  local net = require "spec.support.net"

  it("leaves nothing behind, cancelled or abandoned at exit", function()
    -- It takes the TCP connect and never answers: libpq waits for the
    -- server's first word until connect_timeout.
    local port, stop = net.mute_server("silent")
    local url = ("postgres://loom:pw@127.0.0.1:%s/loom?connect_timeout=1"):format(port)
    local ok, out = child.run(([[
      local loom = require "loom"
      local db = loom.db.open(%q)
      loom.run(function()
        -- Cancelled while connecting, then the connect times out later.
        local t = loom.spawn(function() return db:listen("a") end)
        loom.sleep(0.2)
        t:cancel()
        assert(not pcall(t.join, t))
        loom.sleep(1.5)
        -- Still connecting when run returns and the handle is dropped.
        loom.spawn(function() return db:listen("b") end)
        loom.sleep(0.2)
      end)
      db = nil
      collectgarbage(); collectgarbage()
      print("child done")
    ]]):format(url), 60)
    stop()
    assert.is_true(ok, out)
    assert.is_truthy(out:find("child done", 1, true), out)
  end)
end)
