-- Many tasks waiting on a pool at once (loom.map without `concurrency`
-- over a pool of 10): every waiter is served, first in first out, the pool
-- opens no more than its max, the waiters share one deadline timer (not
-- one each), each still times out at its own deadline; and reads of a
-- fresh SQLite handle wait for the shared readers being opened instead of
-- queuing on the reader pool one connection each.
local loom = require "loom"

local support = require "spec.support.db"
local tmpfile, remove_db = support.tmpfile, support.remove_db

describe("sqlite reads of a fresh handle", function()
  local path
  before_each(function() path = tmpfile() end)
  after_each(function() collectgarbage(); remove_db(path) end)

  it("1000 at once share the readers being opened: 2 acquires, not one per read", function()
    local db = loom.db.open("sqlite:" .. path, { pool = { max = 10 } })
    local ids = {}
    for i = 1, 1000 do ids[i] = i end
    loom.run(function()
      local got = loom.map(ids, function(i) return db:value("SELECT ? * 2", i) end)
      assert.equal(1000, got.n)
      for i = 1, 1000 do assert.equal(2 * i, got[i]) end
      -- The two reads that open the shared readers acquire from the pool;
      -- the other 998 join those readers. Before, every read waiting while
      -- the first were opening queued on the reader pool and took a
      -- connection of its own in turn: ~1000 acquires.
      local s = db:stats()
      assert.is_true(s.acquired <= 2, ("%d acquires from the pools for 1000 reads"):format(s.acquired))
      assert.equal(0, s.waiting)
      -- The readers serve later reads as usual.
      assert.equal(84, db:value("SELECT ? * 2", 42))
    end)
    db:close()
  end)

  it("a read waiting for a shared reader can be cancelled, and the rest still run", function()
    local db = loom.db.open("sqlite:" .. path, { pool = { max = 10 } })
    loom.run(function()
      local tasks = {}
      for i = 1, 20 do tasks[i] = loom.spawn(function() return db:value("SELECT ?", i) end) end
      -- Tasks 3..20 wait for the two readers the first two are opening.
      tasks[5]:cancel("not needed")
      for i, t in ipairs(tasks) do
        if i == 5 then
          local ok, e = pcall(t.join, t)
          assert.is_false(ok); assert.equal("cancelled", e.kind)
        else
          assert.equal(i, t:join())
        end
      end
    end)
    db:close()
  end)

  it("reads waiting for a shared reader when the handle closes fail with kind closed", function()
    local db = loom.db.open("sqlite:" .. path, { pool = { max = 10 } })
    loom.run(function()
      local tasks = {}
      for i = 1, 10 do tasks[i] = loom.spawn(function() return pcall(db.value, db, "SELECT ?", i) end) end
      loom.yield()
      db:close()
      for _, t in ipairs(tasks) do
        local ok, e = t:join()
        if not ok then assert.equal("closed", e.kind) end
      end
    end)
  end)
end)

describe("postgres pool with many waiters", function()
  local pg = require "spec.support.pg"
  local URL = pg.url()

  it("1000 waiters on a pool of 10: served first in first out, on 10 connections, under one timer", function()
    local db = loom.db.open(URL, { pool = { max = 10, acquire_timeout = 60 } })
    loom.run(function()
      -- Fill the pool: 10 connections held until released.
      local release, held, holders = loom.event(), 0, {}
      local all_held = loom.event()
      for i = 1, 10 do
        holders[i] = loom.spawn(function()
          db:with(function(s)
            s:value("SELECT 1")
            held = held + 1
            if held == 10 then all_held:set() end
            release:wait()
          end)
        end)
      end
      all_held:wait(10)
      local timers_before = loom.stats().timers
      local order, backends = {}, {}
      local waiters = {}
      for i = 1, 1000 do
        waiters[i] = loom.spawn(function()
          db:with(function(s)
            order[#order + 1] = i
            backends[s:backend_id()] = true
            s:value("SELECT $1::int", i)
          end)
        end)
      end
      loom.yield()
      local s = db:stats()
      assert.equal(1000, s.waiting)
      assert.equal(10, s.total)
      -- One deadline timer stands for every waiter (before: one per waiter,
      -- 1000 heap entries, the loop's timer re-aimed at every hand-off).
      local timers = loom.stats().timers - timers_before
      assert.is_true(timers <= 1, ("%d timers armed for 1000 waiters"):format(timers))
      release:set()
      for _, t in ipairs(holders) do t:join() end
      for _, t in ipairs(waiters) do t:join() end
      assert.equal(1000, #order)
      for i = 1, 1000 do
        if order[i] ~= i then error(("waiter %d was served %dth"):format(order[i], i)) end
      end
      local n = 0
      for _ in pairs(backends) do n = n + 1 end
      assert.is_true(n <= 10, ("%d backends served the waiters"):format(n))
      s = db:stats()
      assert.equal(10, s.created); assert.equal(0, s.timeouts); assert.equal(0, s.waiting)
      -- The queue is empty: no deadline timer is left behind.
      assert.equal(timers_before, loom.stats().timers)
    end)
    db:close()
  end)

  it("each waiter times out at its own deadline, also after the one before it left", function()
    -- The connection is opened up front (min = 1): the short acquire
    -- timeout times the waiters, never the holder's connect.
    local db = loom.db.open(URL, { pool = { min = 1, max = 1, acquire_timeout = 0.3 } })
    loom.run(function()
      for _ = 1, 1000 do
        if db:stats().idle == 1 then break end
        loom.sleep(0.01)
      end
      assert.equal(1, db:stats().idle, "the pool's connection did not open within 10 s")
      local release = loom.event()
      local got = loom.event()
      local holder = loom.spawn(function() db:with(function() got:set(); release:wait() end) end)
      got:wait(5)
      local function waiter()
        local t0 = loom.now()
        local ok, e = pcall(db.value, db, "SELECT 1")
        return ok, e, loom.now() - t0
      end
      local a = loom.spawn(waiter)
      loom.sleep(0.1)
      local b = loom.spawn(waiter)
      loom.sleep(0.1)
      local c = loom.spawn(waiter)
      loom.sleep(0.05)
      -- b leaves early; c still waits for its own deadline, not for a's.
      b:cancel("not needed")
      for _, t in ipairs({ a, c }) do
        local ok, e, waited = t:join()
        assert.is_false(ok)
        assert.equal("pool_timeout", e.kind)
        -- A lower bound only: how late a timer fires depends on the machine.
        assert.is_true(waited >= 0.28, ("gave up after %.3f s of a 0.3 s timeout"):format(waited))
      end
      local ok_b, e_b = b:join()
      assert.is_false(ok_b); assert.equal("cancelled", e_b.kind)
      local s = db:stats()
      assert.equal(2, s.timeouts); assert.equal(0, s.waiting)
      release:set()
      holder:join()
      assert.equal(1, db:value("SELECT 1"))
    end)
    db:close()
  end)
end)
