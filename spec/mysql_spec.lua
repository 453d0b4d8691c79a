-- MySQL/MariaDB driver, pool and database API against a real server.
-- spec/support/my.lua starts a throwaway MariaDB unless LOOM_MYSQL_URL is set.
local loom = require "loom"
local my = require "spec.support.my"

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

  it("round-trips parameters of every kind, loom.null and nil as NULL", function()
    loom.run(function()
      local blob = "a\0b\255"
      local r = db:first("SELECT ? AS i, ? AS f, ? AS b, ? AS t, ? AS x, ? AS n1, ? AS n2",
        math.maxinteger, 0.1, false, "tab\there", blob, loom.null, nil)
      assert.equal(math.maxinteger, r.i); assert.equal(0.1, r.f); assert.equal(0, r.b)
      assert.equal("tab\there", r.t); assert.equal(blob, r.x)
      assert.equal(loom.null, r.n1); assert.equal(loom.null, r.n2)
      assert.equal(42, db:value("SELECT ? + 1", 41))
      assert.equal(math.mininteger, db:value("SELECT ?", math.mininteger))
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

  it("query returns rows and info, exec affected rows and the last insert id", function()
    loom.run(function()
      db:exec("DROP TABLE IF EXISTS spec_t")
      db:exec("CREATE TABLE spec_t (id INT AUTO_INCREMENT PRIMARY KEY, name TEXT)")
      local n, id = db:exec("INSERT INTO spec_t (name) VALUES ('a'), ('b'), ('c')")
      assert.equal(3, n); assert.equal(1, id)
      n, id = db:exec("INSERT INTO spec_t (name) VALUES (?)", "d")
      assert.equal(1, n); assert.equal(4, id)
      local rows, info = db:query("SELECT id, name FROM spec_t ORDER BY id")
      assert.equal(4, #rows)
      assert.same({ "id", "name" }, info.columns)
      assert.same({ id = 2, name = "b" }, rows[2])
      assert.is_nil(db:first("SELECT * FROM spec_t WHERE id = 99"))
      assert.is_nil(db:value("SELECT name FROM spec_t WHERE id = ?", 99))
      assert.equal("c", db:value("SELECT name FROM spec_t WHERE id = ?", 3))
      -- affected counts rows matched, as on PostgreSQL (CLIENT_FOUND_ROWS)
      assert.equal(1, db:exec("UPDATE spec_t SET name = name WHERE id = ?", 1))
      assert.equal(3, db:exec("DELETE FROM spec_t WHERE id > ?", 1))
      db:exec("DROP TABLE spec_t")
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

  it("carry kind, the server's error number, SQLSTATE, message and sql", function()
    loom.run(function()
      local ok, e = pcall(db.query, db, "SELEC 1")
      assert.is_false(ok)
      assert.equal("query", e.kind); assert.equal(1064, e.code); assert.equal("42000", e.sqlstate)
      assert.matches("SQL syntax", e.message)
      assert.equal("mysql", e.driver); assert.equal("SELEC 1", e.sql)
      assert.matches("^query %[1064%]", tostring(e))
      ok, e = pcall(db.query, db, "SELECT * FROM no_such_table WHERE a = ?", 1)
      assert.equal(1146, e.code); assert.equal("42S02", e.sqlstate)
      db:exec("DROP TABLE IF EXISTS spec_u"); db:exec("CREATE TABLE spec_u (id INT PRIMARY KEY)")
      db:exec("INSERT INTO spec_u VALUES (1)")
      ok, e = pcall(db.exec, db, "INSERT INTO spec_u VALUES (?)", 1)
      assert.equal(1062, e.code); assert.equal("23000", e.sqlstate); assert.matches("Duplicate", e.message)
      db:exec("DROP TABLE spec_u")
      assert.equal(1, db:value("SELECT 1"))
    end)
  end)

  it("catch a wrong number of parameters before sending", function()
    loom.run(function()
      local ok, e = pcall(db.value, db, "SELECT ?, ?", 1)
      assert.equal("argument", e.kind); assert.matches("takes 2 parameters %(%?", e.message)
      ok, e = pcall(db.value, db, "SELECT '?', \"?\", `a?` FROM (SELECT 1 AS `a?`) t -- ?\n # ?\n /* ? */", 1)
      assert.equal("argument", e.kind); assert.matches("takes 0 parameters", e.message)
      assert.equal("it's ?", db:value("SELECT 'it\\'s ?' /* ? */"))
      ok, e = pcall(db.value, db, "SELECT ?", {})
      assert.equal("argument", e.kind); assert.matches("parameter 1 is a table", e.message)
    end)
  end)

  it("never show the password", function()
    local url = my.url():gsub("^mysql://([^:]+):([^@]+)@", "mysql://%1:wrong-secret-pw@")
    local bad = loom.db.open(url, { pool = { acquire_timeout = 5 } })
    assert.is_falsy(tostring(bad):find("wrong-secret-pw", 1, true))
    local ok, e = pcall(function() return loom.run(function() return bad:value("SELECT 1") end) end)
    assert.is_false(ok)
    assert.equal("connection", e.kind)
    assert.equal(1045, e.code)
    assert.is_falsy(tostring(e):find("wrong-secret-pw", 1, true))
    assert.is_falsy((e.message or ""):find("wrong-secret-pw", 1, true))
    bad:close()
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

  it("commits, rolls back on error, nests savepoints", function()
    loom.run(function()
      db:transaction(function(tx) tx:exec("UPDATE spec_acct SET v = 1 WHERE id = 1") end)
      assert.equal(1, db:value("SELECT v FROM spec_acct WHERE id = 1"))
      local ok = pcall(db.transaction, db, function(tx) tx:exec("UPDATE spec_acct SET v = 2 WHERE id = 1") error("no") end)
      assert.is_false(ok)
      assert.equal(1, db:value("SELECT v FROM spec_acct WHERE id = 1"))
      db:transaction(function(tx)
        tx:exec("UPDATE spec_acct SET v = 10 WHERE id = 1")
        pcall(tx.savepoint, tx, function(sp) sp:exec("UPDATE spec_acct SET v = 20 WHERE id = 1") error("undo me") end)
        assert.equal(10, tx:value("SELECT v FROM spec_acct WHERE id = 1"))
        assert.equal(10, db:value("SELECT v FROM spec_acct WHERE id = 1"))
        assert.equal("active", tx.conn:_txn())
      end)
      assert.equal(10, db:value("SELECT v FROM spec_acct WHERE id = 1"))
    end)
  end)

  it("uses the isolation level for that transaction only, and read only", function()
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
      local ok, e = pcall(db.transaction, db, function(tx) tx:exec("UPDATE spec_acct SET v = 0") end, { read_only = true })
      assert.equal(1792, e.code); assert.equal("25006", e.sqlstate)
      ok, e = pcall(db.transaction, db, function() end, { isolation = "chaotic" })
      assert.equal("argument", e.kind)
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
      assert.equal(12, db:value("SELECT v FROM spec_acct WHERE id = 1"))
      assert.equal(2, db:value("SELECT v FROM spec_acct WHERE id = 2"))
    end)
  end)

  it("a connection released mid-transaction is rolled back", function()
    loom.run(function()
      local s = db:acquire()
      s:exec("START TRANSACTION")
      s:exec("UPDATE spec_acct SET v = 999")
      s:release()
      loom.sleep(0.05)
      assert.equal(12, db:value("SELECT v FROM spec_acct WHERE id = 1"))
      for _ = 1, 4 do
        db:with(function(s2) assert.equal("idle", s2.conn:_txn()) end)
      end
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

  it("a task holding a connection reuses it instead of deadlocking", function()
    local db = open({ pool = { max = 2, acquire_timeout = 1 } })
    loom.run(function()
      db:with(function(s)
        local me = s:backend_id()
        assert.equal(me, db:value("SELECT CONNECTION_ID()"))
        db:with(function(inner) assert.equal(me, inner:backend_id()) end)
        db:transaction(function(tx) assert.equal(me, tx:value("SELECT CONNECTION_ID()")) end)
      end)
    end)
    db:close()
  end)

  it("times out acquiring with kind pool_timeout", function()
    local db = open({ pool = { max = 2, acquire_timeout = 1 } })
    loom.run(function()
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

describe("mysql streaming, batches, insert_many", function()
  local db
  setup(function() db = open({ pool = { max = 2 } }) end)
  teardown(function() db:close() end)

  it("streams rows one at a time and cleans up after break", function()
    loom.run(function()
      local n = 0
      for row in db:rows("SELECT seq FROM seq_1_to_50000") do n = n + row.seq end
      assert.equal(50000 * 50001 // 2, n)
      n = 0
      for row in db:rows("SELECT seq FROM seq_1_to_50000 WHERE seq > ?", 49990) do n = n + 1 end
      assert.equal(10, n)
      local started = loom.now()
      for row in db:rows("SELECT seq FROM seq_1_to_100000000") do
        if row.seq == 2 then break end
      end
      -- Reading the 100M rows takes minutes (more under sanitizers); giving
      -- up on them (KILL QUERY and a drain) takes well under this bound.
      assert.is_true(loom.now() - started < 20, "the rest was not read to the end")
      assert.equal(1, db:value("SELECT 1"))
      assert.equal(0, db:stats().in_use)
      local ok, e = pcall(function() for _ in db:rows("SELECT nope") do end end)
      assert.equal(1054, e.code)
      for _ = 1, 3 do
        for row in db:rows("SELECT seq FROM seq_1_to_10000 WHERE seq > ?", 0) do
          if row.seq == 5 then break end
        end
      end
      assert.equal(2, db:value("SELECT ?", 2))
    end)
  end)

  it("batches statements in order, the first error with its index", function()
    loom.run(function()
      local res = db:batch({ { "SELECT 1 AS a" }, { "SELECT ? AS b", "x" }, { "SELECT seq FROM seq_1_to_3" } })
      assert.equal(1, res[1][1].a); assert.equal("x", res[2][1].b); assert.equal(3, #res[3])
      local ok, e = pcall(db.batch, db, { { "SELECT 1" }, { "SELECT nope" }, { "SELECT 3" } })
      assert.equal(1054, e.code); assert.equal(2, e.batch_index)
      assert.equal(1, db:value("SELECT 1"))
    end)
  end)

  it("insert_many sends multi-row INSERTs, in one transaction", function()
    loom.run(function()
      db:exec("DROP TABLE IF EXISTS spec_many")
      db:exec("CREATE TABLE spec_many (id INT PRIMARY KEY, t TEXT, b MEDIUMBLOB, f DOUBLE, ok BOOL)")
      local tricky = "a\tb\nc\\d\re'\"`"
      local rows = {
        { 1, tricky, "x\0y", 0.5, true },
        { id = 2, t = loom.null, ok = false },
        { 3, "\\N", loom.null, 1e300, loom.null },
      }
      for i = 4, 5000 do rows[i] = { i, ("row %d"):format(i), nil, i / 2, i % 2 == 0 } end
      assert.equal(5000, db:insert_many("spec_many", { "id", "t", "b", "f", "ok" }, rows))
      local r = db:query("SELECT * FROM spec_many WHERE id <= 3 ORDER BY id")
      assert.equal(tricky, r[1].t); assert.equal("x\0y", r[1].b); assert.equal(0.5, r[1].f); assert.equal(1, r[1].ok)
      assert.equal(loom.null, r[2].t); assert.equal(0, r[2].ok)
      assert.equal("\\N", r[3].t); assert.equal(1e300, r[3].f)
      assert.equal(5000, db:value("SELECT COUNT(*) FROM spec_many"))
      -- a failing row leaves nothing of the call behind
      local bad = {}
      for i = 1, 3000 do bad[i] = { 10000 + i, "new" } end
      bad[2500] = { 1, "duplicate" }
      local ok, e = pcall(db.insert_many, db, "spec_many", { "id", "t" }, bad)
      assert.equal(1062, e.code)
      assert.equal(5000, db:value("SELECT COUNT(*) FROM spec_many"))
      -- rows large enough to need several packets
      db:exec("TRUNCATE spec_many")
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

  -- How many statements with fragment still run on the server. A killed
  -- thread answers the client an instant before it shows as idle: a
  -- second's grace, far below the statements' own running time.
  local function running(fragment)
    local n
    for _ = 1, 20 do
      n = admin:value("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND = 'Query' AND INFO LIKE ? AND ID <> CONNECTION_ID()",
        "%" .. fragment .. "%")
      if n == 0 then break end
      loom.sleep(0.05)
    end
    return n
  end

  it("a timeout kills the query on the server and the connection stays usable", function()
    loom.run(function()
      local started = loom.now()
      local ok, e = pcall(loom.timeout, 0.2, db.value, db, "SELECT SLEEP(10) /* spec-timeout */")
      assert.equal("timeout", e.kind)
      assert.is_true(loom.now() - started < 3)
      assert.equal(0, running("spec-timeout"))
      for _ = 1, 5 do assert.equal(1, db:value("SELECT 1")) end
      -- with parameters (a prepared statement) too
      ok, e = pcall(loom.timeout, 0.2, db.value, db, "SELECT SLEEP(?) /* spec-timeout-ps */", 10)
      assert.equal("timeout", e.kind)
      assert.equal(0, running("spec-timeout-ps"))
      assert.equal(3, db:value("SELECT ?", 3))
    end)
  end)

  it("task:cancel kills the query on the server", function()
    loom.run(function()
      local t = loom.spawn(function() return db:value("SELECT SLEEP(10) /* spec-cancel */") end)
      loom.sleep(0.2)
      t:cancel("stop it")
      local ok, e = pcall(t.join, t)
      assert.equal("cancelled", e.kind)
      assert.equal(0, running("spec-cancel"))
      assert.equal(2, db:value("SELECT 2"))
    end)
  end)

  it("a long statement is interrupted, not left running", function()
    loom.run(function()
      local ok, e = pcall(loom.timeout, 0.3, db.value, db,
        "SELECT COUNT(*) FROM seq_1_to_1000000 a, seq_1_to_1000000 b /* spec-heavy */")
      assert.equal("timeout", e.kind)
      assert.equal(0, running("spec-heavy"))
      assert.equal(1, db:value("SELECT 1"))
    end)
  end)

  it("a late cancel never hits the next query", function()
    loom.run(function()
      for i = 1, 50 do
        pcall(loom.timeout, 0.0005 * (i % 5), db.value, db, "SELECT SLEEP(0.001)")
        assert.equal(i, db:value("SELECT ?", i))
      end
    end)
  end)

  it("a stream cancelled midway leaves the connection clean", function()
    loom.run(function()
      local n = 0
      local ok, e = pcall(loom.timeout, 0.2, function()
        for _ in db:rows("SELECT seq, REPEAT('x', 2000), SLEEP(0.002) FROM seq_1_to_100000 /* spec-stream */") do n = n + 1 end
      end)
      assert.equal("timeout", e.kind)
      assert.is_true(n > 0)
      assert.equal(0, running("spec-stream"))
      assert.equal(7, db:value("SELECT ?", 7))
    end)
  end)
end)

describe("mysql named locks", function()
  local db
  setup(function() db = open({ pool = { max = 4 } }) end)
  teardown(function() db:close() end)

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
      local ok, e = pcall(db.lock, db, 8, function() end, { timeout = 0.1 })
      assert.equal("timeout", e.kind)
      t:cancel()
      pcall(t.join, t)
      assert.equal("released on cancel", db:lock(8, function() return "released on cancel" end, { timeout = 1 }))
      assert.equal("long", db:lock(("k"):rep(100), function() return "long" end))
    end)
  end)

  it("listen and notify say they are PostgreSQL's", function()
    local ok, e = pcall(db.listen, db, "x")
    assert.equal("argument", e.kind)
  end)
end)
