-- PostgreSQL: exec with no parameters runs a whole script (issue 11);
-- query, value and exec with parameters stay one statement.
-- spec/support/pg.lua starts a throwaway server unless LOOM_PG_URL is set.
local loom = require "loom"
local pg = require "spec.support.pg"

local URL = pg.url()

describe("postgres scripts", function()
  local db
  setup(function() db = loom.db.open(URL, { pool = { max = 1 } }) end)
  teardown(function() db:close() end)

  it("exec runs every statement and returns the last one's count", function()
    loom.run(function()
      local n = db:exec([[
        DROP TABLE IF EXISTS spec_script;
        CREATE TABLE spec_script (id int PRIMARY KEY, note text);
        -- a comment; with a semicolon
        INSERT INTO spec_script VALUES (1, 'a;b'), (2, $$c;d$$);
        INSERT INTO spec_script VALUES (3, 'e'), (4, 'f'), (5, 'g');
      ]])
      assert.equal(3, n)
      assert.equal(5, db:value("SELECT count(*) FROM spec_script"))
      assert.equal("a;b", db:value("SELECT note FROM spec_script WHERE id = 1"))
      assert.equal(2, db:exec("UPDATE spec_script SET note = 'x' WHERE id < 3; DELETE FROM spec_script WHERE id > 3"))
      assert.equal(3, db:value("SELECT count(*) FROM spec_script"))
    end)
  end)

  it("a failing statement stops the script with its own error, and the script is undone", function()
    loom.run(function()
      local ok, e = pcall(db.exec, db, [[
        INSERT INTO spec_script VALUES (10, 'kept?');
        INSERT INTO spec_script VALUES (1, 'duplicate');
        INSERT INTO spec_script VALUES (11, 'never')]])
      assert.is_false(ok)
      assert.equal("query", e.kind)
      assert.equal("23505", e.code)
      -- one implicit transaction, as psql -c runs a script
      assert.equal(0, db:value("SELECT count(*) FROM spec_script WHERE id >= 10"))
      ok, e = pcall(db.exec, db, "SELECT 1; SELECT * FROM no_such_table; SELECT 2")
      assert.is_false(ok)
      assert.equal("42P01", e.code)
      assert.equal(1, db:value("SELECT 1"))
    end)
  end)

  it("sessions and transactions run scripts too", function()
    loom.run(function()
      db:with(function(s)
        assert.equal(1, s:exec("CREATE TEMP TABLE spec_tmp (v int); INSERT INTO spec_tmp VALUES (1)"))
        assert.equal(1, s:value("SELECT count(*) FROM spec_tmp"))
      end)
      db:transaction(function(tx)
        assert.equal(2,
          tx:exec("INSERT INTO spec_script VALUES (20, 't'); INSERT INTO spec_script VALUES (21, 't'), (22, 't')"))
      end)
      assert.equal(3, db:value("SELECT count(*) FROM spec_script WHERE note = 't'"))
    end)
  end)

  it("session state a script leaves behind is reset before the next user", function()
    loom.run(function()
      db:exec("SELECT 1; SET application_name = 'spec_script_left_this'")
      assert.is_not.equal("spec_script_left_this", db:value("SHOW application_name"))
    end)
  end)

  it("query, value and exec with parameters stay one statement", function()
    loom.run(function()
      local ok, e = pcall(db.query, db, "SELECT 1; SELECT 2")
      assert.is_false(ok); assert.equal("42601", e.code)
      ok, e = pcall(db.value, db, "SELECT 1; SELECT 2")
      assert.is_false(ok); assert.equal("42601", e.code)
      ok, e = pcall(db.exec, db, "SELECT $1::int; SELECT 2", 1)
      assert.is_false(ok); assert.equal("42601", e.code)
      -- one statement with a trailing semicolon is still one statement
      assert.equal(1, db:exec("UPDATE spec_script SET note = 'y' WHERE id = 1;"))
      assert.equal(1, db:exec("UPDATE spec_script SET note = 'z' WHERE id = 1; -- done"))
      db:exec("DROP TABLE spec_script")
    end)
  end)
end)
