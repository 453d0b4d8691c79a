-- Defects of the generic database layer (issue 10), each case run on every
-- driver: SQLite always, PostgreSQL and MySQL/MariaDB on the servers
-- spec/support starts (or LOOM_PG_URL / LOOM_MYSQL_URL). What is promised
-- here holds the same on all three.
local loom = require "loom"
local pg = require "spec.support.pg"
local my = require "spec.support.my"

local build = os.getenv("LOOM_BUILD_DIR") or "build"

-- tmpfile, remove_db, a bounded run, catch, unique: spec/support/db.lua.
local support = require "spec.support.db"
local unique = support.unique
local tmpfile, remove_db, run, catch = support.tmpfile, support.remove_db, support.run, support.catch

local function assert_argument(e, mentions)
  assert.equal("table", type(e), "a loom error table expected, got " .. tostring(e))
  assert.equal("argument", e.kind, tostring(e.message))
  if mentions then
    assert.is_truthy(tostring(e.message):find(mentions, 1, true),
      ("the message names %q: %s"):format(mentions, tostring(e.message)))
  end
end

local DRIVERS = {
  { name = "sqlite", mark = function() return "?" end,
    url = function() return "sqlite:" .. tmpfile() end },
  { name = "postgres", mark = function(i) return "$" .. i end, url = pg.url },
  { name = "mysql", mark = function() return "?" end, url = my.url },
}

for _, d in ipairs(DRIVERS) do
  describe(d.name .. ":", function()
    local url, db
    local P = d.mark

    setup(function()
      url = d.url()
      db = loom.db.open(url, { pool = { max = 10 } })
    end)
    local created = {} -- dropped at the end: the servers may be shared
    teardown(function()
      if d.name ~= "sqlite" then
        loom.run(function()
          for i = #created, 1, -1 do pcall(db.exec, db, created[i]) end
        end)
      end
      db:close()
      collectgarbage()
      if d.name == "sqlite" then remove_db(url:sub(#"sqlite:" + 1)) end
    end)

    -- A fresh table t(id, owner) and an INSERT for it.
    local function create_table(t, columns)
      db:exec(("CREATE TABLE %s (%s)"):format(t, columns))
      created[#created + 1] = "DROP TABLE " .. t
    end

    local function new_table()
      local t = unique("dbd")
      create_table(t, "id INTEGER, owner VARCHAR(20)")
      return t, ("INSERT INTO %s (id) VALUES (%s)"):format(t, P(1))
    end

    local function ids(t)
      local out = {}
      for _, r in ipairs(db:query(("SELECT id FROM %s ORDER BY id"):format(t))) do out[#out + 1] = r.id end
      return out
    end

    ------------------------------------------------------------ 1. savepoints
    it("a transaction nested in a savepoint leaves the savepoint intact", function()
      run(function()
        local t, ins = new_table()
        db:transaction(function(tx)
          tx:exec(ins, 1)
          local ok, e = pcall(tx.savepoint, tx, function(sp)
            sp:exec(ins, 2)
            db:transaction(function(inner) inner:exec(ins, 3) end)
            error("undo 2 and 3")
          end)
          assert.is_false(ok)
          assert.equal("undo 2 and 3", (tostring(e):gsub("^.-:%d+: ", "")))
        end)
        assert.same({ 1 }, ids(t))
      end)
    end)

    it("savepoints nest to any depth, each undone alone", function()
      run(function()
        local t, ins = new_table()
        db:transaction(function(tx)
          tx:exec(ins, 1)
          tx:savepoint(function(a)
            a:exec(ins, 2)
            pcall(a.savepoint, a, function(b)
              b:exec(ins, 3)
              db:transaction(function(c) c:exec(ins, 4) end)
              error("undo 3 and 4")
            end)
            db:transaction(function(c)
              c:exec(ins, 5)
              pcall(c.savepoint, c, function(e) e:exec(ins, 6); error("undo 6") end)
            end)
          end)
        end)
        assert.same({ 1, 2, 5 }, ids(t))
      end)
    end)

    it("a savepoint that cannot be rolled back is raised, and the transaction does not commit", function()
      run(function()
        local t, ins = new_table()
        local seen
        local ok, e = pcall(db.transaction, db, function(tx)
          tx:exec(ins, 1)
          local sok, se = pcall(tx.savepoint, tx, function(sp)
            sp:exec(ins, 2)
            sp:exec("ROLLBACK") -- ends the transaction under the savepoint
            error("mine")
          end)
          assert.is_false(sok)
          seen = se
          -- The caller carries on as if only the savepoint's work was undone.
        end)
        assert.is_false(ok, "the transaction reported success")
        assert.equal("table", type(seen), "the ROLLBACK TO failure was swallowed: " .. tostring(seen))
        assert.equal("query", seen.kind)
        assert.is_truthy(tostring(seen.cause):find("mine", 1, true), "the user's error rides along")
        assert.equal("table", type(e))
        assert.same({}, ids(t))
        -- and the pool is healthy after it
        assert.equal(1, db:value("SELECT 1"))
      end)
    end)

    ------------------------------------------------------------ 2. COMMIT and timeouts
    it("a timeout never reports failure for a transaction that committed", function()
      -- 8 tasks run transactions under deadlines of 0 to 1 ms, so deadlines
      -- pass in every phase, COMMIT included. Success must mean committed
      -- and an error not committed.
      local TASKS, EACH = 8, d.name == "sqlite" and 1000 or 125
      local outcome = {}
      run(function()
        local t, ins = new_table()
        loom.group(function(g)
          for k = 1, TASKS do
            g:spawn(function()
              for j = 1, EACH do
                local id = (k - 1) * EACH + j
                local ok, e = pcall(loom.timeout, math.random() * 0.001, db.transaction, db, function(tx)
                  tx:exec(ins, id)
                end)
                outcome[id] = ok and "ok" or (type(e) == "table" and e.kind or tostring(e))
              end
            end)
          end
        end)
        local present = {}
        for _, id in ipairs(ids(t)) do present[id] = true end
        local bad, counts = {}, {}
        for id = 1, TASKS * EACH do
          local o = outcome[id]
          counts[o] = (counts[o] or 0) + 1
          if o == "ok" and not present[id] then bad[#bad + 1] = id .. " reported ok, not in the table" end
          if o ~= "ok" and present[id] then bad[#bad + 1] = id .. " reported " .. o .. ", in the table" end
        end
        assert.is_nil(counts.commit_unknown, "no connection broke, so no outcome is unknown")
        assert.same({}, bad)
      end)
    end)

    if d.name == "postgres" then
      -- A COMMIT made slow on purpose: a deferred constraint trigger sleeps.
      local function slow_commit_table(seconds)
        local t = unique("dbd_slow")
        db:exec(([[CREATE FUNCTION %s_sleep() RETURNS trigger LANGUAGE plpgsql AS
          'BEGIN PERFORM pg_sleep(%g); RETURN NULL; END']]):format(t, seconds))
        created[#created + 1] = ("DROP FUNCTION %s_sleep() CASCADE"):format(t)
        create_table(t, "id INTEGER")
        db:exec(([[CREATE CONSTRAINT TRIGGER %s_slow AFTER INSERT ON %s DEFERRABLE INITIALLY DEFERRED
          FOR EACH ROW EXECUTE FUNCTION %s_sleep()]]):format(t, t, t))
        return t
      end

      it("a deadline passing during COMMIT still reports the commit", function()
        run(function()
          local t = slow_commit_table(0.5)
          local started = loom.now()
          local result = loom.timeout(0.1, db.transaction, db, function(tx)
            tx:exec(("INSERT INTO %s VALUES (1)"):format(t))
            return "committed"
          end)
          assert.equal("committed", result)
          assert.is_true(loom.now() - started >= 0.4, "COMMIT was waited for")
          assert.equal(1, db:value(("SELECT count(*) FROM %s"):format(t)))
          -- and the expired deadline ended the next wait inside it instead
          local ok, e = pcall(loom.timeout, 0.05, function()
            db:transaction(function(tx) tx:exec(("INSERT INTO %s VALUES (2)"):format(t)) end)
            return db:value("SELECT 1")
          end)
          assert.is_false(ok)
          assert.equal("timeout", e.kind)
        end)
      end)

      it("a connection broken during COMMIT is kind commit_unknown", function()
        run(function()
          local t = slow_commit_table(5)
          local admin = loom.db.open(pg.admin_url(), { pool = { max = 1 } })
          local pid, over
          local killer = loom.spawn(function()
            -- The backend is killed while its COMMIT runs the slow trigger.
            while not over and (not pid or
                admin:value("SELECT query FROM pg_stat_activity WHERE pid = $1::int", pid) ~= "COMMIT") do
              loom.sleep(0.01)
            end
            if not over then admin:value("SELECT pg_terminate_backend($1::int)", pid) end
          end)
          local ok, e = pcall(db.transaction, db, function(tx)
            pid = tx:value("SELECT pg_backend_pid()")
            tx:exec(("INSERT INTO %s VALUES (1)"):format(t))
          end)
          over = true
          killer:join()
          admin:close()
          assert.is_false(ok)
          assert.equal("commit_unknown", e.kind, tostring(e))
          assert.equal("connection", e.cause.kind)
        end)
      end)
    end

    ------------------------------------------------------------ 3. NUL in SQL
    it("SQL text with a NUL byte is refused by every entry point", function()
      run(function()
        local t = unique("dbd")
        create_table(t, "id INTEGER, owner VARCHAR(20)")
        db:exec(("INSERT INTO %s VALUES (1, 'alice'), (1, 'bob'), (2, 'alice')"):format(t))
        local del = ("DELETE FROM %s WHERE id = 1\0 AND owner = 'alice'"):format(t)
        local sel = ("SELECT id FROM %s WHERE id = 1\0 AND owner = 'alice'"):format(t)
        local function refused(what, fn, ...)
          local ok, e = pcall(fn, ...)
          assert(not ok, what .. " accepted SQL with a NUL byte")
          assert_argument(e, "NUL")
        end
        local function entry_points(x, label)
          refused(label .. ":exec", x.exec, x, del)
          refused(label .. ":query", x.query, x, del)
          refused(label .. ":value", x.value, x, sel)
          refused(label .. ":first", x.first, x, sel)
          refused(label .. ":rows", function() for _ in x:rows(sel) do end end)
          refused(label .. ":batch", x.batch, x, { { "SELECT 1" }, { del } })
        end
        entry_points(db, "db")
        db:with(function(s) entry_points(s, "session") end)
        db:transaction(function(tx) entry_points(tx, "tx") end)
        refused("insert_many", db.insert_many, db, t .. "\0x", { "id" }, { { 5 } })
        refused("insert_many", db.insert_many, db, t, { "id\0" }, { { 5 } })
        refused("listen", db.listen, db, "ch\0x")
        assert.equal(3, db:value(("SELECT count(*) FROM %s"):format(t)))
      end)
    end)

    ------------------------------------------------------------ 4. passwords
    it("no malformed URL shows its password, in errors or on stderr", function()
      local scheme, host = url:match("^(%a+)://[^@]*@([^/]+)")
      local urls
      if d.name == "sqlite" then
        urls = {
          "sqlite://app:s3cr3t@nowhere/x.db", " sqlite://app:s3cr3t@nowhere/x.db",
          "sqlite://app:s3cr3t@nowhere/x\0.db", "sqlitee://app:s3cr3t@h/db",
          "sqlite:/no/such/dir/x.db?password=s3cr3t", "sqlite//app:s3cr3t@h/db",
        }
      else
        local alt = scheme == "postgres" and "postgresql" or "mariadb"
        urls = {}
        for _, u in ipairs({
          " S://app:s3cr3t@H/db", "S//app:s3cr3t@H/db", "S:/app:s3cr3t@H/db", "S:app:s3cr3t@H/db",
          "S://app:s3cr3t%zz@H/db", "S://app:s3cr3t%@H/db", "S://app:s3cr3t%4@H/db",
          "S://app:s3cr3t@H:notaport/db", "S://app:s3cr3t/db", "S://app:s3cr3t@/db",
          "S://app:s3cr3t@x@H/db", "S://app:s3cr3t@[::1/db", "S://app:s3cr3t@H:99999/db",
          "S://app:s3cr3t@H/db?sslmode=bogus", "S://app:s3cr3t@H/db?nonsense",
          "S://app:s3cr3t@H/db?bogus_option=1", "S://app@H/db?password=s3cr3t%zz",
          "S://app@H/db?password=s3cr3t&nonsense", "S://app:s3cr3t@H/db?connect_timeout=abc",
          "S://app:s3cr3t@H/d%zzb", "S://app:s3cr3t@H/db\n", "S://app:s3cr3t@H/db?x=%zz",
          "S://app:s3cr3t@no-such-host.invalid/db", "S://ap%zzp:s3cr3t@H/db",
          "S://app:s3cr3t@H/db", "A://app:s3cr3t@H/db?application_name=%zz",
          "S://app:%73%33%63%72%33%74@H/db", "S://app:s3cr3t?@H/db", "S://app:s3cr3t#x@H/db",
          "S://app:s3cr3t@H/db?options=-c%20statement_timeout%3Ds3cr3t", "SS://app:s3cr3t@H/db",
        }) do
          urls[#urls + 1] = u:gsub("^(%s*)SS:", "%1" .. scheme .. "x:"):gsub("^(%s*)S", "%1" .. scheme)
            :gsub("^A:", alt .. ":"):gsub("@H", "@" .. host)
        end
      end
      -- The attempts run in a child process, so whatever anything writes to
      -- stdout or stderr (libpq, Connector/C, SQLite) is seen too.
      local script, out = os.tmpname(), os.tmpname()
      local f = assert(io.open(script, "w"))
      f:write(([=[
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = %q .. "/?.so;" .. package.cpath
local loom = require "loom"
local function dump(v, seen)
  seen = seen or {}
  if type(v) ~= "table" then return tostring(v) end
  if seen[v] then return "<cycle>" end
  seen[v] = true
  local parts = {}
  for k, x in pairs(v) do parts[#parts + 1] = tostring(k) .. "=" .. dump(x, seen) end
  table.sort(parts)
  return "{" .. table.concat(parts, ", ") .. "}"
end
local urls = %s
for i, u in ipairs(urls) do
  local ok, db = pcall(loom.db.open, u, { pool = { acquire_timeout = 10 } })
  if not ok then
    io.write("CASE ", i, " open ", dump(db), "\n")
  else
    io.write("CASE ", i, " shown ", tostring(db), "\n")
    local ok2, e = pcall(loom.run, function()
      return loom.timeout(30, function() return db:value("SELECT 1") end)
    end)
    io.write("  query ", tostring(ok2), " ", dump(e), "\n")
    local ok3, e3 = pcall(loom.run, function()
      return loom.timeout(30, function() local ch = db:listen("spec_ch"); ch:close() end)
    end)
    io.write("  listen ", tostring(ok3), " ", dump(e3), "\n")
    db:close()
  end
end
io.write("DONE\n")
]=]):format(build, (function()
        local q = {}
        for i, u in ipairs(urls) do q[i] = ("%q"):format(u):gsub("\\\n", "\\n") end
        return "{" .. table.concat(q, ",\n") .. "}"
      end)()))
      f:close()
      local ok = os.execute(("lua5.4 %s > %s 2>&1"):format(script, out))
      local text = assert(io.open(out)):read("a")
      os.remove(script); os.remove(out)
      assert(ok, "the child failed:\n" .. text)
      assert.is_truthy(text:find("\nDONE\n", 1, true) or text:find("^DONE\n"), text)
      assert.is_falsy(text:find("Sanitizer", 1, true), text)
      local cases = select(2, text:gsub("CASE %d+", ""))
      assert.equal(#urls, cases)
      local at = text:find("s3cr3t", 1, true)
      assert.is_nil(at, "the password shows:\n" .. text)
    end)

    it("no field of the handle holds the password", function()
      if d.name == "sqlite" then return end
      local password = url:match("^%a+://[^:/@]*:([^@]*)@")
      assert.is_truthy(password and #password > 0, "the spec server's URL has a password")
      local h = loom.db.open(url)
      run(function()
        assert.equal(1, h:value("SELECT 1"))
        -- The listener keeps what it needs to reconnect: still nothing
        -- in reach.
        if d.name == "postgres" then h:listen("spec_pw"):close() end
      end)
      local found = {}
      local function walk(v, path, seen)
        if type(v) == "string" then
          if v:find(password, 1, true) then found[#found + 1] = path end
        elseif type(v) == "table" and not seen[v] then
          seen[v] = true
          for k, x in pairs(v) do
            walk(k, path .. "[key]", seen)
            walk(x, path .. "." .. tostring(k), seen)
          end
        end
      end
      walk(h, "db", {})
      h:close()
      assert.same({}, found)
    end)

    ------------------------------------------------------------ 5. numeric options
    it("pool durations of math.huge or 1e300 mean never, and the pool serves", function()
      run(function()
        for _, name in ipairs({ "max_lifetime", "validate_after", "idle_timeout", "acquire_timeout" }) do
          for _, v in ipairs({ math.huge, 1e300, 1e19 }) do
            local h = loom.db.open(url, { pool = { [name] = v, max = 2 } })
            local ok, e = pcall(loom.timeout, 30, function()
              for _ = 1, 3 do assert.equal(1, h:value("SELECT 1")) end
              -- a connection idle a moment is handed out again, not left behind
              loom.sleep(0.05)
              return h:value("SELECT 2")
            end)
            h:close()
            assert(ok, ("%s = %s: %s"):format(name, v, tostring(e)))
            assert.equal(2, e)
          end
        end
      end)
    end)

    it("acquire_timeout = math.huge waits for a connection", function()
      run(function()
        local h = loom.db.open(url, { pool = { max = 1, acquire_timeout = math.huge } })
        local held, release = loom.event(), loom.event()
        local failed
        local holder = loom.spawn(function()
          local ok, e = pcall(h.with, h, function(s) s:value("SELECT 1"); held:set(); release:wait() end)
          if not ok then failed = e end
          held:set()
        end)
        held:wait()
        assert(failed == nil, "the holder got no connection: " .. tostring(failed))
        local answered = false
        local waiter = loom.spawn(function()
          -- with(): a connection of its own (on SQLite the one writer)
          local ok, v = pcall(h.with, h, function(s) return s:value("SELECT 7") end)
          answered = true
          return ok, v
        end)
        loom.sleep(0.1)
        assert.is_false(answered, "the waiter did not wait for the connection")
        release:set()
        holder:join()
        local ok, v = waiter:join()
        assert(ok, tostring(v))
        assert.equal(7, v)
        h:close()
      end)
    end)

    it("NaN, negative and non-numbers are argument errors naming the option", function()
      run(function()
        for _, name in ipairs({ "max_lifetime", "validate_after", "idle_timeout", "acquire_timeout",
                                "min", "max", "readers" }) do
          for _, v in ipairs({ 0 / 0, -1, -0.5, "x", true }) do
            assert_argument(catch(loom.db.open, url, { pool = { [name] = v } }), name)
          end
        end
        for _, v in ipairs({ 1.5, math.huge, 1e300 }) do
          assert_argument(catch(loom.db.open, url, { pool = { max = v } }), "max")
          assert_argument(catch(loom.db.open, url, { pool = { min = v } }), "min")
        end
        -- busy_timeout is SQLite's; checked whatever the driver
        for _, v in ipairs({ 0 / 0, -1, "x" }) do
          assert_argument(catch(loom.db.open, url, { busy_timeout = v }), "busy_timeout")
        end
        local h = loom.db.open(url, { busy_timeout = math.huge })
        assert.equal(1, h:value("SELECT 1"))
        h:close()
        if d.name == "mysql" then
          -- The MySQL driver reads connect_timeout from the URL itself:
          -- garbage there is refused, not taken as "the default". (libpq's
          -- asynchronous connect neither reads nor enforces it.)
          for _, v in ipairs({ "abc", "-1", "1e300", "" }) do
            local h2 = loom.db.open(url .. (url:find("?", 1, true) and "&" or "?") .. "connect_timeout=" .. v,
              { pool = { acquire_timeout = 30 } })
            local ok, e = pcall(h2.value, h2, "SELECT 1")
            h2:close()
            assert(not ok, "connect_timeout=" .. v .. " was taken")
            assert.equal("table", type(e), tostring(e))
            assert.is_truthy(tostring(e.message):find("connect_timeout", 1, true), tostring(e.message))
          end
        end
      end)
    end)

    it("transaction retries and backoff are checked before anything runs", function()
      run(function()
        for _, v in ipairs({ -1, 0 / 0, -0.5, 1.5, "x", true }) do
          local ran = false
          local e = catch(db.transaction, db, function() ran = true end, { retries = v })
          assert_argument(e, "retries")
          assert.is_false(ran)
        end
        for _, v in ipairs({ -1, 0 / 0, "x" }) do
          local ran = false
          assert_argument(catch(db.transaction, db, function() ran = true end, { backoff = v }), "backoff")
          assert.is_false(ran)
        end
        assert.equal("ran", db:transaction(function() return "ran" end, { retries = math.huge }))
        assert.equal("ran", db:transaction(function() return "ran" end, { retries = 2.0, backoff = 0 }))
      end)
    end)

    it("lock timeouts and feed buffers are checked", function()
      run(function()
        for _, v in ipairs({ -1, -0.001, 0 / 0, "x" }) do
          local ran = false
          assert_argument(catch(db.lock, db, "k", function() ran = true end, { timeout = v }), "timeout")
          assert.is_false(ran)
        end
        assert.equal("free", db:lock("k", function() return "free" end, { timeout = math.huge }))
        for _, v in ipairs({ -1, 0 / 0, "x" }) do
          assert_argument(catch(db.listen, db, "spec_ch", { buffer = v }))
          assert_argument(catch(db.changes, db, { buffer = v }))
        end
      end)
    end)

    ------------------------------------------------------------ 6. released sessions
    it("a session used after release is a usage error, and the user's error passes", function()
      run(function()
        local t, ins = new_table()
        local mine = setmetatable({}, { __tostring = function() return "mine" end })
        local e = catch(db.transaction, db, function(tx) tx:exec(ins, 1); tx:release(); error(mine) end)
        assert.equal(mine, e)
        e = catch(db.transaction, db, function(tx) tx:release(); tx:exec(ins, 2) end)
        assert.equal("usage", e.kind)
        -- returning after releasing commits nothing
        e = catch(db.transaction, db, function(tx) tx:exec(ins, 3); tx:release() end)
        assert.equal("usage", e.kind)
        local s = db:acquire()
        s:release()
        for _, call in ipairs({
          function() return s:query("SELECT 1") end,
          function() return s:value("SELECT 1") end,
          function() for _ in s:rows("SELECT 1") do end end,
          function() return s:batch({ { "SELECT 1" } }) end,
          function() return s:savepoint(function() end) end,
          function() return s:insert_many(t, { "id" }, { { 9 } }) end,
        }) do
          assert.equal("usage", catch(call).kind)
        end
        assert.same({}, ids(t))
      end)
    end)

    ------------------------------------------------------------ 7. SQLite paths
    if d.name == "sqlite" then
      it("a sqlite: path or pragma with a NUL byte is an argument error", function()
        assert_argument(catch(loom.db.open, "sqlite:/tmp/a\0b.db"), "NUL")
        assert_argument(catch(loom.db.open, "sqlite::memory:", { pragmas = { "foreign_keys = on\0" } }))
      end)
    end

    ------------------------------------------------------------ 8. locks
    it("db:lock is re-entrant within a task and counted, as on every driver", function()
      run(function()
        local key = unique("lk")
        local result = db:lock(key, function()
          local inner = db:lock(key, function() return "inner" end, { timeout = 5 })
          -- After the inner release the outer hold remains: others wait.
          local other = loom.spawn(function()
            return pcall(db.lock, db, key, function() return "other" end, { timeout = 0.2 })
          end)
          local ok, e = other:join()
          assert.is_false(ok)
          assert.equal("timeout", e.kind)
          return inner
        end)
        assert.equal("inner", result)
        local other = loom.spawn(function() return db:lock(key, function() return "free" end, { timeout = 30 }) end)
        assert.equal("free", other:join())
      end)
    end)

    ------------------------------------------------------------ 9. hand-over
    it("a statement whose task is cancelled after the pool handed it a connection gives the connection back", function()
      -- The pool's hand-over ends the wait; the cancel (or an expiring
      -- timeout) lands before the task runs again, so the statement is
      -- never sent. The connection it got must go back to the pool then,
      -- not sit in a dropped object until the collector frees it: with
      -- nothing left to allocate, nothing collects, and every task waits
      -- on the pool forever (found by the soak on MySQL, under ASan).
      local h = loom.db.open(url, { pool = { max = 1, acquire_timeout = 30 } })
      collectgarbage("stop")
      local ok, err = pcall(run, function()
        local s = h:acquire()
        local waiter = loom.spawn(function() return h:exec("SELECT 1") end)
        while h:stats().waiting == 0 do loom.sleep(0) end
        s:release() -- the waiter's wait ends: it is ready, not yet running
        waiter:cancel()
        local wok, e = pcall(waiter.join, waiter)
        assert.is_false(wok)
        assert.equal("cancelled", e.kind)
        assert.equal(0, h:stats().in_use)
        assert.equal(1, h:value("SELECT 1"))
      end)
      collectgarbage("restart")
      h:close()
      assert(ok, err)
    end)
  end)
end
