-- Scripts (issue 11, item 4): db:exec(sql) with no parameters runs every
-- statement of the SQL, on every driver: SQLite always, PostgreSQL and
-- MySQL/MariaDB on the servers spec/support starts (or LOOM_PG_URL /
-- LOOM_MYSQL_URL). Where the drivers differ, as their servers' own clients
-- do, the difference is named in DRIVERS.
local loom = require "loom"
local pg = require "spec.support.pg"
local my = require "spec.support.my"

-- tmpfile, remove_db, a bounded run, catch, unique: spec/support/db.lua.
local support = require "spec.support.db"
local unique = support.unique
local tmpfile, remove_db, run, catch = support.tmpfile, support.remove_db, support.run, support.catch_table

local DRIVERS = {
  { name = "sqlite", mark = function() return "?" end,
    url = function() return "sqlite:" .. tmpfile() end,
    id = "INTEGER PRIMARY KEY",
    missing_table = "SQLITE_ERROR",
    -- The statement a script failed at.
    names_statement = true,
    -- A failure undoes the statements before it (the script ran as one
    -- implicit transaction).
    atomic = false,
    -- exec with parameters and two statements: refused before running.
    params_kind = "argument",
    has_insert_id = true,
    long = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 1000000000) "
      .. "SELECT count(*) FROM r" },
  -- The simple query protocol runs a script in one implicit transaction
  -- (as psql -c does).
  { name = "postgres", mark = function(i) return "$" .. i end, url = pg.url,
    id = "SERIAL PRIMARY KEY", missing_table = "42P01", names_statement = false, atomic = true,
    params_kind = "query", has_insert_id = false, long = "SELECT pg_sleep(60)" },
  { name = "mysql", mark = function() return "?" end, url = my.url,
    id = "INT AUTO_INCREMENT PRIMARY KEY", missing_table = 1146, names_statement = true,
    atomic = false, params_kind = "query", has_insert_id = true, long = "SELECT SLEEP(60)" },
}

for _, d in ipairs(DRIVERS) do
  describe(d.name .. " scripts:", function()
    local url, db
    local P = d.mark
    local created = {} -- dropped at the end: the servers may be shared

    setup(function()
      url = d.url()
      db = loom.db.open(url, { pool = { max = 4 } })
    end)
    teardown(function()
      if d.name ~= "sqlite" then
        loom.run(function()
          for i = #created, 1, -1 do pcall(db.exec, db, "DROP TABLE IF EXISTS " .. created[i]) end
        end)
      end
      db:close()
      collectgarbage()
      if d.name == "sqlite" then remove_db(url:sub(#"sqlite:" + 1)) end
    end)

    local function new_name(prefix)
      local t = unique(prefix)
      created[#created + 1] = t
      return t
    end

    -- A table t(id, v) made by a script of two statements.
    local function new_table(handle)
      local t = new_name("scr")
      ;(handle or db):exec(("DROP TABLE IF EXISTS %s; CREATE TABLE %s (id %s, v VARCHAR(40))"):format(t, t, d.id))
      return t
    end

    local function values(t, handle)
      local out = {}
      for _, r in ipairs((handle or db):query(("SELECT v FROM %s ORDER BY id"):format(t))) do out[#out + 1] = r.v end
      return out
    end

    it("runs drop, create and insert as one script", function()
      run(function()
        local t = new_name("scr")
        for round = 1, 2 do -- the second time, the DROP finds the table
          db:exec(([[
            DROP TABLE IF EXISTS %s;
            CREATE TABLE %s (id %s, v VARCHAR(40));
            INSERT INTO %s (v) VALUES ('one');
            INSERT INTO %s (v) VALUES ('two')]]):format(t, t, d.id, t, t))
          assert.same({ "one", "two" }, values(t), "round " .. round)
        end
      end)
    end)

    it("returns the counts of the last statement", function()
      run(function()
        local t = new_table()
        local n, id = db:exec(("INSERT INTO %s (v) VALUES ('a'), ('b'), ('c'); DELETE FROM %s WHERE v = 'a'; "
          .. "INSERT INTO %s (v) VALUES ('d')"):format(t, t, t))
        assert.equal(1, n)
        if d.has_insert_id then assert.equal(4, id) else assert.is_nil(id) end
        n = db:exec(("INSERT INTO %s (v) VALUES ('e'), ('f'); UPDATE %s SET v = 'g' WHERE v IN ('e', 'f')")
          :format(t, t))
        assert.equal(2, n)
        -- A last statement that changes no row has no counts of its own.
        local t2 = new_name("scr")
        n, id = db:exec(("INSERT INTO %s (v) VALUES ('h'); CREATE TABLE %s (a INT)"):format(t, t2))
        assert.equal(0, n)
        assert.is_nil(id)
        n = db:exec(("INSERT INTO %s (v) VALUES ('i'); SELECT v FROM %s WHERE v = 'nothing'"):format(t, t))
        assert.equal(0, n)
        -- the same for a single statement after one that changed rows
        local t3 = new_name("scr")
        assert.equal(1, db:exec(("INSERT INTO %s (v) VALUES ('j')"):format(t)))
        n, id = db:exec(("CREATE TABLE %s (a INT)"):format(t3))
        assert.equal(0, n)
        assert.is_nil(id)
        assert.same({ "b", "c", "d", "g", "g", "h", "i", "j" }, values(t))
      end)
    end)

    it("stops at a failing statement, with its code, and keeps what was done before it", function()
      run(function()
        local t = new_table()
        local missing = new_name("nosuch")
        local e = catch(db.exec, db, ("INSERT INTO %s (v) VALUES ('one'); INSERT INTO %s VALUES (1); "
          .. "INSERT INTO %s (v) VALUES ('three')"):format(t, missing, t))
        assert.equal("query", e.kind, tostring(e.message))
        assert.equal(d.missing_table, e.code)
        if d.names_statement then assert.equal(2, e.statement) end
        assert.is_truthy(tostring(e.message):find(missing, 1, true), tostring(e.message))
        -- The statements before it stay done (each committed on its own),
        -- unless the driver runs a script as one transaction; none after it runs.
        assert.same(d.atomic and {} or { "one" }, values(t))
        -- and the connections are fine
        for _ = 1, 4 do assert.equal(1, db:value("SELECT 1")) end
      end)
    end)

    it("inside a transaction, is rolled back with it as a whole", function()
      run(function()
        local t = new_table()
        local ok, e = pcall(db.transaction, db, function(tx)
          tx:exec(("INSERT INTO %s (v) VALUES ('one'); INSERT INTO %s (v) VALUES ('two')"):format(t, t))
          assert.same({ "one", "two" }, values(t, tx))
          error("undo both")
        end)
        assert.is_false(ok)
        assert.is_truthy(tostring(e):find("undo both", 1, true))
        assert.same({}, values(t))
        db:transaction(function(tx)
          tx:exec(("INSERT INTO %s (v) VALUES ('three'); INSERT INTO %s (v) VALUES ('four')"):format(t, t))
        end)
        assert.same({ "three", "four" }, values(t))
      end)
    end)

    it("runs in a session (db:with)", function()
      run(function()
        local t = new_table()
        db:with(function(s)
          s:exec(("INSERT INTO %s (v) VALUES ('one'); INSERT INTO %s (v) VALUES ('two')"):format(t, t))
          assert.same({ "one", "two" }, values(t, s))
        end)
      end)
    end)

    it("is not confused by semicolons in strings and comments", function()
      run(function()
        local t = new_table()
        local n, id = db:exec(([[
          -- a comment; with a semicolon
          INSERT INTO %s (v) VALUES ('a;b'); /* a block comment; with one too */
          INSERT INTO %s (v) VALUES ('it''s; fine');
          -- and one at the end; after the last statement
        ]]):format(t, t))
        assert.same({ "a;b", "it's; fine" }, values(t))
        assert.equal(1, n) -- the last statement's, not the trailing comment's
        if d.has_insert_id then assert.equal(2, id) end
        -- A single statement with a ';' in a string, or one at its end
        n = db:exec(("INSERT INTO %s (v) VALUES ('x;y')"):format(t))
        assert.equal(1, n)
        n = db:exec(("UPDATE %s SET v = 'z' WHERE v = 'x;y';"):format(t))
        assert.equal(1, n)
        n = db:exec(("DELETE FROM %s WHERE v = 'z'; -- done"):format(t))
        assert.equal(1, n)
        assert.same({ "a;b", "it's; fine" }, values(t))
      end)
    end)

    it("with parameters stays one statement: nothing of a script runs", function()
      run(function()
        local t = new_table()
        local e = catch(db.exec, db, ("INSERT INTO %s (v) VALUES (%s); INSERT INTO %s (v) VALUES ('two')")
          :format(t, P(1), t), "one")
        assert.equal(d.params_kind, e.kind, tostring(e.message))
        assert.same({}, values(t))
        -- a ';' inside a string parameter or the SQL's strings is no second statement
        assert.equal(1, db:exec(("INSERT INTO %s (v) VALUES (%s)"):format(t, P(1)), "a;b"))
        local concat = d.name == "mysql" and "CONCAT(%s, ';c')" or "%s || ';c'"
        assert.equal(1, db:exec(("INSERT INTO %s (v) VALUES (" .. concat .. ")"):format(t, P(1)), "b"))
        assert.same({ "a;b", "b;c" }, values(t))
      end)
    end)

    it("query and value stay one statement, also on a connection that ran a script", function()
      run(function()
        -- One connection, statements as plain text where the driver can.
        local one = loom.db.open(url, { pool = { max = 1 }, statement_cache = false })
        local t = new_table(one)
        one:exec(("INSERT INTO %s (v) VALUES ('one'); INSERT INTO %s (v) VALUES ('two')"):format(t, t))
        catch(one.query, one, ("SELECT 1; INSERT INTO %s (v) VALUES ('query')"):format(t))
        catch(one.value, one, ("SELECT 1; INSERT INTO %s (v) VALUES ('value')"):format(t))
        catch(function()
          for _ in one:rows(("SELECT 1 AS x; INSERT INTO %s (v) VALUES ('rows')"):format(t)) do end
        end)
        assert.same({ "one", "two" }, values(t, one))
        one:close()
      end)
    end)

    it("stopped by a timeout during a long statement, leaves the connection usable", function()
      run(function()
        -- One connection: the statement after the timeout runs on the same
        -- one, unless the driver gave it up (counted in stats().closed).
        local one = loom.db.open(url, { pool = { max = 1 } })
        local t = new_table(one)
        local before = one:stats()
        local e = catch(loom.timeout, 0.5, one.exec, one,
          ("INSERT INTO %s (v) VALUES ('before'); %s; INSERT INTO %s (v) VALUES ('after')"):format(t, d.long, t))
        assert.equal("timeout", e.kind, tostring(e.message))
        assert.equal(1, one:value("SELECT 1"))
        assert.same(d.atomic and {} or { "before" }, values(t, one))
        local after = one:stats()
        assert.equal(before.closed, after.closed, "the connection was given up")
        -- and the next script runs whole
        one:exec(("INSERT INTO %s (v) VALUES ('x'); INSERT INTO %s (v) VALUES ('y')"):format(t, t))
        assert.same(d.atomic and { "x", "y" } or { "before", "x", "y" }, values(t, one))
        one:close()
      end)
    end)
  end)
end

describe("sqlite scripts only:", function()
  it("a trigger's body, with its own semicolons, is part of one statement", function()
    local path = tmpfile()
    local db = loom.db.open("sqlite:" .. path)
    run(function()
      db:exec([[
        CREATE TABLE a (x INTEGER);
        CREATE TABLE log (x INTEGER, what TEXT);
        CREATE TRIGGER a_in AFTER INSERT ON a BEGIN
          INSERT INTO log VALUES (new.x, 'first; of two');
          INSERT INTO log VALUES (new.x, 'second');
        END;
        INSERT INTO a VALUES (7);]])
      local rows = db:query("SELECT x, what FROM log ORDER BY rowid")
      assert.same({ { x = 7, what = "first; of two" }, { x = 7, what = "second" } }, rows)
    end)
    db:close()
    collectgarbage()
    remove_db(path)
  end)

  it("an error's position is counted from the start of the script", function()
    local path = tmpfile()
    local db = loom.db.open("sqlite:" .. path)
    run(function()
      local sql = "CREATE TABLE a (x); SELECT x FROM a WHERE ) broken"
      local e = catch(db.exec, db, sql)
      assert.equal("query", e.kind)
      assert.equal(2, e.statement)
      assert.equal(sql:find(") broken", 1, true), e.position)
    end)
    db:close()
    collectgarbage()
    remove_db(path)
  end)
end)

describe("mysql scripts only:", function()
  local URL = my.url()

  it("session state set by a later statement of a script is cleared before the next user", function()
    local db = loom.db.open(URL, { pool = { max = 1 } })
    run(function()
      local t = unique("scr_tmp")
      db:exec(("DO 1; CREATE TEMPORARY TABLE %s (a INT); INSERT INTO %s VALUES (1)"):format(t, t))
      local e = catch(db.value, db, ("SELECT count(*) FROM %s"):format(t))
      assert.equal(1146, e.code)
      db:exec("DO 1; SET @scr_var = 5")
      assert.equal(loom.null, db:value("SELECT @scr_var"))
    end)
    db:close()
  end)
end)
