-- Structured concurrency and what is built on it: groups, map/each, all,
-- first, timeout and shield, the sync primitives, lazy, retry, breaker and
-- pipelines. Each spec asserts a promise of API.md, error paths included.
local loom = require "loom"

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

local function settle(n)
  for _ = 1, n or 5 do loom.yield() end
end

-- A <close> guard that records, in `log`, that its scope ended.
local function guard(log, name)
  return setmetatable({}, { __close = function(_, err)
    log[#log + 1] = name .. (err and (":" .. (type(err) == "table" and tostring(err.kind) or "error")) or "")
  end })
end

local function run(fn) return loom.run(fn) end

local function assert_idle()
  local s = loom.stats()
  assert.equal(0, s.tasks, "tasks left alive")
  assert.equal(0, s.timers, "timers left armed")
end

-- Runs a Lua script in a child lua5.4, killed after `limit` seconds: for
-- what, broken, would spin or hang the spec run.
local run_child = require("spec.support.child").run

-- Waits until `seconds` have passed, holding every cancellation off
-- meanwhile: a child that takes a while to unwind.
local function stubborn(seconds)
  local deadline = loom.now() + seconds
  loom.shield(function()
    while loom.now() < deadline do loom.sleep(deadline - loom.now()) end
  end)
end

local function range(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

-- They came back through a join with the failed task's traceback appended
-- (a string, no longer the one raised) or set as a field (a table).
describe("an error a user raises", function()
  after_each(assert_idle)

  it("crosses join, group, map, each, all, first, pipelines and timeout unchanged", function()
    run(function()
      local mine = setmetatable({ "mine" }, { __tostring = function() return "mine" end })
      local line = debug.getinfo(1, "l").currentline + 1
      local function fail(kind) if kind == "string" then error("boom") else error(mine) end end
      local ways = {
        join = function(kind) loom.spawn(fail, kind):join() end,
        group = function(kind) loom.group(function(g) g:spawn(fail, kind) end) end,
        map = function(kind) loom.map({ 1 }, function() fail(kind) end) end,
        each = function(kind) loom.each({ 1, 2 }, function() fail(kind) end) end,
        all = function(kind) loom.all(function() loom.yield() end, function() fail(kind) end) end,
        first = function(kind)
          local e = error_of(loom.first, function() fail(kind) end)
          error(e.errors[1], 0)
        end,
        pipeline = function(kind) loom.pipeline({ 1 }):map(function() fail(kind) end):collect() end,
        timeout = function(kind) loom.timeout(1, function() loom.yield(); fail(kind) end) end,
      }
      for name, way in pairs(ways) do
        assert.equal(("spec/concurrency_spec.lua:%d: boom"):format(line), error_of(way, "string"), name)
        local err = error_of(way, "table")
        assert.equal(mine, err, name)
        assert.same({ "mine" }, err)
        assert.is_nil(rawget(err, "traceback"), name)
      end
    end)
  end)
end)

describe("loom.group", function()
  after_each(assert_idle)

  it("waits for every child and returns the body's results", function()
    run(function()
      local done = {}
      local r = table.pack(loom.group(function(g, x)
        for i = 1, 3 do g:spawn(function() loom.sleep(0.005 * i); done[#done + 1] = i end) end
        return x, "body"
      end, 42))
      assert.same({ 1, 2, 3 }, done)
      assert.same({ 42, "body", n = 2 }, r)
    end)
  end)

  -- The group counts its children until they end, however they end; one
  -- cancelled before its first line never says so itself.
  it("a child cancelled before it started does not keep the group waiting", function()
    run(function()
      local ran, slept = false, false
      local t
      loom.timeout(5, loom.group, function(g)
        t = g:spawn(function() ran = true end)
        t:cancel("not needed")
        g:spawn(function() loom.sleep(0.01); slept = true end)
      end)
      assert.is_false(ran)
      assert.is_true(slept)
      assert.equal("cancelled", t:status())
    end)
  end)

  it("children that all return leave nothing unjoined, and more may be spawned while it waits", function()
    run(function()
      local done = 0
      local tasks = {}
      loom.group(function(g)
        for i = 1, 200 do
          tasks[i] = g:spawn(function()
            loom.yield()
            done = done + 1
            if i == 200 then
              tasks[201] = g:spawn(function() loom.sleep(0.01); done = done + 1 end)
            end
          end)
        end
      end)
      assert.equal(201, done)
      for _, t in ipairs(tasks) do assert.equal("done", t:status()) end
    end)
  end)

  it("the first error cancels the other children and the body, and is re-raised", function()
    run(function()
      local log = {}
      local siblings = {}
      local err = error_of(loom.group, function(g)
        siblings[1] = g:spawn(function() local _ <close> = guard(log, "sleeper"); loom.sleep(30) end)
        siblings[2] = g:spawn(function() loom.sleep(0.01); error("child failed") end)
        siblings[3] = g:spawn(function() local _ <close> = guard(log, "waiter"); loom.channel():recv() end)
        local _ <close> = guard(log, "body")
        loom.sleep(30)
      end)
      assert.equal("string", type(err))
      assert.truthy(err:find("child failed", 1, true))
      table.sort(log)
      assert.same({ "body:cancelled", "sleeper:cancelled", "waiter:cancelled" }, log)
      assert.equal("cancelled", siblings[1]:status())
      assert.equal("failed", siblings[2]:status())
      assert.equal("cancelled", siblings[3]:status())
    end)
  end)

  it("an error in the body cancels the children and is re-raised", function()
    run(function()
      local child
      local err = expect_error("custom", loom.group, function(g)
        child = g:spawn(function() loom.sleep(30) end)
        loom.yield()
        loom.error("custom", "body failed")
      end)
      assert.equal("body failed", err.message)
      assert.equal("cancelled", child:status())
    end)
  end)

  it("only the first of several failures is raised", function()
    run(function()
      local err = error_of(loom.group, function(g)
        g:spawn(function() loom.sleep(0.005); error("first", 0) end)
        g:spawn(function()
          pcall(loom.sleep, 30)
          error("second", 0)
        end)
      end)
      assert.equal("first", err)
    end)
  end)

  it("nests: an inner failure propagates out through the outer group", function()
    run(function()
      local outer_sibling
      local err = error_of(loom.group, function(outer)
        outer_sibling = outer:spawn(function() loom.sleep(30) end)
        outer:spawn(function()
          loom.group(function(inner)
            inner:spawn(function() loom.sleep(30) end)
            inner:spawn(function() loom.sleep(0.005); error("deep", 0) end)
          end)
        end)
      end)
      assert.equal("deep", err)
      assert.equal("cancelled", outer_sibling:status())
    end)
  end)

  it("a cancelled parent task cancels the group's children, which unwind first", function()
    run(function()
      local log = {}
      local children = {}
      local parent = loom.spawn(function()
        loom.group(function(g)
          children[1] = g:spawn(function() local _ <close> = guard(log, "c1"); loom.sleep(30) end)
          children[2] = g:spawn(function()
            loom.group(function(g2)
              children[3] = g2:spawn(function() local _ <close> = guard(log, "grandchild"); loom.sleep(30) end)
              loom.sleep(30)
            end)
          end)
          loom.sleep(30)
        end)
      end)
      loom.sleep(0.01)
      parent:cancel("stop")
      expect_error("cancelled", parent.join, parent)
      for i = 1, 3 do assert.equal("cancelled", children[i]:status()) end
      table.sort(log)
      assert.same({ "c1:cancelled", "grandchild:cancelled" }, log)
    end)
  end)

  it("finishes when its children are cancelled before they ever ran", function()
    run(function()
      local ran = false
      local children = {}
      local err = error_of(loom.group, function(g)
        for i = 1, 3 do children[i] = g:spawn(function() ran = true end) end
        error("body fails at once", 0)
      end)
      assert.equal("body fails at once", err)
      assert.is_false(ran)
      for i = 1, 3 do assert.equal("cancelled", children[i]:status()) end
    end)
  end)

  it("finishes when a child is cancelled by hand before it ran", function()
    run(function()
      local child
      local r = loom.group(function(g)
        child = g:spawn(function() loom.sleep(0.01) end)
        child:cancel()
        g:spawn(loom.sleep, 0.005)
        return "ok"
      end)
      assert.equal("ok", r)
      assert.equal("cancelled", child:status())
    end)
  end)

  it("finishes when a running child is cancelled by hand, as when it had not started", function()
    run(function()
      local child
      local r = loom.group(function(g)
        child = g:spawn(function() loom.sleep(5) end)
        loom.yield() -- the child starts and waits
        assert.equal("running", child:status())
        child:cancel()
        g:spawn(loom.sleep, 0.005)
        return "ok"
      end)
      assert.equal("ok", r)
      assert.equal("cancelled", child:status())
    end)
  end)

  it("fails when a child raises a cancelled error it was not given", function()
    run(function()
      local other = loom.spawn(function() loom.sleep(5) end)
      loom.yield()
      other:cancel()
      local err = error_of(loom.group, function(g)
        g:spawn(function() other:join() end) -- raises the other task's cancel
        loom.sleep(5)
      end)
      assert.is_true(loom.is_error(err, "cancelled"))
    end)
  end)

  it("cannot be spawned on once it has finished", function()
    run(function()
      local saved
      loom.group(function(g) saved = g end)
      expect_error("usage", saved.spawn, saved, function() end)
    end)
  end)

  -- A wait that blocks costs a few milliseconds of CPU however loaded the
  -- machine is; one that spins burns all the CPU it is given, which is
  -- more than half the wall time unless the machine is starved. Half is
  -- far from both.
  it("timed out, waits blocked, not spinning, for children that ignore the cancel for a while", function()
    run(function()
      local log = {}
      local children = {}
      local c0, t0 = os.clock(), loom.now()
      expect_error("timeout", loom.timeout, 0.02, function()
        loom.group(function(g)
          for i = 1, 8 do
            children[i] = g:spawn(function() stubborn(0.3); log[#log + 1] = i end)
          end
          loom.sleep(30)
        end)
      end)
      local cpu, wall = os.clock() - c0, loom.now() - t0
      assert.equal(8, #log, "the group returned before its children finished")
      for i = 1, 8 do assert.equal("done", children[i]:status()) end
      assert.is_true(wall >= 0.3)
      assert.is_true(cpu < 0.5 * wall, ("%.3f s of CPU in %.3f s: the group spun"):format(cpu, wall))
    end)
  end)

  it("cancelled by hand, waits for children that ignore the cancel for a while", function()
    run(function()
      local log = {}
      local c0, t0 = os.clock(), loom.now()
      local t = loom.spawn(function()
        loom.group(function(g)
          g:spawn(function() stubborn(0.2); log[#log + 1] = "child" end)
          loom.sleep(30)
        end)
      end)
      loom.sleep(0.01)
      t:cancel()
      -- Cancelled again while it waits for the child: still no spin.
      loom.sleep(0.01)
      t:cancel()
      expect_error("cancelled", t.join, t)
      local cpu, wall = os.clock() - c0, loom.now() - t0
      assert.same({ "child" }, log)
      assert.is_true(cpu < 0.5 * wall, ("%.3f s of CPU in %.3f s: the group spun"):format(cpu, wall))
    end)
  end)

  -- The join the group waited with raised at once again and again (the
  -- scheduler delivers a deadlock to the main task each time nothing can
  -- progress) and the group retried it in a busy loop, forever.
  it("whose children ignore the cancel and wait on what nothing can wake raises deadlock, not spinning", function()
    local ok, out = run_child([[
      local loom = require "loom"
      local c0, t0 = os.clock(), loom.now()
      local children = {}
      local ok, err = pcall(loom.run, function()
        loom.timeout(0.02, function()
          loom.group(function(g)
            for i = 1, 8 do
              children[i] = g:spawn(function()
                local never = loom.event()
                pcall(never.wait, never) -- the group's cancel, caught
                -- held off, and nothing can ever wake this
                loom.shield(never.wait, never)
              end)
            end
            loom.sleep(30)
          end)
        end)
      end)
      local statuses = {}
      for i = 1, 8 do statuses[i] = children[i]:status() end
      print("result", ok, type(err) == "table" and err.kind or tostring(err))
      print("children", table.concat(statuses, ","))
      print("cpu", os.clock() - c0, "wall", loom.now() - t0)
    ]], 20)
    assert.is_true(ok, "the script did not finish:\n" .. out)
    assert.truthy(out:find("result	false	deadlock", 1, true), out)
    -- Nothing can reach them: run leaves them behind.
    assert.truthy(out:find("children	" .. ("running,"):rep(7) .. "running", 1, true), out)
  end)

  it("used where no wait can happen raises that at once, not spinning", function()
    local ok, out = run_child([[
      local loom = require "loom"
      local ok, err = pcall(loom.run, function()
        local list = { 2, 1 }
        table.sort(list, function(a, b)
          loom.group(function(g) g:spawn(loom.sleep, 0.01) end)
          return a < b
        end)
      end)
      print("result", ok, type(err) == "table" and err.kind or tostring(err))
    ]], 20)
    assert.is_true(ok, "the script did not finish:\n" .. out)
    assert.truthy(out:find("result	false	usage", 1, true), out)
  end)

  -- Lua hands __close a nil error both for a normal exit and for error(nil).
  it("a child's error(nil) is a failure too: it cancels the rest and nil is raised", function()
    run(function()
      for _, raise in ipairs({ function() error(nil) end, function() error() end }) do
        local sibling
        local ok, err = pcall(loom.group, function(g)
          g:spawn(function() loom.sleep(0.005); raise() end)
          sibling = g:spawn(loom.sleep, 30)
        end)
        assert.is_false(ok)
        assert.is_nil(err)
        assert.equal("cancelled", sibling:status())
      end
    end)
  end)

  it("a body that raises error(nil) fails the group too", function()
    run(function()
      local child
      local ok, err = pcall(loom.group, function(g)
        child = g:spawn(loom.sleep, 30)
        loom.yield()
        error(nil)
      end)
      assert.is_false(ok)
      assert.is_nil(err)
      assert.equal("cancelled", child:status())
    end)
  end)

  it("rejects what cannot be called, naming the argument", function()
    local e = expect_error("argument", loom.group, nil)
    assert.truthy(e.message:find("bad argument #1 to 'loom.group' (function expected, got nil)", 1, true), e.message)
    expect_error("argument", loom.group, 42)
    run(function()
      local spawned = error_of(loom.group, function(g) g:spawn(nil) end)
      assert.equal("argument", spawned.kind)
      assert.truthy(spawned.message:find("bad argument #1 to 'spawn' (function expected, got nil)", 1, true),
        spawned.message)
    end)
  end)

  it("g:cancel() stops the children; the group then returns normally", function()
    run(function()
      local child
      local r = loom.group(function(g)
        child = g:spawn(function() loom.sleep(30) end)
        loom.yield()
        g:cancel()
        return "after cancel"
      end)
      assert.equal("after cancel", r)
      assert.equal("cancelled", child:status())
    end)
  end)

  it("g:cancel() that stops the waiting body ends the group with no results, not its error", function()
    run(function()
      local by_child = table.pack(loom.group(function(g)
        g:spawn(function() loom.yield(); g:cancel() end)
        loom.sleep(30)
        return "never"
      end))
      assert.equal(0, by_child.n)
      local by_body = table.pack(loom.group(function(g)
        g:spawn(function() loom.sleep(30) end)
        g:cancel()
        loom.sleep(30)
        return "never"
      end))
      assert.equal(0, by_body.n)
      -- Caught by the group it cancelled only: the task goes on waiting.
      loom.sleep(0)
    end)
  end)

  it("a cancel of the group's task is raised, also after g:cancel()", function()
    run(function()
      local started, release = loom.event(), loom.event()
      local t = loom.spawn(loom.group, function(g)
        -- A child that unwinds slowly keeps the group waiting for it.
        g:spawn(loom.shield, function() started:set(); release:wait() end)
        started:wait()
        g:cancel()
        loom.sleep(30)
      end)
      started:wait()
      settle()
      t:cancel("from outside")
      release:set()
      local e = expect_error("cancelled", t.join, t)
      assert.equal("from outside", e.reason)
      local outer = loom.spawn(loom.group, function(g)
        g:spawn(function() loom.sleep(30) end)
        loom.sleep(30)
      end)
      loom.yield()
      outer:cancel("from outside")
      e = expect_error("cancelled", outer.join, outer)
      assert.equal("from outside", e.reason)
    end)
  end)
end)

describe("loom.map and loom.each", function()
  after_each(assert_idle)

  -- Runs map/each over n items with the given options and reports the
  -- largest number of items in flight at once.
  local function measure(fname, n, opts)
    local inflight, max = 0, 0
    local results = loom[fname](range(n), function(v, i)
      assert.equal(v, i)
      inflight = inflight + 1
      if inflight > max then max = inflight end
      loom.sleep(0.002 * (1 + (v * 7) % 3))
      inflight = inflight - 1
      return v * v
    end, opts)
    return max, results
  end

  it("respects the concurrency limit and keeps results in input order", function()
    run(function()
      local max, results = measure("map", 12, { concurrency = 3 })
      assert.equal(3, max)
      local want = {}
      for i = 1, 12 do want[i] = i * i end
      want.n = 12
      assert.same(want, results)
    end)
  end)

  it("each respects the limit too and returns nothing", function()
    run(function()
      local max, results = measure("each", 10, { concurrency = 4 })
      assert.equal(4, max)
      assert.is_nil(results)
    end)
  end)

  it("with concurrency 1 runs the items one by one, in order", function()
    run(function()
      local order = {}
      local max = measure("map", 5, { concurrency = 1 })
      assert.equal(1, max)
      loom.each({ "a", "b", "c" }, function(v) loom.sleep(0.001); order[#order + 1] = v end, { concurrency = 1 })
      assert.same({ "a", "b", "c" }, order)
    end)
  end)

  it("with more workers than items, and with no limit, runs all at once", function()
    run(function()
      assert.equal(3, (measure("map", 3, { concurrency = 50 })))
      assert.equal(6, (measure("map", 6)))
    end)
  end)

  it("with no limit, starts every item while the others wait: none waits for another to end", function()
    run(function()
      -- Every item waits until all have started: a map that held an item
      -- back until another ended would never finish.
      local n, started = 300, 0
      local all_in = loom.event()
      local r = loom.map(range(n), function(v)
        started = started + 1
        if started == n then all_in:set() end
        all_in:wait()
        return v
      end)
      assert.equal(n, r.n)
      assert.equal(n, r[n])
    end)
  end)

  it("with no limit, runs items that never wait in one task, and each item once", function()
    run(function()
      local tasks, seen = {}, {}
      local r = loom.map(range(500), function(v, i)
        tasks[loom.current()] = true
        seen[i] = (seen[i] or 0) + 1
        return -v
      end)
      local count = 0
      for _ in pairs(tasks) do count = count + 1 end
      assert.equal(1, count)
      for i = 1, 500 do assert.equal(1, seen[i]); assert.equal(-i, r[i]) end
    end)
  end)

  it("keeps nil results and reports the length in n", function()
    run(function()
      local r = loom.map({ 1, 2, 3 }, function(v) if v ~= 2 then return v end end)
      assert.equal(3, r.n)
      assert.same({ 1, nil, 3, n = 3 }, r)
      local empty = loom.map({}, function() error("never") end)
      assert.same({ n = 0 }, empty)
    end)
  end)

  it("an error stops the work: no new items start, the ones in flight are cancelled", function()
    run(function()
      local started, finished = {}, {}
      local err = error_of(loom.map, range(50), function(v)
        started[#started + 1] = v
        if v == 3 then error("item 3 broke", 0) end
        loom.sleep(0.005)
        finished[#finished + 1] = v
        return v
      end, { concurrency = 2 })
      assert.equal("item 3 broke", err)
      assert.is_true(#started <= 4, "kept starting items after the failure: " .. #started)
      for _, v in ipairs(finished) do assert.is_true(v < 3) end
    end)
  end)

  it("an item that raises error(nil) fails the whole map or each", function()
    run(function()
      local later
      local ok, err = pcall(loom.map, { 1, 2, 3 }, function(v)
        if v == 1 then error(nil) end
        loom.sleep(0.01)
        later = v
        return v
      end)
      assert.is_false(ok, "map returned as if item 1 had given nil")
      assert.is_nil(err)
      assert.is_nil(later, "the other items were not cancelled")
      ok, err = pcall(loom.each, { 1, 2 }, function(v) if v == 2 then error() end end, { concurrency = 1 })
      assert.is_false(ok)
      assert.is_nil(err)
    end)
  end)

  it("rejects bad arguments", function()
    local e = expect_error("argument", loom.map, {}, print, { concurrency = 0 })
    assert.truthy(e.message:find("#3", 1, true))
    expect_error("argument", loom.map, {}, print, { concurrency = 1.5 })
    expect_error("argument", loom.map, {}, print, { concurrency = 0 / 0 })
    expect_error("argument", loom.each, "list", print)
    expect_error("argument", loom.each, {}, nil)
    for _, opts in ipairs({ "x", 5, true }) do
      e = expect_error("argument", loom.each, { 1 }, print, opts)
      local want = "bad argument #3 to 'loom.each' (options table expected, got " .. type(opts)
      assert.truthy(e.message:find(want, 1, true), e.message)
      expect_error("argument", loom.map, { 1 }, print, opts)
    end
  end)
end)

describe("loom.all", function()
  after_each(assert_idle)

  it("returns one packed table of results per function, in argument order", function()
    run(function()
      local a, b, c = loom.all(
        function() loom.sleep(0.01); return 1, 2 end,
        function() return nil end,
        function() loom.sleep(0.001); return "c" end)
      assert.same({ 1, 2, n = 2 }, a)
      assert.same({ nil, n = 1 }, b)
      assert.same({ "c", n = 1 }, c)
    end)
  end)

  it("runs the functions side by side", function()
    run(function()
      local t0 = loom.now()
      local f = function() loom.sleep(0.2) end
      loom.all(f, f, f, f, f)
      assert.is_true(loom.now() - t0 < 0.8, "one after the other would take 1 s")
    end)
  end)

  it("a failure cancels the others and is raised", function()
    run(function()
      local log = {}
      local err = error_of(loom.all,
        function() local _ <close> = guard(log, "slow"); loom.sleep(30) end,
        function() loom.sleep(0.005); error("all broke", 0) end)
      assert.equal("all broke", err)
      assert.same({ "slow:cancelled" }, log)
    end)
  end)

  it("an error(nil) is a failure: the others are cancelled and nil is raised", function()
    run(function()
      local log = {}
      local ok, err = pcall(loom.all,
        function() local _ <close> = guard(log, "slow"); loom.sleep(30) end,
        function() loom.sleep(0.005); error(nil) end)
      assert.is_false(ok)
      assert.is_nil(err)
      assert.same({ "slow:cancelled" }, log)
    end)
  end)

  it("rejects non-functions", function()
    local e = expect_error("argument", loom.all, function() end, 5)
    assert.truthy(e.message:find("#2", 1, true))
  end)
end)

describe("loom.first", function()
  after_each(assert_idle)

  it("returns the first success and cancels the rest", function()
    run(function()
      local log = {}
      local r = table.pack(loom.first(
        function() local _ <close> = guard(log, "slow"); loom.sleep(30); return "slow" end,
        function() loom.sleep(0.01); return "fast", 2 end,
        function() local _ <close> = guard(log, "slower"); loom.channel():recv() end))
      assert.same({ "fast", 2, n = 2 }, r)
      table.sort(log)
      assert.same({ "slow:cancelled", "slower:cancelled" }, log)
    end)
  end)

  it("ignores failures while an alternative can still succeed", function()
    run(function()
      assert.equal("ok", loom.first(
        function() error("quick failure") end,
        function() loom.sleep(0.01); return "ok" end))
    end)
  end)

  it("when all fail, raises all_failed carrying every failure in argument order", function()
    run(function()
      local err = expect_error("all_failed", loom.first,
        function() loom.sleep(0.01); error("a", 0) end,
        function() error("b", 0) end,
        function() loom.error("query", "c") end)
      assert.equal("a", err.errors[1])
      assert.equal("b", err.errors[2])
      assert.equal("query", err.errors[3].kind)
      assert.truthy(tostring(err):find("3", 1, true))
    end)
  end)

  it("counts an error(nil) as a failure, listed in errors with errors.n", function()
    run(function()
      assert.equal("ok", loom.first(function() error(nil) end, function() loom.sleep(0.005); return "ok" end))
      local err = expect_error("all_failed", loom.first,
        function() error(nil) end,
        function() loom.sleep(0.005); error("b", 0) end)
      assert.equal(2, err.errors.n)
      assert.is_nil(err.errors[1])
      assert.equal("b", err.errors[2])
    end)
  end)

  it("cancelled while an alternative ignores the cancel for a while, waits for it", function()
    run(function()
      local log = {}
      local t = loom.spawn(function()
        return loom.first(function() stubborn(0.05); log[#log + 1] = "alt" end)
      end)
      loom.sleep(0.005)
      t:cancel()
      loom.sleep(0.005)
      t:cancel() -- again while first waits for the alternative to end
      expect_error("cancelled", t.join, t)
      assert.same({ "alt" }, log)
    end)
  end)

  it("rejects no functions and non-functions", function()
    expect_error("argument", loom.first)
    expect_error("argument", loom.first, "x")
  end)

  it("cancelled from outside, cancels its alternatives", function()
    run(function()
      local log = {}
      local t = loom.spawn(function()
        return loom.first(function() local _ <close> = guard(log, "alt"); loom.sleep(30) end)
      end)
      loom.sleep(0.005)
      t:cancel()
      expect_error("cancelled", t.join, t)
      assert.same({ "alt:cancelled" }, log)
    end)
  end)
end)

describe("loom.timeout", function()
  after_each(assert_idle)

  it("returns the results when the work finishes in time", function()
    run(function()
      assert.same({ 1, "two", n = 2 },
        table.pack(loom.timeout(5, function(a) loom.sleep(0.001); return a, "two" end, 1)))
    end)
  end)

  it("stops CPU work that yields between chunks, even as the only task", function()
    run(function()
      local chunks = 0
      local err = expect_error("timeout", loom.timeout, 0.05, function()
        while true do
          chunks = chunks + 1
          loom.yield()
        end
      end)
      assert.truthy(err)
      assert.truthy(chunks > 1, chunks)
    end)
  end)

  it("raises an error of kind timeout when the deadline passes", function()
    run(function()
      local t0 = loom.now()
      local err = expect_error("timeout", loom.timeout, 0.02, loom.sleep, 30)
      assert.is_true(loom.now() - t0 < 5)
      assert.truthy(tostring(err):find("^timeout: "))
      assert.is_nil(err.scope, "internal scope id leaked into the error")
    end)
  end)

  it("cancels waits on channels, semaphores, mutexes, events and waitgroups", function()
    run(function()
      local sem, mu = loom.semaphore(1), loom.mutex()
      local release = loom.event()
      local holder = loom.spawn(function()
        sem:acquire(); mu:lock()
        release:wait()
        sem:release(); mu:unlock()
      end)
      settle()
      local ch = loom.channel()
      local waits = {
        function() return ch:recv() end,
        function() return ch:send(1) end,
        function() return sem:acquire() end,
        function() return mu:lock() end,
        function() return loom.event():wait() end,
        function() local wg = loom.waitgroup(); wg:add(1); return wg:wait() end,
        function() return loom.select { { ch, "recv" } } end,
      }
      for i, w in ipairs(waits) do
        expect_error("timeout", loom.timeout, 0.005, w)
        -- The timed-out waiter left its queue.
        assert.equal(0, sem:waiting(), "wait " .. i)
      end
      assert.is_false(ch:try_send(1))
      release:set()
      holder:join()
      assert.equal(1, sem:available())
      assert.is_false(mu:is_locked())
    end)
  end)

  it("keeps interrupting every later wait until the work leaves it", function()
    run(function()
      local seen = {}
      expect_error("timeout", loom.timeout, 0.01, function()
        local _, e = pcall(loom.sleep, 30)
        seen[1] = e.kind
        local _, e2 = pcall(loom.channel().recv, loom.channel())
        seen[2] = e2.kind
        loom.sleep(30)
      end)
      assert.same({ "timeout", "timeout" }, seen)
    end)
  end)

  it("an inner timeout fires inside an outer one without ending the outer", function()
    run(function()
      local r = loom.timeout(5, function()
        local _, e = pcall(loom.timeout, 0.005, loom.sleep, 30)
        loom.sleep(0.001) -- the outer scope is still fine
        return e.kind
      end)
      assert.equal("timeout", r)
    end)
  end)

  it("a timeout around a group with a timeout inside cancels every member", function()
    run(function()
      local log = {}
      local t0 = loom.now()
      expect_error("timeout", loom.timeout, 0.03, function()
        loom.group(function(g)
          g:spawn(function()
            loom.timeout(10, function() local _ <close> = guard(log, "inner"); loom.sleep(30) end)
          end)
          g:spawn(function() local _ <close> = guard(log, "sibling"); loom.channel():recv() end)
          loom.sleep(30)
        end)
      end)
      assert.is_true(loom.now() - t0 < 5)
      table.sort(log)
      assert.same({ "inner:cancelled", "sibling:cancelled" }, log)
    end)
  end)

  it("stops a loom.map and a pipeline running inside it, tasks and all", function()
    run(function()
      local started = 0
      expect_error("timeout", loom.timeout, 0.02, function()
        return loom.map(range(1000), function() started = started + 1; loom.sleep(30) end, { concurrency = 4 })
      end)
      assert.equal(4, started)
      local n = 0
      expect_error("timeout", loom.timeout, 0.02, function()
        return loom.pipeline(function() n = n + 1; return n end)
          :map(function(v) loom.sleep(0.001); return v end, { workers = 2 })
          :collect()
      end)
      assert.is_true(n > 0)
      assert.equal(1, loom.stats().tasks, "pipeline tasks outlived the timeout")
    end)
  end)

  it("works outside any task", function()
    expect_error("timeout", loom.timeout, 0.005, function() loom.channel():recv() end)
    assert.equal("fine", loom.timeout(1, function() return "fine" end))
  end)

  it("rejects bad arguments", function()
    expect_error("argument", loom.timeout, -1, print)
    expect_error("argument", loom.timeout, 0 / 0, print)
    expect_error("argument", loom.timeout, "1", print)
    expect_error("argument", loom.timeout, 1, "fn")
  end)
end)

describe("loom.shield", function()
  after_each(assert_idle)

  it("lets cleanup wait past a timeout; the timeout strikes again after it", function()
    run(function()
      local log = {}
      expect_error("timeout", loom.timeout, 0.01, function()
        pcall(loom.sleep, 30)
        loom.shield(function() loom.sleep(0.03); log[#log + 1] = "shielded sleep finished" end)
        log[#log + 1] = "after shield"
        loom.sleep(30)
        log[#log + 1] = "never"
      end)
      assert.same({ "shielded sleep finished", "after shield" }, log)
    end)
  end)

  it("returns its function's results and re-raises its errors", function()
    run(function()
      assert.same({ 1, 2, n = 2 }, table.pack(loom.shield(function(a) return a, 2 end, 1)))
      assert.equal("inside", error_of(loom.shield, function() error("inside", 0) end))
    end)
  end)

  it("rejects what cannot be called, naming the argument", function()
    local e = expect_error("argument", loom.shield, nil)
    assert.truthy(e.message:find("bad argument #1 to 'loom.shield' (function expected, got nil)", 1, true), e.message)
    expect_error("argument", loom.shield, "fn")
  end)

  -- A cancel interrupted the wait inside the shield, so cleanup could not
  -- count on finishing; now that a cancel strikes every later wait, a
  -- shield is the one place cleanup of a cancelled task can wait.
  it("holds a task:cancel() off; it lands at the first wait after the shield", function()
    run(function()
      local log = {}
      local t = loom.spawn(function()
        loom.shield(function()
          loom.sleep(0.02)
          log[#log + 1] = "shielded sleep finished"
          loom.yield()
          log[#log + 1] = "shielded yield returned"
        end)
        log[#log + 1] = "after shield"
        loom.sleep(30)
        log[#log + 1] = "never"
      end)
      loom.yield()
      t:cancel()
      expect_error("cancelled", t.join, t)
      assert.same({ "shielded sleep finished", "shielded yield returned", "after shield" }, log)
    end)
  end)

  it("lets a timeout inside it strike, though a cancel is held off", function()
    run(function()
      local seen
      local t = loom.spawn(function()
        loom.shield(function()
          seen = error_of(loom.timeout, 0.005, loom.sleep, 30).kind
        end)
        loom.sleep(30)
      end)
      loom.yield()
      t:cancel()
      expect_error("cancelled", t.join, t)
      assert.equal("timeout", seen)
    end)
  end)
end)

describe("semaphore", function()
  after_each(assert_idle)

  it("lets at most n holders in at once", function()
    run(function()
      local sem = loom.semaphore(2)
      local inside, max = 0, 0
      loom.each(range(8), function()
        sem:with(function()
          inside = inside + 1
          max = math.max(max, inside)
          loom.sleep(0.002)
          inside = inside - 1
        end)
      end)
      assert.equal(2, max)
      assert.equal(2, sem:available())
    end)
  end)

  it("acquire with a timeout raises timeout and leaves the queue", function()
    run(function()
      local sem = loom.semaphore(1)
      assert.equal(sem, sem:acquire())
      assert.equal(0, sem:available())
      local err = expect_error("timeout", sem.acquire, sem, 0.01)
      assert.truthy(err.message:find("semaphore", 1, true))
      expect_error("timeout", sem.acquire, sem, 0)
      assert.equal(0, sem:waiting())
      assert.is_false(sem:try_acquire())
      sem:release()
      assert.is_true(sem:try_acquire())
      sem:release()
    end)
  end)

  it("serves waiters first come, first served", function()
    run(function()
      local sem = loom.semaphore(1)
      sem:acquire()
      local order = {}
      for i = 1, 3 do
        loom.spawn(function() sem:with(function() order[#order + 1] = i end) end)
        settle(1)
      end
      assert.equal(3, sem:waiting())
      assert.is_false(sem:try_acquire(), "a newcomer jumped the queue")
      sem:release()
      settle()
      assert.same({ 1, 2, 3 }, order)
      assert.equal(1, sem:available())
    end)
  end)

  it("with(fn) returns fn's results and releases on error", function()
    run(function()
      local sem = loom.semaphore(1)
      assert.same({ 1, 2, n = 2 }, table.pack(sem:with(function(a) return a, 2 end, 1)))
      assert.equal("boom", error_of(sem.with, sem, function() error("boom", 0) end))
      assert.equal(1, sem:available())
    end)
  end)

  it("<close> releases when the scope ends, by return or by error", function()
    run(function()
      local sem = loom.semaphore(1)
      do
        local _ <close> = sem:acquire()
        assert.equal(0, sem:available())
      end
      assert.equal(1, sem:available())
      pcall(function()
        local _ <close> = sem:acquire()
        error("x")
      end)
      assert.equal(1, sem:available())
    end)
  end)

  it("a task cancelled while waiting leaves the queue", function()
    run(function()
      local sem = loom.semaphore(1)
      sem:acquire()
      local t = loom.spawn(function() sem:acquire() end)
      settle()
      assert.equal(1, sem:waiting())
      t:cancel()
      expect_error("cancelled", t.join, t)
      assert.equal(0, sem:waiting())
      sem:release()
      assert.equal(1, sem:available(), "the permit went to the cancelled task")
    end)
  end)

  it("a task cancelled while holding releases through with and <close>", function()
    run(function()
      local sem = loom.semaphore(2)
      local a = loom.spawn(function() sem:with(loom.sleep, 30) end)
      local b = loom.spawn(function() local _ <close> = sem:acquire(); loom.sleep(30) end)
      settle()
      assert.equal(0, sem:available())
      a:cancel(); b:cancel()
      expect_error("cancelled", a.join, a)
      expect_error("cancelled", b.join, b)
      assert.equal(2, sem:available())
    end)
  end)

  it("is fully released after a group error while a member held it", function()
    run(function()
      local sem = loom.semaphore(3)
      error_of(loom.group, function(g)
        for _ = 1, 2 do g:spawn(function() sem:with(loom.sleep, 30) end) end
        g:spawn(function() local _ <close> = sem:acquire(); loom.channel():recv() end)
        g:spawn(function() sem:acquire(); sem:release(); loom.sleep(30) end) -- waits in the queue first
        g:spawn(function() loom.sleep(0.01); error("member failed") end)
      end)
      assert.equal(3, sem:available())
      assert.equal(0, sem:waiting())
    end)
  end)

  it("rejects bad use", function()
    expect_error("argument", loom.semaphore, 0)
    expect_error("usage", loom.semaphore(1).release, loom.semaphore(1))
  end)
end)

describe("mutex", function()
  after_each(assert_idle)

  it("excludes, hands over in order, and with(fn) releases", function()
    run(function()
      local mu = loom.mutex()
      local log = {}
      loom.each(range(3), function(i)
        mu:with(function()
          log[#log + 1] = "in" .. i
          loom.sleep(0.002)
          log[#log + 1] = "out" .. i
        end)
      end)
      assert.same({ "in1", "out1", "in2", "out2", "in3", "out3" }, log)
      assert.is_false(mu:is_locked())
    end)
  end)

  it("lock with a timeout raises timeout; <close> unlocks", function()
    run(function()
      local mu = loom.mutex()
      local holder = loom.spawn(function()
        local _ <close> = mu:lock()
        loom.sleep(0.03)
      end)
      settle()
      assert.is_true(mu:is_locked())
      local err = expect_error("timeout", mu.lock, mu, 0.005)
      assert.truthy(err.message:find("mutex", 1, true))
      assert.is_false(mu:try_lock())
      holder:join()
      assert.is_false(mu:is_locked())
      assert.equal(mu, mu:lock(1))
      mu:unlock()
    end)
  end)

  it("only its owner may unlock it, and the owner cannot lock it twice", function()
    run(function()
      local mu = loom.mutex()
      expect_error("usage", mu.unlock, mu)
      mu:lock()
      expect_error("usage", mu.lock, mu)
      local t = loom.spawn(function() mu:unlock() end)
      expect_error("usage", t.join, t)
      mu:unlock()
    end)
  end)

  it("a task cancelled while waiting leaves the queue; one cancelled while holding unlocks", function()
    run(function()
      local mu = loom.mutex()
      local holder = loom.spawn(function() mu:with(loom.sleep, 30) end)
      local waiter = loom.spawn(function() mu:lock() end)
      settle()
      waiter:cancel()
      expect_error("cancelled", waiter.join, waiter)
      holder:cancel()
      expect_error("cancelled", holder.join, holder)
      assert.is_false(mu:is_locked())
      assert.is_true(mu:try_lock())
      mu:unlock()
    end)
  end)
end)

describe("event", function()
  after_each(assert_idle)

  it("set wakes every waiter; wait returns at once while set; clear resets", function()
    run(function()
      local ev = loom.event()
      assert.is_false(ev:is_set())
      local woken = 0
      for _ = 1, 3 do loom.spawn(function() ev:wait(); woken = woken + 1 end) end
      settle()
      assert.equal(0, woken)
      ev:set()
      settle()
      assert.equal(3, woken)
      assert.is_true(ev:is_set())
      ev:wait()
      ev:clear()
      assert.is_false(ev:is_set())
      expect_error("timeout", ev.wait, ev, 0.005)
    end)
  end)

  it("wait with a timeout raises timeout; a set in time wins", function()
    run(function()
      local ev = loom.event()
      local err = expect_error("timeout", ev.wait, ev, 0.01)
      assert.truthy(err.message:find("event", 1, true))
      expect_error("timeout", ev.wait, ev, 0)
      loom.spawn(function() loom.sleep(0.005); ev:set() end)
      ev:wait(5)
    end)
  end)
end)

describe("waitgroup", function()
  after_each(assert_idle)

  it("wait returns when every add is matched by a done", function()
    run(function()
      local wg = loom.waitgroup()
      wg:wait() -- zero: at once
      local finished = 0
      wg:add(3)
      assert.equal(3, wg:count())
      for i = 1, 3 do
        loom.spawn(function() loom.sleep(0.002 * i); finished = finished + 1; wg:done() end)
      end
      wg:wait()
      assert.equal(3, finished)
      assert.equal(0, wg:count())
      wg:add()
      assert.equal(1, wg:count())
      wg:done()
    end)
  end)

  it("wait with a timeout raises timeout; going below zero is an error", function()
    run(function()
      local wg = loom.waitgroup()
      wg:add(1)
      expect_error("timeout", wg.wait, wg, 0.005)
      wg:done()
      expect_error("usage", wg.done, wg)
      expect_error("usage", wg.add, wg, -1)
    end)
  end)

  it("refuses a count beyond what its counter holds, and keeps the count", function()
    local wg = loom.waitgroup()
    wg:add(2)
    local e = expect_error("argument", function() wg:add(math.maxinteger) end)
    assert.truthy(e.message:find("bad argument #1 to 'add'", 1, true), e.message)
    assert.equal(2, wg:count())
    wg:add(math.maxinteger - 2)
    expect_error("argument", function() wg:add() end)
    expect_error("usage", function() wg:add(math.mininteger) end)
    assert.equal(math.maxinteger, wg:count())
    wg:add(-math.maxinteger)
    assert.equal(0, wg:count())
    expect_error("argument", function() wg:wait(0 / 0) end)
    expect_error("argument", function() wg:wait(-1) end)
  end)
end)

describe("select and cancellation", function()
  after_each(assert_idle)

  it("cancelling a task blocked in select withdraws all its cases", function()
    run(function()
      local a, b = loom.channel(), loom.channel()
      local t = loom.spawn(function()
        return loom.select { { a, "recv" }, { b, "send", "offered" }, timeout = 30 }
      end)
      settle()
      t:cancel()
      expect_error("cancelled", t.join, t)
      assert.is_false(a:try_send("x"), "the cancelled receive case is still queued")
      assert.same({ nil, false }, { b:try_recv() })
    end)
  end)
end)

describe("loom.lazy", function()
  after_each(assert_idle)

  it("computes once under concurrent get", function()
    run(function()
      local calls = 0
      local lz = loom.lazy(function() calls = calls + 1; loom.sleep(0.01); return "v", calls end)
      assert.is_false(lz:is_ready())
      local got = loom.map(range(8), function() return table.pack(lz:get()) end)
      assert.equal(1, calls)
      for i = 1, 8 do assert.same({ "v", 1, n = 2 }, got[i]) end
      assert.is_true(lz:is_ready())
      assert.equal("v", lz:get())
      assert.equal(1, calls)
    end)
  end)

  it("does not cache a failure: waiters see it, the next get tries again", function()
    run(function()
      local calls = 0
      local lz = loom.lazy(function()
        calls = calls + 1
        loom.sleep(0.005)
        if calls == 1 then error("first try fails", 0) end
        return "second"
      end)
      local outcomes = loom.map(range(3), function()
        local ok, v = pcall(lz.get, lz)
        return ok and v or "err:" .. v
      end)
      assert.same({ "err:first try fails", "err:first try fails", "err:first try fails", n = 3 }, outcomes)
      assert.equal(1, calls)
      assert.is_false(lz:is_ready())
      assert.equal("second", lz:get())
      assert.equal(2, calls)
    end)
  end)

  it("reset forgets the value so the next get computes again", function()
    run(function()
      local calls = 0
      local lz = loom.lazy(function() calls = calls + 1; return calls end)
      assert.equal(1, lz:get())
      lz:reset()
      assert.is_false(lz:is_ready())
      assert.equal(2, lz:get())
      assert.equal(2, lz:get())
    end)
  end)

  it("a cancelled computer leaves the work to the next caller", function()
    run(function()
      local calls = 0
      local lz = loom.lazy(function() calls = calls + 1; loom.sleep(calls == 1 and 30 or 0.001); return calls end)
      local first = loom.spawn(function() return lz:get() end)
      settle()
      local second = loom.spawn(function() return lz:get() end)
      settle()
      first:cancel()
      expect_error("cancelled", first.join, first)
      assert.equal(2, second:join())
    end)
  end)

  it("rejects a non-function", function()
    expect_error("argument", loom.lazy, 5)
  end)
end)

describe("loom.retry", function()
  after_each(assert_idle)

  -- Replaces loom.sleep while fn runs, recording the delays retry asks for.
  local function with_recorded_sleeps(fn)
    local real, delays = loom.sleep, {}
    loom.sleep = function(s) delays[#delays + 1] = s end
    local ok, err = pcall(fn)
    loom.sleep = real
    assert(ok, err)
    return delays
  end

  local function failing(times, result)
    local calls = 0
    return function(attempt)
      calls = calls + 1
      assert.equal(calls, attempt)
      if calls <= times then loom.error("flaky", "fail " .. calls) end
      return result, calls
    end
  end

  it("retries until success and returns the results", function()
    run(function()
      local r = table.pack(loom.retry(failing(2, "ok"), { attempts = 3, backoff = 0.001 }))
      assert.same({ "ok", 3, n = 2 }, r)
    end)
  end)

  it("gives up after `attempts` and raises the last error with the attempt count", function()
    run(function()
      local err = expect_error("flaky", loom.retry, failing(10), { attempts = 3, backoff = 0.001 })
      assert.equal("fail 3", err.message)
      assert.equal(3, err.attempts)
    end)
  end)

  it("backs off by factor, capped at max_delay, without jitter when jitter = 0", function()
    local delays = with_recorded_sleeps(function()
      pcall(loom.retry, failing(10), { attempts = 5, backoff = 0.01, factor = 3, max_delay = 0.05, jitter = 0 })
    end)
    assert.equal(4, #delays)
    local want = { 0.01, 0.03, 0.05, 0.05 }
    for i = 1, 4 do assert.is_true(math.abs(delays[i] - want[i]) < 1e-9, "delay " .. i .. " = " .. delays[i]) end
  end)

  it("jitter shortens each delay by up to that fraction", function()
    local delays = with_recorded_sleeps(function()
      for _ = 1, 20 do
        pcall(loom.retry, failing(10), { attempts = 2, backoff = 0.04, jitter = 0.5 })
      end
    end)
    assert.equal(20, #delays)
    local distinct = {}
    for _, d in ipairs(delays) do
      assert.is_true(d >= 0.02 - 1e-9 and d <= 0.04 + 1e-9, "delay " .. d)
      distinct[d] = true
    end
    local n = 0
    for _ in pairs(distinct) do n = n + 1 end
    assert.is_true(n > 1, "jitter never varied the delay")
  end)

  it("really waits between attempts", function()
    run(function()
      local t0 = loom.now()
      loom.retry(failing(2, "ok"), { attempts = 3, backoff = 0.02, factor = 2, jitter = 0 })
      assert.is_true(loom.now() - t0 >= 0.05)
    end)
  end)

  it("retry_on decides which errors are retried", function()
    run(function()
      local calls = 0
      local err = expect_error("fatal", loom.retry, function()
        calls = calls + 1
        loom.error(calls == 1 and "transient" or "fatal", "x")
      end, { attempts = 5, backoff = 0.001, retry_on = function(e) return e.kind == "transient" end })
      assert.equal(2, calls)
      assert.equal(2, err.attempts)
    end)
  end)

  it("never retries cancellation, usage or argument errors by default", function()
    run(function()
      for _, kind in ipairs({ "cancelled", "usage", "argument" }) do
        local calls = 0
        expect_error(kind, loom.retry, function() calls = calls + 1; loom.error(kind, "x") end,
          { attempts = 5, backoff = 0.001 })
        assert.equal(1, calls, kind .. " was retried")
      end
    end)
  end)

  it("is cancelled while it sleeps between attempts", function()
    run(function()
      local calls = 0
      local t = loom.spawn(function()
        return loom.retry(function() calls = calls + 1; error("again") end, { attempts = 5, backoff = 30 })
      end)
      settle()
      t:cancel()
      expect_error("cancelled", t.join, t)
      assert.equal(1, calls)
    end)
  end)

  it("rejects bad options", function()
    expect_error("argument", loom.retry, print, { attempts = 0 })
    expect_error("argument", loom.retry, print, { jitter = 2 })
    expect_error("argument", loom.retry, print, { factor = 0.5 })
    expect_error("argument", loom.retry, print, "opts")
    -- NaN compares false with every bound, so it slipped past them.
    local nan = 0 / 0
    for _, name in ipairs({ "backoff", "factor", "max_delay", "jitter" }) do
      local e = expect_error("argument", loom.retry, print, { [name] = nan })
      assert.truthy(e.message:find("bad argument #2 to 'loom.retry' (" .. name, 1, true), e.message)
    end
    local e = expect_error("argument", loom.retry, print, { retry_on = 5 })
    assert.truthy(e.message:find("retry_on", 1, true), e.message)
  end)
end)

describe("loom.breaker", function()
  after_each(assert_idle)

  it("goes closed -> open -> half-open -> open -> half-open -> closed", function()
    run(function()
      local changes = {}
      -- reset_after is long enough that a stall of the machine between
      -- two lines cannot make the breaker half-open early.
      local br = loom.breaker { failures = 2, reset_after = 0.15,
        on_change = function(new, old) changes[#changes + 1] = old .. ">" .. new end }
      local calls, healthy = 0, false
      local function service()
        calls = calls + 1
        if not healthy then loom.error("connection", "down") end
        return "up"
      end
      assert.equal("closed", br:state())
      expect_error("connection", br.call, br, service)
      assert.equal("closed", br:state())
      expect_error("connection", br.call, br, service)
      assert.equal("open", br:state())

      -- Open: fails fast without calling the service.
      local err = expect_error("breaker_open", br.call, br, service)
      assert.equal(2, calls)
      assert.is_true(err.retry_in > 0 and err.retry_in <= 0.15)

      loom.sleep(0.16)
      assert.equal("half_open", br:state())
      expect_error("connection", br.call, br, service) -- the probe fails
      assert.equal(3, calls)
      assert.equal("open", br:state())
      expect_error("breaker_open", br.call, br, service)

      loom.sleep(0.16)
      healthy = true
      assert.equal("up", br:call(service))
      assert.equal("closed", br:state())
      assert.same({ "closed>open", "open>half_open", "half_open>open", "open>half_open", "half_open>closed" }, changes)
    end)
  end)

  it("lets one probe through while half-open", function()
    run(function()
      local br = loom.breaker { failures = 1, reset_after = 0.01 }
      expect_error("x", br.call, br, function() loom.error("x") end)
      loom.sleep(0.02)
      local probe = loom.spawn(function() return br:call(function() loom.sleep(0.01); return "probed" end) end)
      settle()
      expect_error("breaker_open", br.call, br, function() return "sneaked in" end)
      assert.equal("probed", probe:join())
      assert.equal("closed", br:state())
    end)
  end)

  it("a success resets the run of failures; cancellation does not count", function()
    run(function()
      local br = loom.breaker { failures = 2, reset_after = 30 }
      expect_error("x", br.call, br, function() loom.error("x") end)
      assert.equal(1, br:call(function() return 1 end))
      expect_error("x", br.call, br, function() loom.error("x") end)
      assert.equal("closed", br:state())
      expect_error("cancelled", br.call, br, function() loom.error("cancelled") end)
      assert.equal("closed", br:state())
      expect_error("x", br.call, br, function() loom.error("x") end)
      assert.equal("open", br:state())
      br:reset()
      assert.equal("closed", br:state())
    end)
  end)

  it("failure_on decides which errors count", function()
    run(function()
      local br = loom.breaker { failures = 1, reset_after = 30,
        failure_on = function(e) return e.kind ~= "query" end }
      expect_error("query", br.call, br, function() loom.error("query") end)
      assert.equal("closed", br:state())
      expect_error("connection", br.call, br, function() loom.error("connection") end)
      assert.equal("open", br:state())
    end)
  end)

  it("passes arguments and results through", function()
    local br = loom.breaker()
    assert.same({ 3, "b", n = 2 }, table.pack(br:call(function(a, b) return a + 1, b end, 2, "b")))
  end)

  it("rejects bad options", function()
    expect_error("argument", loom.breaker, { failures = 0 })
    expect_error("argument", loom.breaker, { reset_after = -1 })
    expect_error("argument", loom.breaker, 5)
    for opts, name in pairs({ [{ reset_after = 0 / 0 }] = "reset_after", [{ failure_on = 5 }] = "failure_on",
                               [{ on_change = "x" }] = "on_change" }) do
      local e = expect_error("argument", loom.breaker, opts)
      assert.truthy(e.message:find("bad argument #1 to 'loom.breaker' (" .. name, 1, true), e.message)
    end
  end)
end)

describe("pipelines", function()
  after_each(assert_idle)

  it("runs from an array through map, filter and batch to collect", function()
    run(function()
      local out = loom.pipeline(range(10))
        :map(function(v) return v * 10 end)
        :filter(function(v) return v % 20 == 0 end)
        :batch(2)
        :collect()
      assert.same({ { 20, 40 }, { 60, 80 }, { 100 } }, out)
    end)
  end)

  it("runs from an iterator function and from a channel", function()
    run(function()
      local i = 0
      local function iter() i = i + 1; if i <= 4 then return i end end
      assert.same({ 2, 4, 6, 8 }, loom.pipeline(iter):map(function(v) return v * 2 end):collect())

      local ch = loom.channel(2)
      loom.spawn(function() for v = 1, 5 do ch:send(v) end; ch:close() end)
      assert.same({ 1, 2, 3, 4, 5 }, loom.pipeline(ch):collect())
    end)
  end)

  it("works outside any task", function()
    assert.same({ 1, 4, 9 }, loom.pipeline({ 1, 2, 3 }):map(function(v) return v * v end):collect())
  end)

  it("each calls fn for every item; into sends to a channel and closes it", function()
    run(function()
      local seen = {}
      loom.pipeline({ "a", "b" }):each(function(v) seen[#seen + 1] = v end)
      assert.same({ "a", "b" }, seen)

      local ch = loom.channel()
      local consumer = loom.spawn(function()
        local got = {}
        for v in ch:iter() do got[#got + 1] = v end
        return got
      end)
      loom.pipeline(range(3)):map(function(v) return -v end):into(ch)
      assert.same({ -1, -2, -3 }, consumer:join())
      assert.is_true(ch:is_closed())
    end)
  end)

  it("runs a map stage with several workers at once", function()
    run(function()
      local inflight, max = 0, 0
      local out = loom.pipeline(range(12)):map(function(v)
        inflight = inflight + 1
        max = math.max(max, inflight)
        loom.sleep(0.005)
        inflight = inflight - 1
        return v
      end, { workers = 4 }):collect()
      assert.equal(4, max)
      table.sort(out)
      assert.same(range(12), out)
    end)
  end)

  it("keeps order with one worker", function()
    run(function()
      local out = loom.pipeline(range(20)):map(function(v)
        loom.sleep(0.001 * ((v * 7) % 4))
        return v
      end):collect()
      assert.same(range(20), out)
    end)
  end)

  it("keeps order with several workers when ordered = true", function()
    run(function()
      local inflight, max = 0, 0
      local out = loom.pipeline(range(30)):map(function(v)
        inflight = inflight + 1
        max = math.max(max, inflight)
        loom.sleep(0.001 * ((v * 7) % 5))
        inflight = inflight - 1
        return v * 2
      end, { workers = 4, ordered = true }):filter(function(v) return v % 3 ~= 0 end,
        { workers = 3, ordered = true }):collect()
      local want = {}
      for v = 1, 30 do if (v * 2) % 3 ~= 0 then want[#want + 1] = v * 2 end end
      assert.same(want, out)
      assert.is_true(max > 1, "ordered map ran one item at a time")
    end)
  end)

  it("applies backpressure: a slow consumer bounds how far the producer gets ahead", function()
    run(function()
      local produced, consumed, ahead = 0, 0, 0
      local function source()
        produced = produced + 1
        if produced <= 200 then return produced end
      end
      loom.pipeline(source)
        :map(function(v) return v end, { buffer = 2 })
        :each(function()
          consumed = consumed + 1
          ahead = math.max(ahead, produced - consumed)
          if consumed % 10 == 0 then loom.sleep(0.001) else loom.yield() end
        end)
      assert.equal(200, consumed)
      assert.is_true(ahead <= 40, "the producer ran " .. ahead .. " items ahead")
    end)
  end)

  it("a stage error cancels the pipeline and is raised", function()
    run(function()
      local pulled = 0
      local function source()
        pulled = pulled + 1
        return pulled
      end
      local log = {}
      local err = error_of(function()
        loom.pipeline(source)
          :map(function(v)
            if v == 5 then error("stage broke at 5", 0) end
            return v
          end, { workers = 2 })
          :map(function(v) local _ <close> = guard(log, "slow"); loom.sleep(30); return v end)
          :collect()
      end)
      assert.equal("stage broke at 5", err)
      assert.is_true(pulled < 100, "the source kept being pulled: " .. pulled)
      assert.is_true(#log <= 1)
      for _, entry in ipairs(log) do assert.equal("slow:cancelled", entry) end
    end)
  end)

  it("an error(nil) in a stage fails the pipeline: no item is silently lost", function()
    run(function()
      local ok, err = pcall(function()
        return loom.pipeline(range(5))
          :map(function(v) if v == 3 then error(nil) end return v end, { workers = 2 })
          :collect()
      end)
      assert.is_false(ok, "the pipeline returned without item 3")
      assert.is_nil(err)
      ok, err = pcall(function()
        return loom.pipeline(range(5)):filter(function(v) if v == 2 then error() end return true end):collect()
      end)
      assert.is_false(ok)
      assert.is_nil(err)
    end)
  end)

  it("an error in the consumer cancels the stages", function()
    run(function()
      local err = error_of(function()
        loom.pipeline(function() return 1 end):each(function() error("consumer broke", 0) end)
      end)
      assert.equal("consumer broke", err)
    end)
  end)

  it("reports a map that returns nil and a source with a hole", function()
    run(function()
      expect_error("usage", function() loom.pipeline({ 1 }):map(function() end):collect() end)
      expect_error("usage", function() loom.pipeline({ 1, nil, 3 }):collect() end)
    end)
  end)

  it("rejects bad arguments", function()
    expect_error("argument", loom.pipeline, 5)
    local p = loom.pipeline({})
    expect_error("argument", p.map, p, 5)
    expect_error("argument", p.map, p, print, { workers = 0 })
    expect_error("argument", p.filter, p, nil)
    expect_error("argument", p.batch, p, 0)
    expect_error("argument", p.into, p, {})
    expect_error("argument", p.each, p, 1)
  end)
end)

describe("callable tables", function()
  after_each(assert_idle)

  -- A table with __call, called as fn(...) would be (self first).
  local function callable(fn)
    return setmetatable({}, { __call = function(_, ...) return fn(...) end })
  end

  it("are taken wherever a function is", function()
    run(function()
      local double = callable(function(v) return v * 2 end)
      assert.same({ 2, 4, n = 2 }, loom.map({ 1, 2 }, double))
      local seen = {}
      loom.each({ 5 }, callable(function(v) seen[#seen + 1] = v end))
      assert.same({ 5 }, seen)
      local a, b = loom.all(callable(function() return 1 end), callable(function() return 2 end))
      assert.same({ { 1, n = 1 }, { 2, n = 1 } }, { a, b })
      assert.equal("won", loom.first(callable(function() return "won" end)))
      assert.same({ 4 }, loom.pipeline({ 1, 2 }):map(double):filter(callable(function(v) return v > 2 end)):collect())
      local out = {}
      loom.pipeline({ 3 }):each(callable(function(v) out[#out + 1] = v end))
      assert.same({ 3 }, out)
      assert.equal("t", loom.timeout(1, callable(function() return "t" end)))
      assert.equal("g", loom.group(callable(function() return "g" end)))
      assert.equal(1, loom.retry(callable(function() return 1 end)))
      assert.equal(2, loom.lazy(callable(function() return 2 end)):get())
    end)
  end)

  it("without __call are still refused, naming the argument", function()
    local e = expect_error("argument", loom.map, { 1 }, {})
    assert.truthy(e.message:find("bad argument #2 to 'loom.map' (function expected, got table)", 1, true), e.message)
    e = expect_error("argument", loom.all, print, setmetatable({}, { __index = {} }))
    assert.truthy(e.message:find("bad argument #2 to 'loom.all' (function expected, got table)", 1, true), e.message)
    expect_error("argument", loom.first, {})
    expect_error("argument", loom.pipeline({}).map, loom.pipeline({}), {})
  end)
end)
