-- What only the SQLite driver does: its worker threads, one writer beside
-- parallel readers, reads on the loop thread, interruption, change streams,
-- and the ways a file can be wrong. What every driver does is in
-- db_conformance_spec.lua.
local loom = require "loom"

local build = os.getenv("LOOM_BUILD_DIR") or "build"

local support = require "spec.support.db"
local tmpfile, remove_db = support.tmpfile, support.remove_db

local pack = table.pack

-- A slow statement that only burns CPU on the worker thread (~1 s per 10M).
local SLOW = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) SELECT count(*) FROM c"

-- Runs fn while a task ticks every 10 ms, and asserts that at least two
-- ticks fell inside fn's run: the loop kept running meanwhile.
local function assert_ticked_during(fn)
  local ticks = {}
  local ticker = loom.spawn(function()
    while true do loom.sleep(0.01); ticks[#ticks + 1] = loom.now() end
  end)
  local started = loom.now()
  fn()
  local finished = loom.now()
  ticker:cancel()
  local inside = 0
  for _, t in ipairs(ticks) do
    if t > started and t < finished - 0.005 then inside = inside + 1 end
  end
  assert.is_true(inside >= 2, ("%d of %d ticks inside a %.2f s statement"):format(inside, #ticks, finished - started))
end

describe("sqlite", function()
  local path, db
  before_each(function()
    path = tmpfile()
    db = loom.db.open("sqlite:" .. path)
  end)
  after_each(function()
    db:close()
    collectgarbage()
    remove_db(path)
  end)

  it("maps types both ways: integers, reals, text, blobs with NUL bytes, NULL", function()
    loom.run(function()
      db:exec("CREATE TABLE v (i INTEGER, r REAL, t TEXT, b BLOB, n INTEGER)")
      local blob = "a\0b\255\0"
      db:exec("INSERT INTO v VALUES (?, ?, ?, ?, ?)", math.maxinteger, 0.25, "héllo", blob, loom.null)
      local row = db:first("SELECT * FROM v")
      assert.equal(math.maxinteger, row.i)
      assert.equal("integer", math.type(row.i))
      assert.equal(0.25, row.r)
      assert.equal("héllo", row.t)
      assert.equal(blob, row.b)
      assert.equal(loom.null, row.n)
      -- nil and booleans go in as NULL and 1/0
      db:exec("DELETE FROM v")
      db:exec("INSERT INTO v (i, n) VALUES (?, ?)", true, nil)
      row = db:first("SELECT i, n FROM v")
      assert.equal(1, row.i)
      assert.equal(loom.null, row.n)
    end)
  end)

  it("takes one statement where one is expected, and counts parameters as SQLite does", function()
    loom.run(function()
      -- a script runs only as db:exec without parameters (db_scripts_spec)
      local ok, e = pcall(db.value, db, "SELECT 1; SELECT 2")
      assert.is_false(ok)
      assert.equal("argument", e.kind)
      assert.truthy(e.message:find("more than one statement", 1, true))
      -- named and numbered parameters count as SQLite counts them
      assert.equal(3, db:value("SELECT :a + :a + ?2", 1, 1))
    end)
  end)

  it("200 concurrent writer tasks lose no row and never see SQLITE_BUSY", function()
    loom.run(function()
      db:exec("CREATE TABLE w (id INTEGER PRIMARY KEY, task INTEGER, n INTEGER)")
      local errors = {}
      loom.group(function(g)
       for t = 1, 200 do
        g:spawn(function()
          for n = 1, 5 do
            local ok, e = pcall(function()
              if n % 2 == 0 then
                db:transaction(function(tx)
                  tx:exec("INSERT INTO w (task, n) VALUES (?, ?)", t, n)
                  loom.yield()
                end)
              else
                db:exec("INSERT INTO w (task, n) VALUES (?, ?)", t, n)
              end
            end)
            if not ok then errors[#errors + 1] = tostring(e) end
            -- readers run beside the writer meanwhile
            db:value("SELECT count(*) FROM w")
          end
        end)
       end
      end)
      assert.same({}, errors)
      assert.equal(1000, db:value("SELECT count(*) FROM w"))
      assert.equal(200, db:value("SELECT count(DISTINCT task) FROM w"))
    end)
  end)

  it("runs a slow statement on a worker thread while the loop keeps ticking", function()
    loom.run(function()
      -- The ticker ran while the statement did: ticks fall inside it (a
      -- blocked loop would show none until the statement was over).
      assert_ticked_during(function() assert.equal(3000000, db:value(SLOW, 3000000)) end)
    end)
  end)

  it("interrupts a statement on timeout and cancel; the connection comes back clean", function()
    loom.run(function()
      local started = loom.now()
      local ok, e = pcall(loom.timeout, 0.1, db.value, db, SLOW, 500000000)
      assert.is_false(ok)
      assert.equal("timeout", e.kind)
      assert.is_true(loom.now() - started < 2, "interrupted, not run to the end")
      assert.equal(1, db:value("SELECT 1"))
      -- task:cancel interrupts too, inside a write transaction
      db:exec("CREATE TABLE k (x INTEGER)")
      local t = loom.spawn(function()
        db:transaction(function(tx)
          tx:exec("INSERT INTO k VALUES (1)")
          tx:value(SLOW, 500000000)
        end)
      end)
      loom.sleep(0.1)
      t:cancel()
      local ok2, e2 = pcall(t.join, t)
      assert.is_false(ok2)
      assert.equal("cancelled", e2.kind)
      -- rolled back, and the writer is free again
      assert.equal(0, db:value("SELECT count(*) FROM k"))
      db:exec("INSERT INTO k VALUES (2)")
      assert.equal(1, db:value("SELECT count(*) FROM k"))
      assert.equal(0, db:stats().in_use)
    end)
  end)

  it("short reads of several tasks never queue behind a long read while another reader is free", function()
    loom.run(function()
      db:exec("CREATE TABLE s (id INTEGER PRIMARY KEY)")
      db:exec("INSERT INTO s VALUES (1)")
      local Q = "SELECT id FROM s WHERE id = ?"
      -- Known to be short, and the long one known to be long, on both readers.
      loom.each({ 1, 2 }, function() db:value(Q, 1); db:value(SLOW, 2000000) end)
      for _ = 1, 10 do db:value(Q, 1) end
      local long_done
      local long = loom.spawn(function()
        assert.equal(3000000, db:value(SLOW, 3000000))
        long_done = loom.now()
      end)
      loom.yield()
      local shorts_done = loom.map({ 1, 2, 3, 4 }, function()
        for _ = 1, 25 do assert.equal(1, db:value(Q, 1)) end
        return loom.now()
      end)
      long:join()
      for _, t in ipairs(shorts_done) do assert.is_true(t < long_done) end
      assert.equal(0, db:stats().in_use)
    end)
  end)

  it("reads of several tasks share a reader; stopping one stops no other", function()
    local shared = loom.db.open("sqlite:" .. path, { pool = { readers = 1 } })
    loom.run(function()
      -- A's statement runs; B's queues behind it on the one shared reader
      -- and times out there; C's queues too and must still be answered.
      local a = loom.spawn(function() return shared:value(SLOW, 2000000) end)
      loom.yield()
      local b = loom.spawn(function() return loom.timeout(0.02, shared.value, shared, SLOW, 2000000) end)
      local c = loom.spawn(function() return shared:value("SELECT 42") end)
      local ok, e = pcall(b.join, b)
      assert.is_false(ok)
      assert.equal("timeout", e.kind)
      assert.equal(2000000, a:join())
      assert.equal(42, c:join())
      -- and a timeout of the running statement leaves the queued ones alone
      local d = loom.spawn(function() return loom.timeout(0.05, shared.value, shared, SLOW, 50000000) end)
      loom.yield()
      local f = loom.spawn(function() return shared:value("SELECT 7") end)
      assert.is_false((pcall(d.join, d)))
      assert.equal(7, f:join())
      assert.equal(0, shared:stats().in_use)
    end)
    shared:close()
  end)

  it("a short cached read runs on the loop thread and answers what a worker would", function()
    loom.run(function()
      db:exec("CREATE TABLE r (id INTEGER PRIMARY KEY, i INTEGER, f REAL, t TEXT, b BLOB, n INTEGER)")
      local rows = {}
      for k = 1, 300 do rows[k] = { k, k * 1000000007, k / 8, "row " .. k, "b\0" .. k, loom.null } end
      db:insert_many("r", { "id", "i", "f", "t", "b", "n" }, rows)
      local ONE, ALL = "SELECT * FROM r WHERE id = ?", "SELECT * FROM r ORDER BY id"
      local BAD = "SELECT abs(-9223372036854775807 - 1) FROM r WHERE id = ?"
      -- The writer's answers (a session holds the writer, never a reader).
      local want_one, want_all, want_info
      db:with(function(s)
        want_one = s:query(ONE, 7)
        want_all, want_info = s:query(ALL)
      end)
      -- First on a reader's worker (which prepares and caches them), then
      -- again and again, now on the loop thread.
      assert.same(want_one, db:query(ONE, 7))
      assert.same(want_all, db:query(ALL))
      local e1 = select(2, pcall(db.value, db, BAD, 1))
      local before = db:stats().inline_reads
      local ones, alls = {}, {}
      for k = 1, 50 do
        ones[k] = db:query(ONE, 7)
        if k % 10 == 0 then alls[#alls + 1] = pack(db:query(ALL)) end
      end
      local e2 = select(2, pcall(db.value, db, BAD, 1))
      -- They ran here, but for those that found the loop had not polled for
      -- a millisecond (this task's own work, or the thread preempted) or
      -- overran the budget on a slow machine: those went to the worker.
      local ran_here = db:stats().inline_reads - before
      assert.is_true(ran_here >= 1 and ran_here <= 56, ran_here .. " of 56 reads on the loop thread")
      for k = 1, 50 do assert.same(want_one, ones[k]) end
      for _, r in ipairs(alls) do
        assert.same(want_all, r[1])
        assert.same(want_info.columns, r[2].columns)
      end
      assert.equal("query", e2.kind)
      assert.same({ e1.kind, e1.code, e1.message }, { e2.kind, e2.code, e2.message })
      -- A read on the loop thread sees every write that finished before it.
      for k = 1, 20 do
        db:exec("INSERT INTO r (id, t) VALUES (?, ?)", 1000 + k, "new")
        assert.equal(k, db:value("SELECT count(*) FROM r WHERE t = ?", "new"))
      end
    end)
  end)

  it("a cached read past the loop thread's budget moves to a worker: ticks meanwhile, a timeout stops it", function()
    loom.run(function()
      local SLOW2 = SLOW .. " -- moves to a worker"
      -- Cached, and run on the loop thread while it is short.
      assert.equal(10, db:value(SLOW2, 10))
      local before = db:stats().inline_reads
      for _ = 1, 3000 do
        assert.equal(10, db:value(SLOW2, 10))
        if db:stats().inline_reads > before then break end
      end
      assert.is_true(db:stats().inline_reads > before)
      before = db:stats().inline_reads
      -- Its result is the whole count: restarted on the worker from scratch.
      assert_ticked_during(function() assert.equal(3000000, db:value(SLOW2, 3000000)) end)
      assert.equal(before, db:stats().inline_reads)
      -- Short again: back on the loop thread after some runs on a worker
      -- (a few, or more if a slow machine made tries overrun the time).
      for _ = 1, 3000 do
        assert.equal(10, db:value(SLOW2, 10))
        if db:stats().inline_reads > before then break end
      end
      assert.is_true(db:stats().inline_reads > before)
      -- A long one stopped by a timeout, the reader clean after it.
      local SLOW3 = SLOW .. " -- stopped"
      assert.equal(10, db:value(SLOW3, 10))
      assert.equal(10, db:value(SLOW3, 10))
      local started = loom.now()
      local ok, e = pcall(loom.timeout, 0.1, db.value, db, SLOW3, 500000000)
      assert.is_false(ok)
      assert.equal("timeout", e.kind)
      assert.is_true(loom.now() - started < 5, "interrupted, not run to the end (~50 s)")
      assert.equal(10, db:value(SLOW3, 10))
      assert.equal(0, db:stats().in_use)
    end)
  end)

  it("a task reading on the loop thread in a loop lets timers run and can be cancelled", function()
    loom.run(function()
      db:exec("CREATE TABLE f (id INTEGER PRIMARY KEY)")
      db:exec("INSERT INTO f VALUES (1)")
      local Q = "SELECT id FROM f WHERE id = ?"
      db:value(Q, 1)
      local ticks = 0
      local ticker = loom.spawn(function()
        while true do loom.sleep(0.001); ticks = ticks + 1 end
      end)
      local before = db:stats().inline_reads
      local reads = 0
      local reader = loom.spawn(function()
        while true do
          assert.equal(1, db:value(Q, 1))
          reads = reads + 1
        end
      end)
      -- The reader need not wait on a worker while its reads are short,
      -- yet the ticker's timer fires and this task wakes up from its
      -- sleeps (bounded generously: a sanitizer build is slow).
      loom.timeout(10, function()
        repeat loom.sleep(0.01) until ticks >= 2 and db:stats().inline_reads > before
      end)
      assert.is_true(reads >= 1)
      reader:cancel()
      local ok, e = pcall(reader.join, reader)
      assert.is_false(ok)
      assert.equal("cancelled", e.kind)
      ticker:cancel()
      assert.equal(0, db:stats().in_use)
    end)
  end)

  it("insert_many says which row failed", function()
    loom.run(function()
      db:exec("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL, note TEXT)")
      -- a failing row rolls the whole call back and says which row
      local bad = { { 20001, "ok" }, { 20002, loom.null }, { 20003, "ok" } }
      local ok, e = pcall(db.insert_many, db, "items", { "id", "name" }, bad)
      assert.is_false(ok)
      assert.equal("query", e.kind)
      assert.equal(2, e.row)
      assert.equal(0, db:value("SELECT count(*) FROM items WHERE id > 20000"))
    end)
  end)

  it("db:changes streams committed writes, never rolled-back ones", function()
    loom.run(function()
      db:exec("CREATE TABLE c (id INTEGER PRIMARY KEY, v TEXT)")
      local ch = db:changes()
      db:exec("INSERT INTO c (v) VALUES ('a')")
      db:transaction(function(tx)
        tx:exec("UPDATE c SET v = 'b' WHERE id = 1")
        tx:exec("INSERT INTO c (v) VALUES ('c')")
        -- nothing is sent before the commit
        assert.equal(1, #ch)
      end)
      pcall(db.transaction, db, function(tx)
        tx:exec("DELETE FROM c")
        error("roll back")
      end)
      db:exec("DELETE FROM c WHERE id = 2")
      local got = {}
      while #ch > 0 do
        local e = ch:recv()
        got[#got + 1] = ("%s %s %d"):format(e.op, e.table, e.rowid)
      end
      assert.same({ "insert c 1", "update c 1", "insert c 2", "delete c 2" }, got)
      -- work undone inside a committed transaction never shows: a statement
      -- that failed halfway, a savepoint rolled back
      db:exec("CREATE TABLE bal (id INTEGER PRIMARY KEY, v INTEGER CHECK (v >= 0))")
      db:exec("INSERT INTO bal VALUES (1, 1000), (2, 100)")
      while #ch > 0 do ch:recv() end
      db:transaction(function(tx)
        assert.is_false((pcall(tx.exec, tx, "UPDATE bal SET v = v - 500")))
        pcall(tx.savepoint, tx, function(sp) sp:exec("INSERT INTO bal VALUES (3, 1)"); error("undo") end)
        tx:savepoint(function(sp) sp:exec("INSERT INTO bal VALUES (4, 1)") end)
      end)
      local e = ch:recv()
      assert.same({ "insert", "bal", 4 }, { e.op, e.table, e.rowid })
      assert.equal(0, #ch)
      -- a subscriber that falls behind hears of the gap
      local small = db:changes({ buffer = 2 })
      db:insert_many("c", { "v" }, { { "x" }, { "y" }, { "z" } })
      assert.equal("insert", small:recv().op)
      assert.equal("insert", small:recv().op)
      db:exec("INSERT INTO c (v) VALUES ('w')")
      assert.is_true(small:recv().gap)
      small:close()
      ch:close()
    end)
  end)

  -- Waits (bounded) for a gap marker on ch; returns it and what came first.
  local function await_gap(ch, seconds)
    local before = {}
    local ok, e = pcall(loom.timeout, seconds, function()
      while true do
        local m = ch:recv()
        if m.gap then return m end
        before[#before + 1] = m
      end
    end)
    return ok and e or nil, before
  end

  it("db:changes announces another handle's writes with a gap marker", function()
    loom.run(function()
      db:exec("CREATE TABLE g (id INTEGER PRIMARY KEY, v TEXT)")
      local ch = db:changes({ poll = 0.02 })
      db:exec("INSERT INTO g (v) VALUES ('mine')")
      local e = ch:recv()
      assert.same({ "insert", "g", 1 }, { e.op, e.table, e.rowid })
      -- Writes of this handle alone never make a gap.
      loom.sleep(0.1)
      assert.equal(0, #ch)
      local other = loom.db.open("sqlite:" .. path)
      other:exec("INSERT INTO g (v) VALUES ('theirs')")
      -- Bounded by the poll period, with room for a loaded machine.
      local gap, before = await_gap(ch, 5)
      assert.is_table(gap, "no gap marker within 5 s")
      assert.same({ gap = true }, gap)
      assert.same({}, before)  -- their rows are not itemized
      other:close()
      -- This handle's own writes are still itemized after the gap.
      db:exec("UPDATE g SET v = 'again' WHERE id = 1")
      e = ch:recv()
      assert.same({ "update", "g", 1 }, { e.op, e.table, e.rowid })
      ch:close()
      assert.has_error(function() db:changes({ poll = 0 }) end)
    end)
  end)

  it("db:changes announces another process's writes with a gap marker #subprocess", function()
    loom.run(function()
      db:exec("CREATE TABLE g (id INTEGER PRIMARY KEY, v TEXT)")
      local ch = db:changes({ poll = 0.02 })
      local script = os.tmpname()
      local f = assert(io.open(script, "w"))
      f:write(([[
        package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
        package.cpath = %q .. "/?.so;" .. package.cpath
        local loom = require "loom"
        local db = loom.db.open(%q)
        loom.run(function() db:exec("INSERT INTO g (v) VALUES ('from a child process')") end)
        db:close()
      ]]):format(build, "sqlite:" .. path))
      f:close()
      local ok = os.execute("lua5.4 " .. script)
      os.remove(script)
      assert.is_true(ok)
      local gap, before = await_gap(ch, 5)
      assert.is_table(gap, "no gap marker within 5 s")
      assert.same({}, before)
      assert.equal(1, db:value("SELECT count(*) FROM g"))
      ch:close()
    end)
  end)

  it("transaction, savepoint and lock take callable tables", function()
    loom.run(function()
      local function callable(fn)
        return setmetatable({}, { __call = function(_, ...) return fn(...) end })
      end
      db:exec("CREATE TABLE ct (x INTEGER)")
      assert.equal("tx", db:transaction(callable(function(tx)
        tx:savepoint(callable(function(sp) sp:exec("INSERT INTO ct VALUES (1)") end))
        return "tx"
      end)))
      assert.equal(1, db:value("SELECT count(*) FROM ct"))
      assert.equal("held", db:lock("k", callable(function() return "held" end)))
      local ok, e = pcall(db.transaction, db, {})
      assert.is_false(ok)
      assert.equal("argument", e.kind)
    end)
  end)

  it("db:close() closes the channels db:changes() gave, after what they hold", function()
    loom.run(function()
      db:exec("CREATE TABLE cl (id INTEGER PRIMARY KEY)")
      local a, b = db:changes(), db:changes({ buffer = 4 })
      local seen = {}
      local reader = loom.spawn(function()
        for e in a:iter() do seen[#seen + 1] = e.rowid end
        return "ended"
      end)
      db:exec("INSERT INTO cl VALUES (7)")
      db:close()
      -- Bounded: without the close the loop would wait for ever.
      assert.equal("ended", loom.timeout(5, reader.join, reader))
      assert.same({ 7 }, seen)
      assert.is_true(a:is_closed())
      assert.is_true(b:is_closed())
      assert.equal(7, b:recv().rowid)
      local v, ok = b:recv()
      assert.is_nil(v)
      assert.is_false(ok)
    end)
  end)

  it("acquire and with pin one connection; stats count both pools", function()
    loom.run(function()
      db:exec("CREATE TABLE s (x INTEGER)")
      do
        local s <close> = db:acquire()
        s:exec("CREATE TEMP TABLE mine (x INTEGER)")
        s:exec("INSERT INTO mine VALUES (1)")
        -- the same connection serves db calls from this task meanwhile
        assert.equal(1, db:value("SELECT count(*) FROM mine"))
      end
      assert.equal(3, db:with(function(s) return s:value("SELECT 1 + 2") end))
      local st = db:stats()
      for _, k in ipairs({ "total", "idle", "in_use", "waiting", "acquired", "timeouts", "created", "closed",
                           "wait_time" }) do
        assert.is_not_nil(st[k], k)
      end
      assert.is_true(st.total >= 1)
      assert.equal(0, st.in_use)
    end)
  end)
end)

describe("sqlite files and memory", function()
  it("sqlite::memory: is one database for every connection of the handle", function()
    local db = loom.db.open("sqlite::memory:", { pool = { readers = 3 } })
    local other = loom.db.open("sqlite::memory:")
    loom.run(function()
      db:exec("CREATE TABLE m (x INTEGER)")
      db:insert_many("m", { "x" }, { { 1 }, { 2 }, { 3 } })
      local counts = loom.map({ 1, 2, 3, 4, 5, 6 }, function() return db:value("SELECT sum(x) FROM m") end)
      for i = 1, 6 do assert.equal(6, counts[i]) end
      -- another handle's memory database is another database
      local ok, e = pcall(other.value, other, "SELECT count(*) FROM m")
      assert.is_false(ok)
      assert.truthy(e.message:find("no such table", 1, true))
    end)
    db:close()
    other:close()
  end)

  it("pragmas given to open run on every connection, readers included", function()
    local path = tmpfile()
    local db = loom.db.open("sqlite:" .. path,
      { pragmas = { "cache_size = -4321", "foreign_keys = on" }, pool = { readers = 2 } })
    loom.run(function()
      assert.equal(-4321, db:value("PRAGMA cache_size"))      -- the writer (PRAGMA is not a read)
      assert.equal(-4321, db:value("SELECT * FROM pragma_cache_size()")) -- a reader
      assert.equal(1, db:value("SELECT * FROM pragma_foreign_keys()"))
    end)
    db:close()
    remove_db(path)
    local ok, e = pcall(loom.db.open, "sqlite:" .. path, { pragmas = { "x = 1; DROP TABLE t" } })
    assert.is_false(ok)
    assert.equal("argument", e.kind)
    local bad = loom.db.open("sqlite:" .. path, { pragmas = { "no such thing(" }, pool = { acquire_timeout = 2 } })
    local ok2, e2 = pcall(function() return loom.run(function() return bad:value("SELECT 1") end) end)
    assert.is_false(ok2)
    assert.equal("connection", e2.kind)
    bad:close()
    remove_db(path)
  end)

  it("readers map the file by default (mmap_size); a pragma given to open sets another size", function()
    local maps = io.open("/proc/self/maps")
    if not maps then return pending("no /proc/self/maps to see the map in") end
    maps:close()
    local function mapped(p)
      local f = assert(io.open("/proc/self/maps"))
      local text = f:read("a")
      f:close()
      return text:find(p .. "\n", 1, true) ~= nil   -- the file itself, not its -shm
    end
    for _, case in ipairs({ { pragmas = nil, mapped = true }, { pragmas = { "mmap_size = 0" }, mapped = false } }) do
      local path = tmpfile()
      local db = loom.db.open("sqlite:" .. path, { pool = { readers = 2 }, pragmas = case.pragmas })
      loom.run(function()
        db:exec("CREATE TABLE t (x INTEGER)")
        db:insert_many("t", { "x" }, { { 1 }, { 2 } })
        db:exec("PRAGMA wal_checkpoint(TRUNCATE)")        -- rows in the file, not only in the WAL
        assert.equal(0, db:value("PRAGMA mmap_size"))   -- the writer keeps SQLite's default
        assert.equal(3, db:value("SELECT sum(x) FROM t")) -- a reader
        assert.equal(case.mapped, mapped(path))
      end)
      db:close()
      remove_db(path)
    end
  end)

  it("a path that cannot be opened is a clear connection error", function()
    local db = loom.db.open("sqlite:/nonexistent-dir/sub/x.db", { pool = { acquire_timeout = 2 } })
    local ok, e = pcall(function() return loom.run(function() return db:value("SELECT 1") end) end)
    assert.is_false(ok)
    assert.equal("connection", e.kind)
    assert.truthy(e.message:find("cannot open the database", 1, true), e.message)
    db:close()
  end)

  it("a file that is not a database is a clear connection error", function()
    local path = tmpfile()
    local f = assert(io.open(path, "wb"))
    f:write(("this is not a database\n"):rep(500))
    f:close()
    local db = loom.db.open("sqlite:" .. path, { pool = { acquire_timeout = 2 } })
    local ok, e = pcall(function() return loom.run(function() return db:value("SELECT 1") end) end)
    assert.is_false(ok)
    assert.equal("connection", e.kind)
    assert.truthy(e.message:find("not a database", 1, true), e.message)
    db:close()
    remove_db(path)
  end)

  it("a read-only database reads and refuses writes with SQLITE_READONLY", function()
    local path = tmpfile()
    local rw = loom.db.open("sqlite:" .. path)
    loom.run(function()
      rw:exec("CREATE TABLE r (x INTEGER)")
      rw:exec("INSERT INTO r VALUES (5)")
    end)
    rw:close()
    collectgarbage()
    local ro = loom.db.open("sqlite:file:" .. path .. "?mode=ro")
    loom.run(function()
      assert.equal(5, ro:value("SELECT x FROM r"))
      local ok, e = pcall(ro.exec, ro, "INSERT INTO r VALUES (6)")
      assert.is_false(ok)
      assert.equal("query", e.kind)
      assert.truthy(e.code:find("SQLITE_READONLY", 1, true), e.code)
    end)
    ro:close()
    remove_db(path)
  end)

  -- #subprocess: not in the ThreadSanitizer pass, whose preloaded runtime
  -- the shell that io.popen starts cannot carry (it runs in the other two).
  it("a database locked by another process gives SQLITE_BUSY after the busy timeout #subprocess", function()
    local path = tmpfile()
    local db = loom.db.open("sqlite:" .. path, { busy_timeout = 0.2 })
    loom.run(function() db:exec("CREATE TABLE l (x INTEGER)") end)
    -- The other process runs a plain build when there is one: a sanitizer
    -- runtime preloaded into this run has no business in it.
    local child_build, env = build, ""
    local plain = io.open("build/loom/core.so")
    if plain then
      plain:close()
      child_build, env = "build", "env -u LD_PRELOAD -u TSAN_OPTIONS -u ASAN_OPTIONS "
    end
    env = env .. ("LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='%s/?.so;;'"):format(child_build)
    local holder = io.popen(env .. " lua5.4 -e \"local loom = require 'loom'\n"
      .. "local db = loom.db.open('sqlite:" .. path .. "')\n"
      .. "loom.run(function() db:with(function(s) s:exec('BEGIN EXCLUSIVE'); s:exec('INSERT INTO l VALUES (1)')\n"
      .. "io.write('locked\\n'); io.flush(); loom.sleep(1.5); s:exec('ROLLBACK') end) end)\" 2>&1")
    assert.equal("locked", holder:read("l"))
    loom.run(function()
      local ok, e = pcall(db.exec, db, "INSERT INTO l VALUES (2)")
      assert.is_false(ok)
      assert.equal("query", e.kind)
      assert.truthy(e.code:find("SQLITE_BUSY", 1, true), e.code)
      -- readers are not blocked by the other process's write (WAL)
      assert.equal(0, db:value("SELECT count(*) FROM l"))
    end)
    holder:close()
    loom.run(function()
      db:exec("INSERT INTO l VALUES (3)")
      assert.equal(1, db:value("SELECT count(*) FROM l"))
    end)
    db:close()
    remove_db(path)
  end)

  it("unknown schemes name the ones that exist", function()
    local ok, e = pcall(loom.db.open, "sqlite:")
    assert.is_false(ok)
    assert.equal("argument", e.kind)
  end)
end)
