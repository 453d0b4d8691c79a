-- The runtime: loom.run, tasks, sleeping and yielding, failure reports,
-- cancellation, blocking calls outside tasks, coroutines of the user's own,
-- channels, select, errors, the embedding API, and garbage collection while
-- things wait. Each spec asserts a promise of API.md, error paths included.
local loom = require "loom"

-- Runs `fn` and returns the error it raised; fails if it did not raise.
local function error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error, but the call succeeded")
  return err
end

-- The error `fn` raises must be a loom error of `kind`.
local function expect_error(kind, fn, ...)
  local err = error_of(fn, ...)
  assert.equal("table", type(err), "error is not a table: " .. tostring(err))
  assert.equal(kind, err.kind, "wrong kind: " .. tostring(err))
  assert.equal("string", type(err.message))
  return err
end

-- Runs a Lua script in a child lua5.4 (killed after `limit` seconds when
-- given: for what, broken, would hang or spin).
local run_child = require("spec.support.child").run

-- Lets every ready task run a few times over (inside a task).
local function settle(n)
  for _ = 1, n or 5 do loom.yield() end
end

-- Nothing may be left behind by a spec: no task, no armed timer.
local function assert_idle()
  local s = loom.stats()
  assert.equal(0, s.tasks, "tasks left alive")
  assert.equal(0, s.timers, "timers left armed")
end

describe("loom.run", function()
  after_each(assert_idle)

  it("returns every result of the main function, nils included", function()
    local r = table.pack(loom.run(function(a, b) return a + b, nil, "x", nil end, 1, 2))
    assert.equal(4, r.n)
    assert.same({ 3, nil, "x", nil, n = 4 }, r)
  end)

  -- A string error came back with the task's traceback appended, so it
  -- was no longer the string raised; a table got a traceback field.
  it("re-raises the main function's error as it was raised", function()
    local line
    local err = error_of(loom.run, function()
      line = debug.getinfo(1, "l").currentline + 1
      error("main broke")
    end)
    assert.equal(("spec/runtime_spec.lua:%d: main broke"):format(line), err)
    assert.equal("main broke", error_of(loom.run, function() error("main broke", 0) end))
  end)

  it("re-raises a table error as the same table, untouched", function()
    local thrown = setmetatable({ kind = "mine", message = "custom" }, {})
    local err = error_of(loom.run, function() error(thrown) end)
    assert.equal(thrown, err)
    assert.same({ kind = "mine", message = "custom" }, err)
    local lerr = expect_error("custom_kind", loom.run, function() loom.error("custom_kind", "it broke") end)
    assert.same({ "kind", "message" }, (function()
      local keys = {}
      for k in pairs(lerr) do keys[#keys + 1] = k end
      table.sort(keys)
      return keys
    end)())
    assert.equal("custom_kind: it broke", tostring(lerr))
  end)

  it("waits for every task the main function spawned", function()
    local finished = {}
    loom.run(function()
      for i = 1, 3 do
        loom.spawn(function()
          loom.sleep(0.01 * i)
          finished[#finished + 1] = i
        end)
      end
    end)
    assert.same({ 1, 2, 3 }, finished)
  end)

  it("cancels the other tasks when the main function fails", function()
    local child, cleaned
    local err = error_of(loom.run, function()
      child = loom.spawn(function()
        local _ <close> = setmetatable({}, { __close = function() cleaned = true end })
        loom.sleep(5)
      end)
      loom.yield()
      error("main gives up")
    end)
    assert.truthy(tostring(err):find("main gives up", 1, true))
    assert.equal("cancelled", child:status())
    assert.is_true(cleaned)
  end)

  it("re-raises the main function's error(nil) as nil", function()
    local r = table.pack(pcall(loom.run, function() error(nil) end))
    assert.same({ false, nil, n = 2 }, r)
  end)

  -- A daemon (what a db:listen() dispatcher runs in) that sleeps stands
  -- for anything the loop holds open that run does not wait for: run
  -- used to poll once more before seeing it had nothing left to wait for,
  -- and that poll blocked until the daemon's timer fired.
  describe("while the loop holds something open for a daemon", function()
    local core = require "loom.core"
    local daemon, woke

    before_each(function()
      woke = false
      daemon = core._spawn_daemon(function() loom.sleep(10); woke = true end)
    end)

    after_each(function()
      daemon:cancel()
      pcall(daemon.join, daemon)
    end)

    it("re-raises main's error at once when main fails before waiting", function()
      local err = error_of(loom.run, function() error("main broke", 0) end)
      assert.truthy(tostring(err):find("main broke", 1, true))
      assert.is_false(woke, "run returned only once the daemon's timer fired")
    end)

    it("re-raises main's error at once after cancelling a task that waits forever", function()
      local waiter
      local err = error_of(loom.run, function()
        waiter = loom.spawn(function() loom.channel():recv() end)
        loom.yield()
        error("main broke", 0)
      end)
      assert.truthy(tostring(err):find("main broke", 1, true))
      assert.equal("cancelled", waiter:status())
      assert.is_false(woke, "run returned only once the daemon's timer fired")
    end)

    it("re-raises main's error at once after cancelling a task that sleeps far into the future", function()
      local sleeper
      local err = error_of(loom.run, function()
        sleeper = loom.spawn(loom.sleep, 1e6)
        loom.sleep(0.001)
        error("main broke", 0)
      end)
      assert.truthy(tostring(err):find("main broke", 1, true))
      assert.equal("cancelled", sleeper:status())
      assert.is_false(woke, "run returned only once the daemon's timer fired")
    end)

    it("returns main's results at once when main finishes without waiting", function()
      assert.equal("done", loom.run(function() return "done" end))
      assert.is_false(woke, "run returned only once the daemon's timer fired")
    end)

    it("a join at top level returns once the task finished", function()
      local t = loom.spawn(function() return "joined" end)
      assert.equal("joined", t:join())
      assert.is_false(woke, "the join returned only once the daemon's timer fired")
    end)
  end)

  -- Run cancelled them again every time nothing could progress, and they
  -- caught it and waited again: a busy loop. (A cancel now strikes every
  -- wait after it, so only a shield can hold it off.)
  it("gives up on tasks that hold the cancel off and wait on what nothing can wake, not spinning", function()
    local ok, out = run_child([[
      local loom = require "loom"
      local stubborn
      local ok, err = pcall(loom.run, function()
        stubborn = loom.spawn(function()
          local never = loom.event()
          pcall(never.wait, never)
          while true do pcall(loom.shield, never.wait, never) end
        end)
        loom.yield()
        error("main broke", 0)
      end)
      print("result", ok, err, stubborn:status())
    ]], 20)
    assert.is_true(ok, "the script did not finish:\n" .. out)
    assert.truthy(out:find("result\tfalse\tmain broke\trunning", 1, true), out)
  end)

  it("raises a deadlock error when the main function waits on what nothing can wake", function()
    local err = expect_error("deadlock", loom.run, function()
      loom.channel():recv()
    end)
    assert.truthy(err.message:find("never end", 1, true))
  end)

  it("inside a task runs the function as a plain call", function()
    local r = table.pack(loom.run(function()
      local outer = loom.current()
      return loom.run(function(x)
        assert.equal(outer, loom.current())
        return x, "inner"
      end, 7)
    end))
    assert.same({ 7, "inner", n = 2 }, r)
  end)

  it("rejects a non-function, naming the argument", function()
    local err = expect_error("argument", loom.run, 42)
    assert.truthy(err.message:find("#1", 1, true))
    assert.truthy(err.message:find("function expected", 1, true))
  end)
end)

describe("tasks", function()
  after_each(assert_idle)

  it("spawn passes arguments and join returns every result, more than once", function()
    loom.run(function()
      local t = loom.spawn(function(a, b, c)
        loom.sleep(0.001)
        return c, b, a, nil
      end, 1, "two", { 3 })
      local r = table.pack(t:join())
      assert.equal(4, r.n)
      assert.equal("two", r[2])
      assert.equal(1, r[3])
      assert.same({ 3 }, r[1])
      assert.same(r, table.pack(t:join()))
    end)
  end)

  it("reports every status a task passes through, from not yet started to done, failed or cancelled", function()
    loom.run(function()
      local gate = loom.event()
      local t = loom.spawn(function() gate:wait(); return "ok" end)
      assert.equal("pending", t:status())
      loom.yield()
      assert.equal("running", t:status())
      gate:set()
      t:join()
      assert.equal("done", t:status())

      local f = loom.spawn(function() error("nope") end)
      pcall(f.join, f)
      assert.equal("failed", f:status())

      local c = loom.spawn(function() loom.sleep(30) end)
      loom.yield()
      c:cancel()
      pcall(c.join, c)
      assert.equal("cancelled", c:status())

      assert.truthy(tostring(t):find("done", 1, true))
    end)
  end)

  it("a task reports running while it runs", function()
    loom.run(function()
      local seen
      local t
      t = loom.spawn(function() seen = t:status() end)
      t:join()
      assert.equal("running", seen)
    end)
  end)

  it("join re-raises a task's string error as raised; task:traceback() says where it failed", function()
    loom.run(function()
      local function deep() error("deep failure", 0) end
      local t = loom.spawn(function() deep() end)
      local err = error_of(t.join, t)
      assert.equal("deep failure", err)
      assert.equal(err, error_of(t.join, t))
      local tb = t:traceback()
      assert.equal("string", type(tb))
      assert.truthy(tb:find("^stack traceback:"), tb)
      assert.truthy(tb:find("in %a* ?'?deep'?"), tb)
    end)
  end)

  it("task:traceback() is nil for a task that did not fail", function()
    loom.run(function()
      local gate = loom.event()
      local running = loom.spawn(function() gate:wait() end)
      local done = loom.spawn(function() return 1 end)
      local cancelled = loom.spawn(function() loom.sleep(30) end)
      loom.yield()
      assert.is_nil(running:traceback())
      cancelled:cancel()
      pcall(cancelled.join, cancelled)
      done:join()
      assert.is_nil(done:traceback())
      assert.is_nil(cancelled:traceback())
      gate:set()
      running:join()
    end)
  end)

  it("join re-raises a task's error(nil) as nil, and the task counts as failed", function()
    loom.run(function()
      local t = loom.spawn(function() loom.sleep(0.001); error(nil) end)
      assert.same({ false, nil, n = 2 }, table.pack(pcall(t.join, t)))
      assert.equal("failed", t:status())
      assert.same({ false, nil, n = 2 }, table.pack(pcall(t.join, t)))
    end)
  end)

  it("join re-raises a task's table error as the same table", function()
    loom.run(function()
      local t = loom.spawn(function() loom.error("custom_kind", "it broke") end)
      local err = expect_error("custom_kind", t.join, t)
      assert.equal("it broke", err.message)
      assert.is_nil(err.traceback)
      assert.equal(err, error_of(t.join, t))
      assert.truthy(t:traceback():find("stack traceback", 1, true))
    end)
  end)

  it("joining yourself is a clear usage error, not a hang", function()
    loom.run(function()
      local t
      t = loom.spawn(function() return t:join() end)
      local err = expect_error("usage", t.join, t)
      assert.truthy(err.message:find("itself", 1, true))
    end)
    local err = expect_error("usage", loom.run, function()
      local me = loom.current()
      me:join()
    end)
    assert.truthy(err.message:find("itself", 1, true))
  end)

  it("several tasks can join the same task", function()
    loom.run(function()
      local t = loom.spawn(function() loom.sleep(0.01); return 5 end)
      local joiners = {}
      for i = 1, 3 do joiners[i] = loom.spawn(function() return t:join() * i end) end
      assert.same({ 5, 10, 15 }, { joiners[1]:join(), joiners[2]:join(), joiners[3]:join() })
    end)
  end)

  it("cancel raises a cancelled error at the wait point, with the reason", function()
    loom.run(function()
      local caught
      local t = loom.spawn(function()
        local _, err = pcall(loom.sleep, 30)
        caught = err
        error(err, 0)
      end)
      loom.yield()
      assert.is_true(t:cancel("shutting down"))
      local err = expect_error("cancelled", t.join, t)
      assert.equal(caught, err)
      assert.equal("shutting down", err.reason)
      assert.truthy(tostring(err):find("shutting down", 1, true))
      assert.equal("cancelled", t:status())
    end)
  end)

  it("cancel of a finished task returns false and changes nothing", function()
    loom.run(function()
      local t = loom.spawn(function() return 1 end)
      t:join()
      assert.is_false(t:cancel())
      assert.equal("done", t:status())
      assert.equal(1, t:join())
    end)
  end)

  it("a task cancelled before it started never runs its body", function()
    loom.run(function()
      local ran = false
      local t = loom.spawn(function() ran = true end)
      assert.is_true(t:cancel())
      expect_error("cancelled", t.join, t)
      assert.is_false(ran)
      assert.equal("cancelled", t:status())
    end)
  end)

  it("a cancel that arrives while the task computes lands at its next wait", function()
    loom.run(function()
      local steps = {}
      local t = loom.spawn(function()
        loom.current():cancel()
        steps[#steps + 1] = "still computing"
        loom.sleep(0.001)
        steps[#steps + 1] = "after the wait"
      end)
      expect_error("cancelled", t.join, t)
      assert.same({ "still computing" }, steps)
    end)
  end)

  it("cancellation runs pcall handlers and <close> cleanup in the task", function()
    loom.run(function()
      local log = {}
      local ch = loom.channel()
      local t = loom.spawn(function()
        local _ <close> = setmetatable({}, { __close = function(_, err)
          log[#log + 1] = "closed with " .. tostring(err and err.kind)
        end })
        local _, err = pcall(ch.recv, ch)
        log[#log + 1] = "pcall saw " .. err.kind
        loom.yield() -- the cancel strikes again
        log[#log + 1] = "never"
      end)
      loom.yield()
      t:cancel()
      expect_error("cancelled", t.join, t)
      assert.same({ "pcall saw cancelled", "closed with cancelled" }, log)
      -- The cancelled receiver left the channel's queue.
      assert.is_false(ch:try_send("anyone?"))
    end)
  end)

  -- The cancel was raised once, at one wait: a pcall caught it and the
  -- task went on as if never cancelled, each later wait waiting again.
  it("once cancelled, every later wait of the task raises cancelled", function()
    loom.run(function()
      local ch, ev, sem = loom.channel(), loom.event(), loom.semaphore(1)
      sem:acquire()
      local other = loom.spawn(loom.sleep, 0.05)
      local waits = {
        sleep = function() loom.sleep(0.05) end,
        ["sleep(0)"] = function() loom.sleep(0) end,
        yield = function() loom.yield() end,
        recv = function() loom.select { { ch, "recv" }, timeout = 0.05 } end,
        event = function() ev:wait(0.05) end,
        semaphore = function() sem:acquire(0.05) end,
        join = function() other:join() end,
      }
      local seen = {}
      local t = loom.spawn(function()
        pcall(loom.sleep, 30) -- the cancel, caught
        for name, wait in pairs(waits) do
          local ok, err = pcall(wait)
          seen[name] = ok and "returned" or (type(err) == "table" and err.kind or tostring(err))
        end
        return "went on"
      end)
      loom.yield()
      t:cancel("stop")
      assert.equal("went on", t:join())
      for name in pairs(waits) do assert.equal("cancelled", seen[name], name) end
      other:join()
    end)
  end)

  it("a cancelled task's cleanup may still wait inside loom.shield", function()
    loom.run(function()
      local flushed = false
      local t = loom.spawn(function()
        local _, err = pcall(function()
          local _ <close> = setmetatable({}, { __close = function()
            loom.shield(function() loom.sleep(0.01); flushed = true end)
          end })
          loom.sleep(30)
        end)
        error(err, 0)
      end)
      loom.yield()
      t:cancel()
      pcall(t.join, t)
      assert.is_true(flushed)
    end)
  end)

  -- The cancel strikes every wait, but once it (or any error) unwinds the
  -- whole task, nothing is left to stop: the task's <close> handlers may
  -- wait to clean up.
  it("<close> cleanup waits, unshielded, while a cancel unwinds the whole task", function()
    loom.run(function()
      local flushed = false
      local t = loom.spawn(function()
        local _ <close> = setmetatable({}, { __close = function()
          loom.sleep(0.005)
          loom.yield()
          flushed = true
        end })
        loom.sleep(30)
      end)
      loom.yield()
      t:cancel()
      expect_error("cancelled", t.join, t)
      assert.is_true(flushed)
    end)
  end)

  it("cleanup that waits also runs when the cancel unwinds the whole task", function()
    loom.run(function()
      local flushed = false
      local t = loom.spawn(function()
        local _ <close> = setmetatable({}, { __close = function()
          loom.shield(function() loom.sleep(0.01); flushed = true end)
        end })
        loom.sleep(30)
      end)
      loom.yield()
      t:cancel()
      local _, err = pcall(t.join, t)
      assert.equal("cancelled", err.kind)
      assert.equal("cancelled", t:status())
      assert.is_true(flushed)
    end)
  end)

  it("a failed task's traceback names where it failed, also after <close> cleanup", function()
    loom.run(function()
      local t = loom.spawn(function()
        local _ <close> = setmetatable({}, { __close = function() loom.sleep(0.001) end })
        local function deep_failure() error({ kind = "mine", message = "boom" }) end
        deep_failure()
      end)
      local _, err = pcall(t.join, t)
      assert.equal("mine", err.kind)
      assert.equal("failed", t:status())
      assert.truthy(t:traceback():find("deep_failure", 1, true), t:traceback())
    end)
  end)

  it("an error re-raised through nested groups is still the value raised", function()
    local thrown = { "a table of mine" }
    for _, value in ipairs({ "deep down", thrown, 42 }) do
      local ok, err = pcall(loom.run, function()
        loom.group(function(g)
          g:spawn(function()
            loom.group(function(g2) g2:spawn(function() error(value, 0) end) end)
          end)
        end)
      end)
      assert.is_false(ok)
      assert.equal(value, err)
    end
  end)

  -- A group re-raises a child's failure by joining it: the traceback of
  -- the task that re-raised it starts where the child failed.
  it("the traceback of a task that re-raised a joined failure starts where it failed", function()
    loom.run(function()
      local line = debug.getinfo(1, "l").currentline + 1
      local function child_fails() error("from the child", 0) end
      local t = loom.spawn(function()
        loom.group(function(g) g:spawn(child_fails) end)
      end)
      assert.equal("from the child", error_of(t.join, t))
      local tb = t:traceback()
      local where = tb:find("runtime_spec.lua:" .. line .. ":", 1, true)
      local rejoined = tb:find("\n(re-raised by a join)\nstack traceback:\n", 1, true)
      assert.truthy(where and rejoined and where < rejoined, tb)
    end)
  end)

  it("spawn rejects what cannot be called, naming the argument", function()
    local err = expect_error("argument", loom.spawn, "not a function")
    assert.truthy(err.message:find("bad argument #1 to 'loom.spawn'", 1, true))
    -- A callable table is accepted.
    local callable = setmetatable({}, { __call = function(_, x) return x * 2 end })
    assert.equal(8, loom.run(function() return loom.spawn(callable, 4):join() end))
  end)

  it("spawn and join work outside loom.run, the join driving the loop", function()
    local t = loom.spawn(function() loom.sleep(0.01); return "from outside" end)
    assert.equal("from outside", t:join())
  end)
end)

describe("sleep, now and yield", function()
  after_each(assert_idle)

  it("now is a monotonic number of seconds", function()
    local a = loom.now()
    assert.equal("number", type(a))
    local b = loom.now()
    assert.is_true(b >= a)
  end)

  -- libuv runs due timers before it polls; a timeout that is already due
  -- then must not wait for the next unrelated event (another task's 2 s
  -- sleep here) before the task it woke runs.
  it("a timeout already due ends its wait at once, whatever else is pending", function()
    loom.run(function()
      local sleeper = loom.spawn(function() loom.sleep(2) end)
      local t0 = loom.now()
      local ok, err = pcall(loom.timeout, 0, loom.sleep, 1)
      assert.is_false(ok)
      assert.is_true(loom.is_error(err, "timeout"))
      -- The next event would come after 1 s (the inner sleep) at the
      -- earliest: half of that is room enough for a loaded machine.
      assert.is_true(loom.now() - t0 < 0.5, ("the timeout took %.3f s"):format(loom.now() - t0))
      sleeper:cancel()
    end)
  end)

  it("sleep waits at least the time asked", function()
    loom.run(function()
      local t0 = loom.now()
      loom.sleep(0.05)
      assert.is_true(loom.now() - t0 >= 0.045)
    end)
  end)

  it("sleepers wake in the order of their deadlines, not of their spawning", function()
    local order = {}
    loom.run(function()
      for _, d in ipairs({ 0.06, 0.02, 0.04 }) do
        loom.spawn(function() loom.sleep(d); order[#order + 1] = d end)
      end
    end)
    assert.same({ 0.02, 0.04, 0.06 }, order)
  end)

  it("sleeping tasks run side by side", function()
    local t0 = loom.now()
    loom.run(function()
      for _ = 1, 20 do loom.spawn(loom.sleep, 0.1) end
    end)
    assert.is_true(loom.now() - t0 < 1.5, "20 sleeps of 0.1 s took as long as running one by one")
  end)

  it("yield and sleep(0) let the other ready tasks run", function()
    local log = {}
    loom.run(function()
      local a = loom.spawn(function()
        log[#log + 1] = "a1"; loom.yield(); log[#log + 1] = "a2"
      end)
      local b = loom.spawn(function()
        log[#log + 1] = "b1"; loom.sleep(0); log[#log + 1] = "b2"
      end)
      a:join(); b:join()
    end)
    assert.same({ "a1", "b1", "a2", "b2" }, log)
  end)

  -- The loop polled timers and I/O only after 512 resumes: a task yielding
  -- every 0.1 ms of work held them off for 50 ms and more, and a 10 ms
  -- ticker ticked 2 or 3 times in 300 ms. Counted in chunks of work, not
  -- in ticks per second, so that a loaded machine cannot fail it: a chunk
  -- lasts at least 0.1 ms of wall time, a tick is due every 10 ms, so
  -- about 100 chunks fit between two ticks, plus those of the tick's
  -- lateness (a poll is due within about 1 ms, libuv's timers have
  -- millisecond steps). Being descheduled only makes the chunks between
  -- ticks fewer. 300 leaves room for all that; a loop that polls after 512
  -- resumes runs at least 512 chunks between two ticks.
  it("timers run while a task computes in chunks, yielding between them", function()
    loom.run(function()
      local chunks, gaps, since = 0, {}, 0
      local stop = false
      local ticker = loom.spawn(function()
        while not stop do
          loom.sleep(0.01)
          gaps[#gaps + 1] = chunks - since
          since = chunks
        end
      end)
      local t0 = loom.now()
      while chunks < 3000 do
        local chunk_end = loom.now() + 0.0001
        repeat until loom.now() >= chunk_end
        chunks = chunks + 1
        if chunks % 2 == 0 then loom.yield() else loom.sleep(0) end
      end
      local elapsed = loom.now() - t0
      stop = true
      ticker:join()
      gaps[#gaps + 1] = chunks - since
      local widest = math.max(table.unpack(gaps))
      assert.is_true(widest <= 300,
        ("%d chunks of 0.1 ms between two ticks of a 10 ms ticker (%d ticks in %.0f ms)")
          :format(widest, #gaps - 1, elapsed * 1000))
    end)
  end)

  it("a bare coroutine.yield in a task body acts as loom.yield", function()
    local log = {}
    loom.run(function()
      local a = loom.spawn(function() log[#log + 1] = "a1"; coroutine.yield(); log[#log + 1] = "a2" end)
      local b = loom.spawn(function() log[#log + 1] = "b1" end)
      a:join(); b:join()
    end)
    assert.same({ "a1", "b1", "a2" }, log)
  end)

  it("yield outside any task is harmless", function()
    assert.has_no.errors(function() loom.yield() end)
  end)

  it("sleep rejects negative, NaN and non-number durations", function()
    assert.truthy(expect_error("argument", loom.sleep, -1).message:find("#1", 1, true))
    expect_error("argument", loom.sleep, 0 / 0)
    local err = expect_error("argument", loom.sleep, "soon")
    assert.truthy(err.message:find("bad argument #1 to 'loom.sleep'", 1, true))
  end)
end)

describe("failures nobody joins", function()
  it("are reported on stderr with the message and a traceback", function()
    local ok, out = run_child([[
      local loom = require "loom"
      local function inner() error("unjoined boom") end
      loom.run(function()
        loom.spawn(function() loom.sleep(0.001); inner() end)
      end)
      print("script went on")
    ]])
    assert.is_true(ok, out)
    assert.truthy(out:find("script went on", 1, true), out)
    assert.truthy(out:find("nobody joined", 1, true), out)
    assert.truthy(out:find("unjoined boom", 1, true), out)
    assert.truthy(out:find("stack traceback", 1, true), out)
    assert.truthy(out:find("inner", 1, true), out)
  end)

  -- The report looked for a traceback field in the error itself: on nil or
  -- a number that raised inside the finalizer, and the report was lost.
  it("are reported whatever the error value: nil, a number, a boolean", function()
    local ok, out = run_child([[
      local loom = require "loom"
      loom.run(function()
        loom.spawn(function() error(nil) end)
        loom.spawn(function() error(42) end)
        loom.spawn(function() error(false) end)
      end)
      collectgarbage(); collectgarbage()
      print("script went on")
    ]])
    assert.is_true(ok, out)
    assert.truthy(out:find("script went on", 1, true), out)
    for _, value in ipairs({ "nil", "42", "false" }) do
      assert.truthy(out:find("nobody joined it: " .. value .. "\nstack traceback", 1, true), out)
    end
  end)

  it("are not reported once joined, nor when cancelled or successful", function()
    local ok, out = run_child([[
      local loom = require "loom"
      loom.run(function()
        local t = loom.spawn(function() error("joined failure") end)
        pcall(t.join, t)
        local c = loom.spawn(function() loom.sleep(30) end)
        loom.yield()
        c:cancel()
        loom.spawn(function() return "fine" end)
      end)
      collectgarbage(); collectgarbage()
      print("clean exit")
    ]])
    assert.is_true(ok, out)
    assert.truthy(out:find("clean exit", 1, true), out)
    assert.falsy(out:find("nobody joined", 1, true), out)
    assert.falsy(out:find("joined failure", 1, true), out)
  end)

  it("go to the loom.on_error handler instead, with the error, the task and the traceback", function()
    local seen = {}
    loom.on_error(function(err, task, traceback)
      if type(err) == "string" and err:find("for the handler", 1, true) then
        seen[#seen + 1] = { err = err, status = task:status(), traceback = traceback, task = task }
      end
    end)
    local ok, e = pcall(function()
      loom.run(function()
        loom.spawn(function() error("for the handler", 0) end)
      end)
      for _ = 1, 4 do collectgarbage() end
    end)
    loom.on_error(nil)
    assert.is_true(ok, e)
    assert.equal(1, #seen)
    assert.equal("for the handler", seen[1].err)
    assert.equal("failed", seen[1].status)
    assert.truthy(seen[1].traceback:find("^stack traceback:"), seen[1].traceback)
    assert.equal(seen[1].task:traceback(), seen[1].traceback)
  end)

  -- They were reported only when the collector got to the task: a program
  -- that kept it (or simply had not collected yet) never heard of it.
  describe("are reported without waiting for the collector", function()
    local seen, keep -- luacheck: ignore 241 (keep holds the failed tasks: a kept task is reported too)

    before_each(function()
      seen, keep = {}, {}
      loom.on_error(function(err) seen[#seen + 1] = err end)
      collectgarbage("stop")
    end)

    after_each(function()
      collectgarbage("restart")
      loom.on_error(nil)
    end)

    it("by the time loom.run returns, in the order they failed", function()
      loom.run(function()
        keep[1] = loom.spawn(function() loom.sleep(0.002); error("second", 0) end)
        keep[2] = loom.spawn(function() loom.sleep(0.001); error("first", 0) end)
      end)
      assert.same({ "first", "second" }, seen)
    end)

    it("also when run re-raises main's error, which itself is not reported", function()
      local err = error_of(loom.run, function()
        keep[1] = loom.spawn(function() error("unjoined", 0) end)
        loom.yield()
        error("main", 0)
      end)
      assert.equal("main", err)
      assert.same({ "unjoined" }, seen)
    end)

    it("never a task joined before run returns; once, one joined after", function()
      local late
      loom.run(function()
        local early = loom.spawn(function() error("early", 0) end)
        late = loom.spawn(function() error("late", 0) end)
        loom.yield()
        loom.spawn(function() loom.sleep(0.001); pcall(early.join, early) end)
      end)
      assert.same({ "late" }, seen)
      assert.equal("late", error_of(late.join, late))
      collectgarbage("restart")
      for _ = 1, 4 do collectgarbage() end
      assert.same({ "late" }, seen)
    end)

    it("outside run, once the loop goes idle; never one a top-level join waits for", function()
      keep[1] = loom.spawn(function() error("stepped", 0) end)
      loom.step(0)
      assert.same({ "stepped" }, seen)
      keep[2] = loom.spawn(function() error("while the top level sleeps", 0) end)
      loom.sleep(0.001)
      assert.same({ "stepped", "while the top level sleeps" }, seen)
      local joined = loom.spawn(function() loom.sleep(0.001); error("joined at top level", 0) end)
      assert.equal("joined at top level", error_of(joined.join, joined))
      loom.step(0)
      assert.same({ "stepped", "while the top level sleeps" }, seen)
    end)
  end)

  it("a failing on_error handler is itself reported, not raised", function()
    local ok, out = run_child([[
      local loom = require "loom"
      loom.on_error(function(err) error("handler is broken") end)
      loom.run(function() loom.spawn(function() error("original") end) end)
      collectgarbage(); collectgarbage()
      print("survived")
    ]])
    assert.is_true(ok, out)
    assert.truthy(out:find("survived", 1, true), out)
    assert.truthy(out:find("handler is broken", 1, true), out)
  end)

  it("on_error rejects a handler that cannot be called", function()
    expect_error("argument", loom.on_error, 42)
  end)

  it("on_error calls a callable table it accepted, not stderr", function()
    local seen = {}
    loom.on_error(setmetatable({}, { __call = function(_, err, task, traceback)
      seen[#seen + 1] = { err, task:status(), type(traceback) }
    end }))
    local ok, e = pcall(loom.run, function()
      loom.spawn(function() error("to the callable", 0) end)
    end)
    loom.on_error(nil)
    assert.is_true(ok, e)
    assert.same({ { "to the callable", "failed", "string" } }, seen)
  end)
end)

describe("blocking calls outside any task", function()
  after_each(assert_idle)

  it("loom.sleep at top level drives the loop itself", function()
    local ticked = false
    loom.spawn(function() ticked = true end)
    local t0 = loom.now()
    loom.sleep(0.02)
    assert.is_true(loom.now() - t0 >= 0.015)
    assert.is_true(ticked, "the spawned task did not run while the top level slept")
  end)

  it("channel recv at top level gets what a spawned sender sends", function()
    local ch = loom.channel()
    loom.spawn(function()
      for i = 1, 3 do loom.sleep(0.001); ch:send(i) end
      ch:close()
    end)
    local got = {}
    for v in ch:iter() do got[#got + 1] = v end
    assert.same({ 1, 2, 3 }, got)
    assert.same({ nil, false }, { ch:recv() })
  end)

  it("a top-level wait nothing can end raises deadlock instead of hanging", function()
    expect_error("deadlock", function() loom.channel():recv() end)
    expect_error("deadlock", function() loom.event():wait() end)
  end)

  it("a top-level wait honours its own timeout", function()
    local sem = loom.semaphore(1)
    sem:acquire()
    local t0 = loom.now()
    expect_error("timeout", sem.acquire, sem, 0.02)
    assert.is_true(loom.now() - t0 >= 0.015)
    sem:release()
    assert.equal(sem, sem:acquire(0.02))
    sem:release()
  end)
end)

describe("coroutines of the user's own", function()
  after_each(assert_idle)

  it("a loom wait inside coroutine.wrap passes through to the scheduler", function()
    local log = {}
    loom.run(function()
      loom.spawn(function()
        for i = 1, 3 do log[#log + 1] = "other " .. i; loom.sleep(0.005) end
      end)
      local ch = loom.channel(3)
      for i = 1, 3 do ch:send(i * 10) end
      local gen = coroutine.wrap(function()
        for _ = 1, 3 do
          loom.sleep(0.004) -- passes through
          coroutine.yield(ch:recv()) -- the user's own yield
        end
      end)
      local got = {}
      for v in gen do
        got[#got + 1] = v
        if #got == 3 then break end
      end
      assert.same({ 10, 20, 30 }, got)
    end)
    -- The other task ran while the iterator slept.
    assert.equal(3, #log)
  end)

  it("coroutine.resume sees only the user's own yields and results", function()
    loom.run(function()
      local co = coroutine.create(function(a)
        loom.sleep(0.001)
        local b = coroutine.yield(a + 1)
        loom.yield()
        return b * 2
      end)
      assert.same({ true, 2 }, { coroutine.resume(co, 1) })
      assert.same({ true, 10 }, { coroutine.resume(co, 5) })
      assert.equal("dead", coroutine.status(co))
      assert.same({ false, "cannot resume dead coroutine" }, { coroutine.resume(co) })
    end)
  end)

  it("an error inside the user's coroutine comes back through resume and wrap", function()
    loom.run(function()
      local co = coroutine.create(function() loom.sleep(0.001); error("inner", 0) end)
      assert.same({ false, "inner" }, { coroutine.resume(co) })
      local gen = coroutine.wrap(function() loom.sleep(0.001); error({ kind = "k" }) end)
      local err = error_of(gen)
      assert.equal("k", err.kind)
    end)
  end)

  it("works outside any task too, the resumer driving the loop", function()
    local gen = coroutine.wrap(function()
      for i = 1, 3 do loom.sleep(0.001); coroutine.yield(i) end
    end)
    assert.same({ 1, 2, 3 }, { gen(), gen(), gen() })
  end)

  it("a task cancelled while its user coroutine waits gets the cancel", function()
    loom.run(function()
      local t = loom.spawn(function()
        local gen = coroutine.wrap(function() loom.sleep(30); coroutine.yield(1) end)
        return gen()
      end)
      loom.yield()
      t:cancel()
      expect_error("cancelled", t.join, t)
    end)
  end)
end)

describe("channels", function()
  after_each(assert_idle)

  it("a rendezvous channel hands a value over only when a receiver takes it", function()
    loom.run(function()
      local ch = loom.channel()
      assert.equal(0, ch:cap())
      local sent = false
      local s = loom.spawn(function() ch:send("v"); sent = true end)
      settle()
      assert.is_false(sent, "send returned with no receiver")
      assert.equal(0, #ch)
      assert.same({ "v", true }, { ch:recv() })
      s:join()
      assert.is_true(sent)
    end)
  end)

  it("a bounded channel buffers up to its capacity, then send waits", function()
    loom.run(function()
      local ch = loom.channel(2)
      assert.equal(2, ch:cap())
      local progress = 0
      local s = loom.spawn(function()
        for i = 1, 3 do ch:send(i); progress = i end
      end)
      settle()
      assert.equal(2, progress)
      assert.equal(2, #ch)
      assert.is_false(ch:try_send(99))
      assert.equal(1, ch:recv())
      s:join()
      assert.equal(3, progress)
      assert.equal(2, #ch)
      assert.equal(2, (ch:recv()))
      assert.equal(3, (ch:recv()))
      assert.equal(0, #ch)
    end)
  end)

  it("keeps values in FIFO order, with false and tables intact", function()
    loom.run(function()
      local ch = loom.channel(4)
      local t = {}
      ch:send(false); ch:send(t); ch:send(0); ch:send("s")
      assert.same({ false, true }, { ch:recv() })
      assert.equal(t, ch:recv())
      assert.equal(0, ch:recv())
      assert.equal("s", ch:recv())
    end)
  end)

  it("serves waiting receivers first come, first served", function()
    loom.run(function()
      local ch = loom.channel()
      local got = {}
      local rs = {}
      for i = 1, 3 do
        rs[i] = loom.spawn(function() got[i] = ch:recv() end)
        settle(1)
      end
      for _, v in ipairs({ "a", "b", "c" }) do ch:send(v) end
      for i = 1, 3 do rs[i]:join() end
      assert.same({ "a", "b", "c" }, got)
    end)
  end)

  it("serves waiting senders first come, first served", function()
    loom.run(function()
      for _, cap in ipairs({ 0, 1 }) do
        local ch = loom.channel(cap)
        if cap == 1 then ch:send(0) end
        for i = 1, 3 do
          loom.spawn(function() ch:send(i) end)
          settle(1)
        end
        local got = {}
        for _ = 1, (cap == 1 and 4 or 3) do got[#got + 1] = ch:recv() end
        assert.same(cap == 1 and { 0, 1, 2, 3 } or { 1, 2, 3 }, got)
      end
    end)
  end)

  it("try_send and try_recv never wait", function()
    loom.run(function()
      local ch = loom.channel(1)
      assert.same({ nil, false }, { ch:try_recv() })
      assert.is_true(ch:try_send("x"))
      assert.is_false(ch:try_send("y"))
      assert.same({ "x", true }, { ch:try_recv() })

      local rv = loom.channel()
      assert.is_false(rv:try_send(1), "rendezvous try_send succeeded with nobody receiving")
      local got
      local r = loom.spawn(function() got = rv:recv() end)
      settle(1)
      assert.is_true(rv:try_send(2))
      r:join()
      assert.equal(2, got)
      local s = loom.spawn(function() rv:send(3) end)
      settle(1)
      assert.same({ 3, true }, { rv:try_recv() })
      s:join()
    end)
  end)

  it("close: buffered values stay receivable, then recv gives nil, false", function()
    loom.run(function()
      local ch = loom.channel(3)
      ch:send(1); ch:send(2)
      assert.is_true(ch:close())
      assert.is_false(ch:close(), "closing twice reported success")
      assert.is_true(ch:is_closed())
      assert.equal(2, #ch)
      assert.same({ 1, true }, { ch:recv() })
      assert.same({ 2, true }, { ch:try_recv() })
      assert.same({ nil, false }, { ch:recv() })
      assert.same({ nil, false }, { ch:recv() })
      assert.same({ nil, false }, { ch:try_recv() })
    end)
  end)

  it("close: send and try_send raise an error of kind closed", function()
    loom.run(function()
      local ch = loom.channel(3)
      ch:close()
      local err = expect_error("closed", ch.send, ch, 1)
      assert.truthy(tostring(err):find("^closed: "))
      expect_error("closed", ch.try_send, ch, 1)
      assert.equal(0, #ch)
    end)
  end)

  it("close wakes waiting receivers with nil, false and waiting senders with closed", function()
    loom.run(function()
      local ch = loom.channel()
      local results = {}
      local r = loom.spawn(function() results.r = table.pack(ch:recv()) end)
      settle()
      ch:close()
      r:join()
      assert.same({ n = 2, nil, false }, results.r)

      local full = loom.channel(1)
      full:send("kept")
      local s = loom.spawn(function() full:send("never") end)
      settle()
      full:close()
      expect_error("closed", s.join, s)
      assert.same({ "kept", true }, { full:recv() })
      assert.same({ nil, false }, { full:recv() })
    end)
  end)

  it("iter yields every value until the channel is closed and drained", function()
    loom.run(function()
      local ch = loom.channel(2)
      loom.spawn(function()
        for i = 1, 5 do ch:send(i) end
        ch:send(false)
        ch:close()
      end)
      local got = {}
      for v in ch:iter() do got[#got + 1] = v end
      assert.same({ 1, 2, 3, 4, 5, false }, got)
    end)
  end)

  it("a <close> channel closes when its scope ends, releasing the consumer", function()
    loom.run(function()
      local got = {}
      local consumer
      do
        local ch <close> = loom.channel(1)
        consumer = loom.spawn(function() for v in ch:iter() do got[#got + 1] = v end end)
        ch:send("a"); ch:send("b")
      end
      consumer:join()
      assert.same({ "a", "b" }, got)
    end)
  end)

  it("a <close> channel also closes when the scope is left by an error", function()
    loom.run(function()
      local kept
      local ok = pcall(function()
        local ch <close> = loom.channel(1)
        kept = ch
        error("leaving")
      end)
      assert.is_false(ok)
      assert.is_true(kept:is_closed())
    end)
  end)

  it("cannot carry nil, and rejects bad capacities", function()
    local ch = loom.channel(1)
    local err = expect_error("argument", ch.send, ch, nil)
    assert.truthy(err.message:find("nil", 1, true))
    expect_error("argument", ch.try_send, ch)
    expect_error("argument", loom.channel, -1)
    expect_error("argument", loom.channel, 1.5)
    local e = expect_error("argument", loom.channel, "big")
    assert.truthy(e.message:find("bad argument #1 to 'loom.channel'", 1, true))
  end)

  it("methods called on something else name the bad self", function()
    local ch = loom.channel()
    local err = expect_error("argument", ch.recv, {})
    assert.truthy(err.message:find("loom.channel expected", 1, true))
  end)
end)

describe("loom.select", function()
  after_each(assert_idle)

  it("performs a ready receive: index, value, true", function()
    loom.run(function()
      local a, b = loom.channel(1), loom.channel(1)
      b:send("from b")
      assert.same({ 2, "from b", true }, { loom.select { { a, "recv" }, { b, "recv" } } })
    end)
  end)

  it("performs a ready send: index, nil, true, and the value arrives", function()
    loom.run(function()
      local a, b = loom.channel(), loom.channel(1)
      assert.same({ 2, nil, true }, { loom.select { { a, "recv" }, { b, "send", "x" } } })
      assert.same({ "x", true }, { b:try_recv() })
    end)
  end)

  it("waits across sends and receives and performs exactly the one that happened", function()
    loom.run(function()
      local inbox, outbox = loom.channel(), loom.channel()
      local r
      local t = loom.spawn(function()
        r = table.pack(loom.select { { inbox, "recv" }, { outbox, "send", "offer" } })
      end)
      settle()
      assert.equal("offer", outbox:recv())
      t:join()
      assert.same({ 2, nil, true, n = 3 }, r)
      -- The receive case was withdrawn: a send now finds nobody.
      assert.is_false(inbox:try_send("late"))

      local t2 = loom.spawn(function()
        r = table.pack(loom.select { { inbox, "recv" }, { outbox, "send", "unwanted" } })
      end)
      settle()
      inbox:send("msg")
      t2:join()
      assert.same({ 1, "msg", true, n = 3 }, r)
      -- The offered value was withdrawn, not left for a later receiver.
      assert.same({ nil, false }, { outbox:try_recv() })
    end)
  end)

  it("takes only one of several ready cases", function()
    loom.run(function()
      local a, b = loom.channel(1), loom.channel(1)
      a:send(1); b:send(2)
      local i = loom.select { { a, "recv" }, { b, "recv" } }
      assert.equal(1, #a + #b)
      assert.equal(i == 1 and 0 or 1, #a)
    end)
  end)

  it("picks fairly among ready cases", function()
    loom.run(function()
      local a, b = loom.channel(1), loom.channel(1)
      local count = { 0, 0 }
      for _ = 1, 200 do
        a:try_send(1); b:try_send(2)
        local i = loom.select { { a, "recv" }, { b, "recv" } }
        count[i] = count[i] + 1
      end
      assert.is_true(count[1] > 20 and count[2] > 20, "unfair: " .. count[1] .. "/" .. count[2])
    end)
  end)

  it("returns nil when the timeout passes first", function()
    loom.run(function()
      local a = loom.channel()
      local t0 = loom.now()
      local r = table.pack(loom.select { { a, "recv" }, { a, "send", 1 }, timeout = 0.03 })
      assert.is_nil(r[1])
      assert.is_true(loom.now() - t0 >= 0.025)
      assert.same({ nil, false }, { a:try_recv() })
      assert.is_nil(loom.select { { a, "recv" }, timeout = 0 })
      assert.is_nil(loom.select { timeout = 0.001 })
    end)
  end)

  it("a case that becomes ready before the timeout wins", function()
    loom.run(function()
      local a = loom.channel()
      loom.spawn(function() loom.sleep(0.01); a:send("in time") end)
      assert.same({ 1, "in time", true }, { loom.select { { a, "recv" }, timeout = 5 } })
    end)
  end)

  it("on a closed channel: recv gives index, nil, false; send raises closed", function()
    loom.run(function()
      local open, closed = loom.channel(), loom.channel()
      closed:close()
      assert.same({ 2, nil, false }, { loom.select { { open, "recv" }, { closed, "recv" } } })
      local err = expect_error("closed", loom.select, { { closed, "send", 1 } })
      assert.truthy(err.message:find("case 1", 1, true))
    end)
  end)

  it("a channel closed while select waits wakes it with nil, false", function()
    loom.run(function()
      local a, b = loom.channel(), loom.channel()
      loom.spawn(function() loom.sleep(0.005); b:close() end)
      assert.same({ 2, nil, false }, { loom.select { { a, "recv" }, { b, "recv" } } })
    end)
  end)

  it("works at top level, outside any task", function()
    local a = loom.channel()
    loom.spawn(function() a:send(7) end)
    assert.same({ 1, 7, true }, { loom.select { { a, "recv" } } })
    assert.is_nil(loom.select { { a, "recv" }, timeout = 0.005 })
  end)

  it("rejects malformed cases, naming what is wrong", function()
    local ch = loom.channel()
    assert.truthy(expect_error("argument", loom.select, "x").message:find("#1", 1, true))
    expect_error("argument", loom.select, {})
    assert.truthy(expect_error("argument", loom.select, { 5 }).message:find("case 1", 1, true))
    assert.truthy(expect_error("argument", loom.select, { { ch, "recv" }, { {}, "recv" } })
      .message:find("case 2", 1, true))
    expect_error("argument", loom.select, { { ch, "peek" } })
    expect_error("argument", loom.select, { { ch, "send" } })
    expect_error("argument", loom.select, { { ch, "recv" }, timeout = -1 })
    expect_error("argument", loom.select, { { ch, "recv" }, timeout = "soon" })
  end)
end)

describe("errors", function()
  it("are tables with kind and message and read as one line", function()
    local err = expect_error("closed", function()
      local ch = loom.channel(); ch:close(); ch:send(1)
    end)
    assert.is_true(loom.is_error(err))
    assert.is_true(loom.is_error(err, "closed"))
    assert.is_false(loom.is_error(err, "timeout"))
    assert.is_false(loom.is_error("closed"))
    assert.is_false(loom.is_error({ kind = "closed" }), "a look-alike table is not a loom error")
    local s = tostring(err)
    assert.equal("closed: " .. err.message, s)
    assert.falsy(s:find("\n"))
  end)

  it("loom.error raises a kind with a message and extra fields", function()
    local err = expect_error("stale", loom.error, "stale", "row changed", { id = 3, kind = "ignored" })
    assert.equal("row changed", err.message)
    assert.equal(3, err.id)
    assert.equal("stale: row changed", tostring(err))
    assert.is_true(loom.is_error(err, "stale"))
    assert.equal("bare", expect_error("bare", loom.error, "bare").message)
  end)

  it("tostring shows a code when there is one", function()
    local err = error_of(loom.error, "query", "syntax", { code = "42601" })
    assert.equal("query [42601]: syntax", tostring(err))
  end)

  it("wrong argument types name the function and the argument", function()
    local cases = {
      { "loom.sleep", loom.sleep, { "x" }, 1 },
      { "loom.spawn", loom.spawn, { {} }, 1 },
      { "loom.channel", loom.channel, { {} }, 1 },
      { "loom.semaphore", loom.semaphore, { "two" }, 1 },
      { "loom.timeout", loom.timeout, { "x", print }, 1 },
      { "loom.timeout", loom.timeout, { 1, 2 }, 2 },
      { "loom.map", loom.map, { 5, print }, 1 },
      { "loom.map", loom.map, { {}, 5 }, 2 },
      { "loom.retry", loom.retry, { 5 }, 1 },
      { "loom.lazy", loom.lazy, { nil }, 1 },
      { "loom.on_error", loom.on_error, { true }, 1 },
      { "loom.step", loom.step, { "now" }, 1 },
      { "loom.pipeline", loom.pipeline, { 5 }, 1 },
    }
    for _, c in ipairs(cases) do
      local name, fn, args, n = c[1], c[2], c[3], c[4]
      local err = expect_error("argument", fn, table.unpack(args, 1, 2))
      local want = ("bad argument #%d to '%s'"):format(n, name)
      assert.truthy(err.message:find(want, 1, true), name .. ": " .. err.message)
    end
  end)

  it("methods name their argument, not counting self", function()
    local sem, mu, ev, wg = loom.semaphore(1), loom.mutex(), loom.event(), loom.waitgroup()
    for _, c in ipairs({
      { "acquire", function() sem:acquire("soon") end },
      { "lock", function() mu:lock({}) end },
      { "wait", function() ev:wait("x") end },
      { "wait", function() wg:wait(-1) end },
      { "add", function() wg:add("one") end },
      { "send", function() loom.channel(1):send(nil) end },
    }) do
      local err = expect_error("argument", c[2])
      local want = ("bad argument #1 to '%s'"):format(c[1])
      assert.truthy(err.message:find(want, 1, true), err.message)
    end
  end)

  it("negative and NaN timeouts are argument errors, whatever waits", function()
    local sem, mu, ev, wg = loom.semaphore(1), loom.mutex(), loom.event(), loom.waitgroup()
    wg:add(1)
    sem:acquire()
    -- Checked before anything else, also when the call would not wait.
    for _, bad in ipairs({ -1, 0 / 0 }) do
      for _, c in ipairs({
        { "acquire", function() sem:acquire(bad) end },
        { "lock", function() mu:lock(bad) end },
        { "wait", function() ev:wait(bad) end },
        { "wait", function() wg:wait(bad) end },
        { "sleep", function() loom.sleep(bad) end },
        { "select", function() loom.select { { loom.channel(), "recv" }, timeout = bad } end },
      }) do
        expect_error("argument", c[2])
      end
    end
    sem:release()
    wg:done()
  end)

  it("timeouts of sync primitives are errors of kind timeout", function()
    loom.run(function()
      local sem = loom.semaphore(1)
      sem:acquire()
      local err = expect_error("timeout", sem.acquire, sem, 0.01)
      assert.truthy(tostring(err):find("^timeout: "))
      sem:release()
    end)
  end)
end)

describe("embedding: step, fd, next_timeout", function()
  after_each(assert_idle)

  it("step runs ready tasks and reports whether work remains", function()
    local done = false
    loom.spawn(function() loom.sleep(0.02); done = true end)
    local steps = 0
    local t0 = loom.now()
    while loom.step(0.5) do
      steps = steps + 1
      assert(steps < 1000, "step never ran out of work")
    end
    assert.is_true(done)
    assert.is_true(loom.now() - t0 < 5)
    assert.is_false(loom.step(0))
  end)

  it("step(0) and step() never block", function()
    local t = loom.spawn(function() loom.sleep(30) end)
    local t0 = loom.now()
    for _ = 1, 5 do assert.is_true(loom.step(0)) end
    assert.is_true(loom.step())
    assert.is_true(loom.now() - t0 < 2, "step(0) blocked")
    t:cancel()
    while loom.step(0) do end
    assert.equal("cancelled", t:status())
  end)

  it("step(timeout) blocks at most about timeout when nothing is due", function()
    local t = loom.spawn(function() loom.sleep(30) end)
    loom.step(0)
    local t0 = loom.now()
    assert.is_true(loom.step(0.05))
    local took = loom.now() - t0
    assert.is_true(took >= 0.03 and took < 5, "step(0.05) took " .. took)
    t:cancel()
    while loom.step(0) do end
  end)

  it("step cannot be called from inside a task", function()
    loom.run(function()
      local err = expect_error("usage", loom.step, 0)
      assert.truthy(err.message:find("inside a task", 1, true))
    end)
  end)

  it("fd is the loop's backend file descriptor", function()
    local fd = loom.fd()
    assert.equal("integer", math.type(fd))
    assert.is_true(fd >= 0)
    assert.equal(fd, loom.fd())
  end)

  it("next_timeout: nil when idle, 0 with a task ready, the nearest timer otherwise", function()
    assert.is_nil(loom.next_timeout())
    local t = loom.spawn(function() loom.sleep(0.2) end)
    assert.equal(0, loom.next_timeout())
    loom.step(0)
    local nt = loom.next_timeout()
    assert.equal("number", type(nt))
    assert.is_true(nt > 0 and nt <= 0.2, "next_timeout " .. tostring(nt))
    local t2 = loom.spawn(function() loom.sleep(0.05) end)
    loom.step(0)
    assert.is_true(loom.next_timeout() <= 0.05)
    t:cancel(); t2:cancel()
    while loom.step(0) do end
    assert.is_nil(loom.next_timeout())
  end)
end)

describe("garbage collection", function()
  after_each(assert_idle)

  it("waiting tasks nobody references survive full collections and finish", function()
    local results = {}
    local weak = setmetatable({}, { __mode = "v" })
    loom.run(function()
      local ch = loom.channel()
      local ev = loom.event()
      local sem = loom.semaphore(1)
      sem:acquire()
      do
        weak[1] = loom.spawn(function() results.recv = ch:recv() end)
        weak[2] = loom.spawn(function() loom.sleep(0.02); results.sleep = true end)
        weak[3] = loom.spawn(function() ev:wait(); results.event = true end)
        weak[4] = loom.spawn(function() sem:acquire(); sem:release(); results.sem = true end)
        weak[5] = loom.spawn(function()
          local i, v = loom.select { { ch, "recv" }, timeout = 0.03 }
          results.select = i == nil and "timeout" or v
        end)
        weak[6] = loom.spawn(function()
          local gen = coroutine.wrap(function() loom.sleep(0.01); coroutine.yield("wrapped") end)
          results.wrap = gen()
        end)
      end
      settle()
      for _ = 1, 4 do collectgarbage("collect") end
      for i = 1, 6 do assert.is_not_nil(weak[i], "waiting task " .. i .. " was collected") end
      ch:send("value")
      ev:set()
      sem:release()
      collectgarbage("collect")
    end)
    assert.same({
      recv = "value", sleep = true, event = true, sem = true, select = "timeout", wrap = "wrapped",
    }, results)
    for _ = 1, 4 do collectgarbage("collect") end
    assert.is_nil(next(weak), "finished tasks were never collected")
  end)

  it("a channel and its buffered values are collected once unreachable", function()
    local weak = setmetatable({}, { __mode = "k" })
    do
      local ch = loom.channel(4)
      local v = {}
      ch:send(v)
      weak[ch] = true
      weak[v] = true
    end
    for _ = 1, 4 do collectgarbage("collect") end
    assert.is_nil(next(weak))
  end)

  it("a process that exits while tasks still wait on channels and timers exits cleanly", function()
    local ok, out = run_child([[
      local loom = require "loom"
      local ch, ev, sem = loom.channel(), loom.event(), loom.semaphore(1)
      sem:acquire()
      for i = 1, 10 do
        loom.spawn(function() ch:recv() end)
        loom.spawn(function() ch:send(i) end)
        loom.spawn(function() loom.sleep(60) end)
        loom.spawn(function() ev:wait() end)
        loom.spawn(function() sem:acquire() end)
        loom.spawn(function() loom.select { { ch, "recv" }, timeout = 60 } end)
      end
      loom.step(0)
      for _ = 1, 3 do collectgarbage() end
      ch = nil; ev = nil; sem = nil
      for _ = 1, 3 do collectgarbage() end
      loom.step(0)
      print("leaving with tasks waiting")
    ]])
    assert.is_true(ok, out)
    assert.truthy(out:find("leaving with tasks waiting", 1, true), out)
    assert.falsy(out:find("nobody joined", 1, true), out)
  end)

  it("dropped tasks waiting on unreachable objects are cancelled cleanly by loom.run", function()
    local ok, out = run_child([[
      local loom = require "loom"
      loom.run(function()
        for _ = 1, 20 do
          local ch = loom.channel()
          loom.spawn(function() ch:recv() end)
          loom.spawn(function() loom.channel(1):send(1); loom.channel():send(2) end)
        end
        for _ = 1, 3 do collectgarbage() end
      end)
      for _ = 1, 3 do collectgarbage() end
      print("run returned", loom.stats().tasks, loom.stats().timers)
    ]])
    assert.is_true(ok, out)
    assert.truthy(out:find("run returned\t0\t0", 1, true), out)
    assert.falsy(out:find("nobody joined", 1, true), out)
  end)
end)
