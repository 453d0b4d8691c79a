-- What only the MySQL/MariaDB driver does, against a real server: its
-- types through both protocols, statements it cannot prepare, its quoting,
-- session resets, TLS, packets and KILL QUERY. What every driver does is in
-- db_conformance_spec.lua.
-- spec/support/my.lua starts a throwaway MariaDB unless LOOM_MYSQL_URL is set.
local loom = require "loom"
local my = require "spec.support.my"
local drivers = require "spec.support.drivers"

local URL = my.url()

local function open(opts) return loom.db.open(URL, opts) end

local TYPES_DDL = [[CREATE TABLE spec_types (
  id INT PRIMARY KEY, ti TINYINT, si SMALLINT, i INT, bi BIGINT, ubi BIGINT UNSIGNED,
  dec30 DECIMAL(30,3), f FLOAT, d DOUBLE, t TEXT, bl BLOB, vb VARBINARY(10), dt DATE,
  dtm DATETIME(6), ts TIMESTAMP NULL, tm TIME(3), bits BIT(8), yr YEAR, js JSON, nothing INT)]]

local function check_types(r)
  assert.equal(-1, r.ti); assert.equal(300, r.si); assert.equal(70000, r.i)
  assert.equal(9007199254740993, r.bi); assert.equal("integer", math.type(r.bi))
  assert.equal("18446744073709551615", r.ubi)
  assert.equal("12345678901234567890.123", r.dec30)
  assert.equal(0.1, r.f); assert.equal(2.25, r.d)
  assert.equal("héllo\0wörld", r.t)
  assert.equal("\0\255\16", r.bl); assert.equal("a\0b", r.vb)
  assert.equal("2024-02-03", r.dt)
  assert.equal("2024-02-03T04:05:06.5", r.dtm)
  assert.equal("2024-02-03T04:05:07", r.ts)
  assert.equal("-01:02:03.25", r.tm)
  assert.equal(255, r.bits); assert.equal(2024, r.yr)
  assert.equal('{"a": 1}', r.js)
  assert.equal(loom.null, r.nothing)
end

describe("mysql values", function()
  local db, text
  setup(function()
    db = open()
    text = open({ statement_cache = false }) -- statements without parameters go as plain text
    loom.run(function()
      db:exec("DROP TABLE IF EXISTS spec_types")
      db:exec(TYPES_DDL)
      db:exec([[INSERT INTO spec_types VALUES (1, -1, 300, 70000, 9007199254740993, 18446744073709551615,
        12345678901234567890.123, ?, 2.25, ?, ?, ?, '2024-02-03', '2024-02-03 04:05:06.5',
        '2024-02-03 04:05:07', '-01:02:03.25', b'11111111', 2024, '{"a": 1}', NULL)]],
        0.1, "héllo\0wörld", "\0\255\16", "a\0b")
    end)
  end)
  teardown(function()
    loom.run(function() db:exec("DROP TABLE spec_types") end)
    db:close(); text:close()
  end)

  it("maps types exactly through prepared statements (binary protocol)", function()
    loom.run(function() check_types(db:first("SELECT * FROM spec_types WHERE id = ?", 1)) end)
  end)

  it("maps types the same through the text protocol", function()
    loom.run(function() check_types(text:first("SELECT * FROM spec_types WHERE id = 1")) end)
  end)

  it("streams the same types", function()
    loom.run(function()
      for r in db:rows("SELECT * FROM spec_types") do check_types(r) end
      for r in db:rows("SELECT * FROM spec_types WHERE id = ?", 1) do check_types(r) end
    end)
  end)

  it("round-trips values far larger than the fetch buffers", function()
    loom.run(function()
      db:exec("DROP TABLE IF EXISTS spec_big")
      db:exec("CREATE TABLE spec_big (id INT, b LONGBLOB)")
      local big = ("\0abc\255"):rep(300000)
      db:exec("INSERT INTO spec_big VALUES (1, ?), (2, 'short'), (3, ?)", big, big .. "x")
      local rows = db:query("SELECT b FROM spec_big ORDER BY id")
      assert.equal(big, rows[1].b); assert.equal("short", rows[2].b); assert.equal(big .. "x", rows[3].b)
      local n = 0
      for r in db:rows("SELECT b FROM spec_big ORDER BY id") do n = n + #r.b end
      assert.equal(#big * 2 + 6, n)
      db:exec("DROP TABLE spec_big")
    end)
  end)

  it("prepares a statement once per connection and reuses it", function()
    loom.run(function()
      local s <close> = db:acquire()
      local function prepares()
        return tonumber(s:first("SHOW SESSION STATUS LIKE 'Com_stmt_prepare'").Value)
      end
      s:value("SELECT ? * 2", 0)
      local before = prepares()
      for i = 1, 20 do assert.equal(i * 2, s:value("SELECT ? * 2", i)) end
      -- only the SHOW itself (prepared the first time above) may count
      assert.is_true(prepares() - before <= 1)
    end)
  end)

  it("runs statements the server cannot prepare as text", function()
    loom.run(function()
      local rows = db:query("SHOW DATABASES")
      assert.is_true(#rows >= 1)
      assert.equal(1, db:value("SELECT 1"))
    end)
  end)
end)

describe("mysql errors", function()
  local db
  setup(function() db = open() end)
  teardown(function() db:close() end)

  it("count no placeholder inside quotes, backquotes or comments", function()
    loom.run(function()
      local ok, e = pcall(db.value, db, "SELECT '?', \"?\", `a?` FROM (SELECT 1 AS `a?`) t -- ?\n # ?\n /* ? */", 1)
      assert.is_false(ok)
      assert.equal("argument", e.kind); assert.matches("takes 0 parameters", e.message)
      assert.equal("it's ?", db:value("SELECT 'it\\'s ?' /* ? */"))
    end)
  end)

  it("never show a password given with options the driver refuses", function()
    local ok2, e2 = pcall(loom.db.open, "mysql://u:hunter2@127.0.0.1:1/db?nonsense=1")
    if ok2 then
      ok2, e2 = pcall(function() return loom.run(function() return e2:value("SELECT 1") end) end)
    end
    assert.is_false(ok2)
    assert.is_falsy(tostring(e2):find("hunter2", 1, true))
  end)

  it("a server that cannot be reached is kind connection", function()
    local db2 = loom.db.open("mysql://u:p@127.0.0.1:1/db", { pool = { acquire_timeout = 5 } })
    local ok, e = pcall(function() return loom.run(function() return db2:value("SELECT 1") end) end)
    assert.is_false(ok); assert.equal("connection", e.kind)
    db2:close()
    db2 = loom.db.open("mysql://u:p@no-such-host.invalid/db", { pool = { acquire_timeout = 5 } })
    ok, e = pcall(function() return loom.run(function() return db2:value("SELECT 1") end) end)
    assert.is_false(ok); assert.equal("connection", e.kind); assert.matches("resolve", e.message)
    db2:close()
  end)
end)

describe("mysql transactions", function()
  local db
  setup(function()
    db = open({ pool = { max = 4 } })
    loom.run(function()
      db:exec("DROP TABLE IF EXISTS spec_acct")
      db:exec("CREATE TABLE spec_acct (id INT PRIMARY KEY, v INT) ENGINE=InnoDB")
      db:exec("INSERT INTO spec_acct VALUES (1, 0), (2, 0)")
    end)
  end)
  teardown(function() loom.run(function() db:exec("DROP TABLE spec_acct") end) db:close() end)

  it("uses the isolation level for that transaction only", function()
    loom.run(function()
      local holder_in, holder_done = loom.event(), loom.event()
      local holder = loom.spawn(function()
        db:transaction(function(tx)
          tx:exec("UPDATE spec_acct SET v = 555 WHERE id = 2")
          holder_in:set()
          holder_done:wait(5)
          error("roll back")
        end)
      end)
      holder_in:wait(5)
      assert.equal(555, db:transaction(function(tx)
        return tx:value("SELECT v FROM spec_acct WHERE id = 2")
      end, { isolation = "read uncommitted" }))
      assert.equal(0, db:transaction(function(tx)
        return tx:value("SELECT v FROM spec_acct WHERE id = 2")
      end))
      holder_done:set()
      pcall(holder.join, holder)
    end)
  end)

  it("retries deadlocks (1213)", function()
    loom.run(function()
      local attempts = 0
      local a, b = loom.event(), loom.event()
      loom.each({ 1, 2 }, function(i)
        local first, second = i, 3 - i
        db:transaction(function(tx)
          attempts = attempts + 1
          tx:exec("UPDATE spec_acct SET v = v + 1 WHERE id = ?", first)
          if i == 1 then a:set() b:wait(1) else b:set() a:wait(1) end
          loom.sleep(0.05)
          tx:exec("UPDATE spec_acct SET v = v + 1 WHERE id = ?", second)
        end, { retries = 5, backoff = 0.02 })
      end)
      assert.is_true(attempts >= 3, "one of the two was retried")
      assert.equal(2, db:value("SELECT v FROM spec_acct WHERE id = 1"))
      assert.equal(2, db:value("SELECT v FROM spec_acct WHERE id = 2"))
    end)
  end)
end)

describe("mysql sessions", function()
  it("no session state reaches the next user of a connection", function()
    local db = open({ pool = { max = 1 } })
    loom.run(function()
      local id
      db:with(function(s)
        id = s:value("SELECT CONNECTION_ID()")
        s:exec("SET @secret = 'mine'")
        s:exec("SET SESSION sql_mode = 'ANSI_QUOTES'")
        assert.equal(1, s:value("SELECT GET_LOCK('spec-held', 0)"))
        s:exec("CREATE TEMPORARY TABLE spec_tmp (x INT)")
        s:exec("START TRANSACTION")
      end)
      db:with(function(s)
        assert.equal(id, s:value("SELECT CONNECTION_ID()"), "the same connection, reset")
        assert.equal(loom.null, s:value("SELECT @secret"))
        assert.is_falsy(s:value("SELECT @@SESSION.sql_mode"):find("ANSI_QUOTES"))
        assert.equal(1, s:value("SELECT IS_FREE_LOCK('spec-held')"))
        assert.equal("idle", s.conn:_txn())
        local ok = pcall(s.value, s, "SELECT * FROM spec_tmp")
        assert.is_false(ok)
        -- and statements prepared after the reset work
        assert.equal(5, s:value("SELECT ? + 2", 3))
      end)
    end)
    db:close()
  end)

  it("connects over TLS when the URL asks", function()
    local db = loom.db.open(my.tls_url())
    loom.run(function()
      local r = db:first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
      assert.is_true(#r.Value > 0, "a TLS cipher is in use")
      for i = 1, 20 do assert.equal(i, db:value("SELECT ?", i)) end
      local n = 0
      for row in db:rows("SELECT seq FROM seq_1_to_20000") do n = n + row.seq end
      assert.equal(20000 * 20001 // 2, n)
    end)
    db:close()
  end)
end)

describe("mysql insert_many", function()
  local db
  setup(function() db = open({ pool = { max = 2 } }) end)
  teardown(function() db:close() end)

  it("insert_many splits rows large enough to need several packets", function()
    loom.run(function()
      db:exec("DROP TABLE IF EXISTS spec_many")
      db:exec("CREATE TABLE spec_many (id INT PRIMARY KEY, b MEDIUMBLOB)")
      local big = {}
      local blob = ("z"):rep(100000)
      for i = 1, 300 do big[i] = { i, blob } end
      assert.equal(300, db:insert_many("spec_many", { "id", "b" }, big))
      assert.equal(300 * 100000, db:value("SELECT CAST(SUM(LENGTH(b)) AS SIGNED) FROM spec_many"))
      db:exec("DROP TABLE spec_many")
    end)
  end)
end)

describe("mysql cancellation", function()
  local db, admin
  setup(function() db = open({ pool = { max = 2 } }); admin = loom.db.open(my.admin_url()) end)
  teardown(function() db:close(); admin:close() end)

  -- How many statements with fragment still run on the server.
  local function running(fragment) return drivers.dialects.mysql.server.running(admin, fragment) end

  it("a long statement is interrupted, not left running", function()
    loom.run(function()
      local ok, e = pcall(loom.timeout, 0.3, db.value, db,
        "SELECT COUNT(*) FROM seq_1_to_1000000 a, seq_1_to_1000000 b /* spec-heavy */")
      assert.is_false(ok)
      assert.equal("timeout", e.kind)
      assert.equal(0, running("spec-heavy"))
      assert.equal(1, db:value("SELECT 1"))
    end)
  end)

  it("a stream cancelled midway leaves the connection clean", function()
    loom.run(function()
      local n = 0
      local ok, e = pcall(loom.timeout, 0.2, function()
        for _ in db:rows("SELECT seq, REPEAT('x', 2000), SLEEP(0.002) FROM seq_1_to_100000 /* spec-stream */") do
          n = n + 1
        end
      end)
      assert.is_false(ok)
      assert.equal("timeout", e.kind)
      assert.is_true(n > 0)
      assert.equal(0, running("spec-stream"))
      assert.equal(7, db:value("SELECT ?", 7))
    end)
  end)
end)

