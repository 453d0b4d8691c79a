-- The runtime core as a hostile user drives it: coroutines of one's own
-- resumed from the wrong place, loom.yield outside any task under a
-- deadline, error values that bite back (a strict table whose __index
-- raises), waits at awkward moments. Each test proves a promise of
-- docs/REFERENCE.md. Every wait is bounded: a test body that would hang runs
-- under loom.timeout, or in a child process with a deadline.
local loom = require "loom"
local run_child = require("spec.support.child").run

local function error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error, but the call succeeded")
  return err
end

local function expect_error(kind, fn, ...)
  local err = error_of(fn, ...)
  assert.equal("table", type(err), "error is not a table: " .. tostring(err))
  assert.equal(kind, err.kind, "wrong kind: " .. tostring(err))
  return err
end

-- loom.run(fn) with a bound: a hang fails the test instead of the run.
local function run(fn, ...)
  local args = table.pack(...)
  return loom.run(function() return loom.timeout(20, fn, table.unpack(args, 1, args.n)) end)
end

local function assert_idle()
  local s = loom.stats()
  assert.equal(0, s.tasks, "tasks left alive")
  assert.equal(0, s.timers, "timers left armed")
end

-- A table as a strict object has it: reading a field it lacks raises.
local function strict_error()
  return setmetatable({ what = "strict" }, {
    __index = function(_, k) error("no field " .. tostring(k), 2) end,
    __tostring = function() return "strict error" end,
  })
end

describe("a hostile user of the runtime", function()
  after_each(assert_idle)

  describe("a coroutine parked in a loom wait", function()
    -- A coroutine.wrap generator shared by two tasks: while the first
    -- waited inside it, the second's call resumed it, ran the wait's
    -- continuation at once (it returned nil), left the first task's waiter
    -- on the channel, and the value sent next went to that stale waiter:
    -- the first task then met a deadlock and the value was lost.
    it("cannot be resumed by a second task while the first waits in it", function()
      run(function()
        local ch = loom.channel()
        local gen = coroutine.wrap(function()
          while true do coroutine.yield((ch:recv())) end
        end)
        local a = loom.spawn(function() return gen() end)
        loom.yield() -- a is parked in ch:recv inside gen
        local ok, err = pcall(gen)
        assert.is_false(ok)
        assert.matches("waits in loom", err)
        ch:send("for a")
        assert.equal("for a", a:join())
        -- Its own resumer done with it, the generator serves anyone again.
        loom.spawn(function() ch:send("for main") end)
        assert.equal("for main", gen())
      end)
    end)

    it("makes coroutine.resume from another task return false, not run it", function()
      run(function()
        local ev = loom.event()
        local co = coroutine.create(function()
          ev:wait(5)
          return "woke"
        end)
        local a = loom.spawn(function() return coroutine.resume(co) end)
        loom.yield()
        local ok, err = coroutine.resume(co)
        assert.is_false(ok)
        assert.matches("waits in loom", err)
        assert.equal("suspended", coroutine.status(co))
        ev:set()
        local r = table.pack(a:join())
        assert.same({ true, "woke", n = 2 }, r)
        assert.equal("dead", coroutine.status(co))
      end)
    end)

    it("cannot be resumed by a task while top-level code waits in it", function()
      local ch = loom.channel()
      local gen = coroutine.wrap(function() return ch:recv() end)
      local seen
      loom.spawn(function()
        seen = table.pack(pcall(gen))
        ch:send("top")
      end)
      local v = loom.timeout(5, gen)
      assert.equal("top", v)
      assert.is_false(seen[1])
      assert.matches("waits in loom", seen[2])
    end)

    it("still ends with its task's cancel", function()
      run(function()
        local co = coroutine.wrap(function() loom.sleep(10) end)
        local a = loom.spawn(function() co() end)
        loom.yield()
        a:cancel()
        expect_error("cancelled", a.join, a)
      end)
    end)
  end)

  describe("loom.yield outside any task", function()
    -- Only a task's yield raised an expired timeout: top-level CPU work
    -- yielding between chunks under loom.timeout ran on past it for ever.
    it("raises the loom.timeout that ran out around it", function()
      local chunks = 0
      local err = expect_error("timeout", loom.timeout, 0.05, function()
        while true do
          chunks = chunks + 1
          loom.yield()
        end
      end)
      assert.matches("timed out after", err.message)
      assert.is_nil(err.scope)
      assert.truthy(chunks > 1)
    end)

    it("raises it inside a coroutine of the user's own, too", function()
      local chunks = 0
      local co = coroutine.wrap(function()
        while true do
          chunks = chunks + 1
          loom.yield()
        end
      end)
      expect_error("timeout", loom.timeout, 0.05, co)
      assert.truthy(chunks > 1)
    end)

    it("still returns nothing when no deadline passed", function()
      assert.equal(0, select("#", loom.yield()))
      assert.equal(0, select("#", loom.timeout(5, loom.yield)))
    end)
  end)

  describe("a plain table with kind = \"cancelled\"", function()
    -- Only loom's own errors (loom.is_error) say a task was cancelled: a
    -- user's look-alike is a failure, reported and joined as one.
    it("raised by a task makes it failed, not cancelled", function()
      local e = { kind = "cancelled", message = "mine" }
      local t, got
      loom.run(function()
        t = loom.spawn(function() error(e) end)
        got = select(2, pcall(t.join, t))
      end)
      assert.is_true(rawequal(e, got))
      assert.equal("failed", t:status())
    end)
  end)

  describe("an error value whose __index raises", function()
    -- Loom read err.kind through __index to tell a cancel from a failure:
    -- a strict table raised "no field kind" from there, which replaced it.
    it("comes back unchanged from t:join() and loom.run", function()
      local e = strict_error()
      local got = error_of(loom.run, function()
        local t = loom.spawn(function() error(e) end)
        return t:join()
      end)
      assert.is_true(rawequal(e, got))
      assert.is_true(rawequal(e, error_of(loom.run, function() error(e) end)))
    end)

    it("leaves a failed task failed, with its traceback", function()
      local e = strict_error()
      local got
      local t
      loom.run(function()
        t = loom.spawn(function() error(e) end)
        got = select(2, pcall(t.join, t))
      end)
      assert.is_true(rawequal(e, got))
      assert.equal("failed", t:status())
      assert.matches("runtime_hostile_spec", t:traceback())
    end)

    it("comes back unchanged from a group, loom.map, loom.all, loom.timeout and a pipeline", function()
      local e = strict_error()
      local calls = {
        function() loom.group(function(g) g:spawn(function() error(e) end) end) end,
        function() loom.map({ 1, 2 }, function() error(e) end) end,
        function() loom.all(function() error(e) end) end,
        function() loom.timeout(5, function() error(e) end) end,
        function() loom.pipeline({ 1, 2 }):map(function() error(e) end):collect() end,
      }
      for i, call in ipairs(calls) do
        local got = error_of(loom.run, call)
        assert.is_true(rawequal(e, got), "call " .. i .. " gave " .. tostring(got))
      end
      local all = expect_error("all_failed", loom.run, function()
        loom.first(function() error(e) end)
      end)
      assert.is_true(rawequal(e, all.errors[1]))
    end)

    it("reaches loom.on_error unchanged", function()
      local e = strict_error()
      local reported = {}
      loom.on_error(function(err) reported[#reported + 1] = err end)
      local ok, perr = pcall(loom.run, function()
        loom.spawn(function() error(e) end)
        loom.sleep(0.01)
      end)
      loom.on_error(nil)
      assert.is_true(ok, tostring(perr))
      assert.equal(1, #reported)
      assert.is_true(rawequal(e, reported[1]))
    end)
  end)

  -- The luv adapter in a child: uv.run() is the process's one default loop,
  -- and a program that hangs must fail the test, not the spec process. The
  -- child runs uv.run() once more after stop(): luv's own collector crashes
  -- at exit on handles closed since the last run (luv, not loom).
  describe("loom.luv", function()
    local prelude = [[
      local loom = require "loom"
      local uv = require "luv"
      local luv = require "loom.luv"
    ]]

    -- With no handle of the program's own to turn luv's loop, the adapter
    -- armed its first step from next_timeout(), which was nil (loom idle at
    -- start()): uv.run() blocked on loom's fd for ever, the tasks spawned
    -- before it never ran.
    it("runs tasks spawned between start() and uv.run() with no other luv handle", function()
      local ok, out = run_child(prelude .. [[
        local ad = luv.start(uv)
        local n = 0
        loom.spawn(function() for _ = 1, 3 do loom.sleep(0.01); n = n + 1 end end)
        uv.run("default")
        ad:stop()
        uv.run("default")
        print("ticks " .. n)
      ]], 20)
      assert.is_true(ok, out)
      assert.matches("ticks 3", out)
    end)

    it("lets a task stop the adapter that steps it", function()
      local ok, out = run_child(prelude .. [[
        local ad = luv.start(uv)
        local log = {}
        loom.spawn(function()
          loom.sleep(0.01)
          ad:stop()
          log[#log + 1] = "stopped"
        end)
        uv.run("default")
        print(table.concat(log, ","), loom.stats().tasks)
      ]], 20)
      assert.is_true(ok, out)
      assert.matches("stopped\t0", out)
    end)

    -- A second start() on the same loop got nil from uv.new_poll (libuv
    -- lets one handle watch an fd) and failed indexing it.
    it("refuses a second adapter on the same loop with a usage error", function()
      local ok, out = run_child(prelude .. [[
        local ad = luv.start(uv)
        local ok2, err = pcall(luv.start, uv)
        print(ok2, loom.is_error(err, "usage"), tostring(err))
        ad:stop()
        uv.run("default")
        local ad2 = luv.start(uv) -- once the first is stopped, a new one starts
        local done = false
        loom.spawn(function() loom.sleep(0.01); done = true end)
        uv.run("default")
        ad2:stop()
        uv.run("default")
        print("done", done)
      ]], 20)
      assert.is_true(ok, out)
      assert.matches("false\ttrue\tusage", out)
      assert.matches("done\ttrue", out)
    end)

    it("names a bad argument to start() with kind argument", function()
      local ok, out = run_child(prelude .. [[
        for _, v in ipairs { "nil", "{}", "42" } do
          local ok2, err = pcall(luv.start, load("return " .. v)())
          print(ok2, loom.is_error(err, "argument"), tostring(err))
        end
      ]], 20)
      assert.is_true(ok, out)
      local _, refused = out:gsub("false\ttrue\targument: bad argument #1 to 'loom.luv.start'", "")
      assert.equal(3, refused, out)
    end)
  end)

  describe("loom.cqueues", function()
    local has_cqueues = pcall(require, "cqueues")
    local prelude = [[
      local loom = require "loom"
      local cqueues = require "cqueues"
      local adapter = require "loom.cqueues"
    ]]

    -- adapter:call() after stop() spawned a task nothing would step and
    -- waited for it without end: cq:loop() never returned.
    it("raises closed from call() on a stopped adapter instead of hanging", function()
      if not has_cqueues then return pending("cqueues is not installed") end
      local ok, out = run_child(prelude .. [[
        local cq = cqueues.new()
        local ad = adapter.wrap(cq)
        ad:stop()
        cq:wrap(function()
          local ok2, err = pcall(ad.call, ad, function() return 1 end)
          print("call", ok2, loom.is_error(err, "closed"))
        end)
        assert(cq:loop())
        print("returned", loom.stats().tasks)
      ]], 20)
      assert.is_true(ok, out)
      assert.matches("call\tfalse\ttrue", out)
      assert.matches("returned\t0", out)
    end)

    -- The same when the call's own task stops the adapter and waits again.
    it("wakes a call waiting when the adapter stops, with closed", function()
      if not has_cqueues then return pending("cqueues is not installed") end
      local ok, out = run_child(prelude .. [[
        local cq = cqueues.new()
        local ad = adapter.wrap(cq)
        cq:wrap(function()
          local ok2, err = pcall(ad.call, ad, function()
            ad:stop()
            loom.sleep(0.01)
            return "after stop"
          end)
          print("call", ok2, loom.is_error(err, "closed"))
        end)
        assert(cq:loop())
        -- The task was cancelled: the next drive of loom ends it.
        loom.step(0)
        print("tasks", loom.stats().tasks)
      ]], 20)
      assert.is_true(ok, out)
      assert.matches("call\tfalse\ttrue", out)
      assert.matches("tasks\t0", out)
    end)

    it("names a function that is not callable with kind argument", function()
      if not has_cqueues then return pending("cqueues is not installed") end
      local ok, out = run_child(prelude .. [[
        local cq = cqueues.new()
        local ad = adapter.wrap(cq)
        cq:wrap(function()
          local ok2, err = pcall(ad.call, ad, 42)
          print("call", ok2, loom.is_error(err, "argument"), tostring(err))
          local e = setmetatable({}, { __index = function() error("strict") end })
          local ok3, err3 = pcall(ad.call, ad, function() error(e) end)
          print("user error", ok3, rawequal(err3, e))
          ad:stop()
        end)
        assert(cq:loop())
      ]], 20)
      assert.is_true(ok, out)
      assert.matches("call\tfalse\ttrue\targument", out)
      assert.matches("user error\tfalse\ttrue", out)
    end)
  end)
end)
