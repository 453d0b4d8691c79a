-- loom.thread: offloading to worker threads (lua/thread/pool.c, worker.c,
-- lua/loom/thread.lua). Every wait is bounded: each test body runs under
-- loom.timeout, and the pools are small (2 threads: the machine has 2 cores).
local loom = require "loom"
local support = dofile("spec/support/thread.lua")
local within, expect_error, block = support.within, support.expect_error, support.block

-- Waits (bounded) until no job of p is stuck, and says so. A busy loop
-- stops in well under the 20 ms a caller waits before giving up on its job,
-- but a loaded machine (or a sanitizer) may not run the worker in time:
-- then the job is counted stuck until it ends, a moment later.
local function none_stuck(p)
  local waited = 0
  while p:stats().stuck > 0 and waited < 5 do loom.sleep(0.01); waited = waited + 0.01 end
  assert.equal(0, p:stats().stuck)
end

describe("loom.thread", function()
  local pool
  before_each(function() pool = loom.thread.pool { size = 2 } end)
  after_each(function() pool:close() end)

  describe("run", function()
    it("runs fn(...) in another state and returns its results, exactly", function()
      within(10, function()
        local a, b, c, d = loom.thread.run(function(x, y, t)
          return x + y, math.type(x + y), t.s .. "!", nil
        end, 2, 3, { s = "hi" })
        assert.equal(5, a); assert.equal("integer", b); assert.equal("hi!", c); assert.is_nil(d)
        assert.equal(4, select("#", loom.thread.run(function() return 1, nil, nil, 4 end)))
      end)
    end)

    it("runs in a fresh state: globals of the caller are not there", function()
      within(10, function()
        _G.thread_spec_global = 1
        assert.is_nil(pool:run(function() return rawget(_G, "thread_spec_global") end))
        _G.thread_spec_global = nil
      end)
    end)

    it("gives each worker a full loom state: sleep, channels, tasks, require", function()
      within(10, function()
        local out = pool:run(function()
          local wl = require "loom" -- the worker's own loom
          local ch = wl.channel(1)
          local t = wl.spawn(function() wl.sleep(0.02); ch:send("from a task") end)
          local v = ch:recv()
          t:join()
          return v, type(require("string").format)
        end)
        assert.equal("from a task", out)
      end)
    end)

    it("copies a function's upvalues for each job: no job sees another's changes", function()
      within(10, function()
        local count = 0
        local function bump() count = count + 1 return count end
        assert.equal(1, pool:run(bump)); assert.equal(1, pool:run(bump))
        assert.equal(0, count)
        -- One without upvalues (but _ENV) may be reused by a worker; its
        -- globals are the worker's.
        local one = loom.thread.pool { size = 1 }
        local function g() _G.seen = (_G.seen or 0) + 1 return true end
        for _ = 1, 5 do assert.is_true(one:run(g)) end
        assert.equal(5, one:run(function() return _G.seen end))
        assert.is_nil(rawget(_G, "seen"))
        one:close()
      end)
    end)

    it("copies the package paths of the creating state", function()
      within(10, function()
        local path, cpath = pool:run(function() return package.path, package.cpath end)
        assert.equal(package.path, path)
        assert.equal(package.cpath, cpath)
      end)
    end)

    -- Runs the two calls side by side while a 10 ms ticker runs on this
    -- loop; returns how long they took and how many times it ticked.
    local function beside_a_ticker(call1, call2)
      local ticks = 0
      local ticker = loom.spawn(function()
        while true do loom.sleep(0.01); ticks = ticks + 1 end
      end)
      local t0 = loom.now()
      loom.group(function(g)
        g:spawn(function() pool:run(call1, 0.3) end)
        g:spawn(function() pool:run(call2, 0.3) end)
      end)
      local took = loom.now() - t0
      ticker:cancel()
      return took, ticks
    end

    it("blocks only its worker in a blocking C call: the loop keeps ticking", function()
      within(10, function()
        local took, ticks = beside_a_ticker(block, block)
        assert.is_true(took >= 0.29 and took < 0.6, "both calls ran side by side: " .. took)
        assert.is_true(ticks >= 15, "the loop kept ticking: " .. ticks .. " ticks")
      end)
    end)

    it("blocks only its worker in os.execute and io.popen: the loop keeps ticking #subprocess", function()
      within(10, function()
        local took, ticks = beside_a_ticker(function(s) os.execute("sleep " .. s) end,
          function(s) local p = io.popen("sleep " .. s); p:read("a"); p:close() end)
        -- (Whether they overlapped is the test above's: a process starts
        -- slowly under a sanitizer.)
        assert.is_true(took >= 0.29, "the calls ran: " .. took)
        assert.is_true(ticks >= 15, "the loop kept ticking: " .. ticks .. " ticks")
      end)
    end)

    it("refuses what cannot cross, naming the path, and the pool keeps serving", function()
      within(10, function()
        local err = expect_error("argument", pool.run, pool, function() end, 1, { conn = io.stdout })
        assert.matches("args%[2%]%.conn", err.message)
        err = expect_error("argument", pool.run, pool, function() return coroutine.create(print) end)
        assert.matches("results", err.message)
        expect_error("argument", loom.thread.run, 42)
        assert.equal(1, pool:run(function() return 1 end))
      end)
    end)

    it("collects what a large job left behind before the worker's next job", function()
      within(20, function()
        local p = loom.thread.pool { size = 1 }
        local function kb() return collectgarbage("count") end
        local before = p:run(kb)
        local big = {}
        for i = 1, 50000 do big[i] = { i, "row " .. i } end
        -- The copy of big and the rows built from it are garbage once
        -- the answer is sent: megabytes the worker would otherwise keep
        -- until its collector's next steps (no job here allocates).
        assert.equal(50000, p:run(function(t)
          local rows = {}
          for i = 1, #t do rows[i] = t[i][2] .. "!" end
          return #rows
        end, big))
        local after = p:run(kb)
        assert.is_true(after < before + 1024, ("%.0f KB before, %.0f KB after"):format(before, after))
        p:close()
      end)
    end)

    it("runs a pool's setup once per worker before its jobs", function()
      within(10, function()
        local p = loom.thread.pool { size = 2, setup = function()
          _G.setup_count = (_G.setup_count or 0) + 1
          _G.helper = function(x) return x * 10 end
        end }
        local seen = loom.map({ 1, 2, 3, 4, 5, 6 }, function(i)
          return p:run(function(x) return _G.helper(x), _G.setup_count end, i)
        end)
        for i = 1, 6 do assert.equal(i * 10, seen[i]) end
        local counts = { p:run(function() return _G.setup_count end) }
        assert.equal(1, counts[1])
        p:close()
      end)
    end)

    it("runs workers at a lower priority than the loop unless told otherwise (nice)", function()
      within(10, function()
        -- Field 19 of a thread's stat is its nice value (Linux).
        local function nice()
          local f = assert(io.open("/proc/thread-self/stat"))
          local stat = f:read("a")
          f:close()
          local fields = {}
          for field in stat:gsub("^.*%) ", ""):gmatch("%S+") do fields[#fields + 1] = field end
          return tonumber(fields[17]) -- fields after "(comm) " start at field 3
        end
        local mine = nice()
        assert.equal(math.min(19, mine + 10), pool:run(nice))
        local same = loom.thread.pool { size = 1, nice = 0 }
        assert.equal(mine, same:run(nice))
        same:close()
        local low = loom.thread.pool { size = 1, nice = 3 }
        assert.equal(math.min(19, mine + 3), low:run(nice))
        low:close()
        expect_error("argument", loom.thread.pool, { nice = 20 })
        expect_error("argument", loom.thread.pool, { nice = "low" })
      end)
    end)

    it("fails every job with what a failed setup raised", function()
      within(10, function()
        local p = loom.thread.pool { size = 1, setup = function() error("no setup today") end }
        local ok, err = pcall(p.run, p, function() return 1 end)
        assert.is_false(ok)
        assert.matches("no setup today", err)
        p:close()
      end)
    end)
  end)

  describe("map", function()
    it("maps in input order, chunk items per job", function()
      within(20, function()
        local list = {}
        for i = 1, 100 do list[i] = i end
        local r = loom.thread.map(list, function(x, i) return x * x + i end, { chunk = 7 })
        assert.equal(100, r.n)
        for i = 1, 100 do assert.equal(i * i + i, r[i]) end
        r = pool:map(list, function(x) if x % 2 == 0 then return nil end return x end)
        assert.equal(100, r.n)
        assert.is_nil(r[2]); assert.equal(99, r[99])
        assert.equal(0, pool:map({}, print).n)
      end)
    end)

    it("raises the first failure and checks its arguments", function()
      within(20, function()
        local function fail_on_2(x) if x == 2 then error("two") end return x end
        local ok, err = pcall(pool.map, pool, { 1, 2, 3 }, fail_on_2, { chunk = 1 })
        assert.is_false(ok)
        assert.matches("two", err)
        expect_error("argument", loom.thread.map, "nope", print)
        expect_error("argument", loom.thread.map, {}, print, { chunk = 0 })
        expect_error("argument", loom.thread.pool, { size = 0 })
      end)
    end)

    it("loads fn once per worker, not once per chunk, when it has no upvalues", function()
      within(20, function()
        local p = loom.thread.pool { size = 1 }
        local r = p:map({ 1, 2, 3, 4, 5, 6 }, function() return tostring(debug.getinfo(1, "f").func) end,
          { chunk = 1 })
        for i = 2, 6 do assert.equal(r[1], r[i]) end
        -- With an upvalue of its own, each job gets its own copy.
        local k = 1
        r = p:map({ 1, 2 }, function(x) return x + k end, { chunk = 1 })
        assert.same({ 2, 3, n = 2 }, r)
        p:close()
      end)
    end)

    it("runs jobs on both workers at once", function()
      within(60, function()
        -- Each job notes when it ran (loom.now is one monotonic clock for
        -- every thread); two of them on different workers overlap.
        local spans = pool:map({ 1, 2 }, function()
          local t0 = require("loom").now()
          local x = 0
          while require("loom").now() - t0 < 0.2 do x = x + 1 end
          return { t0, require("loom").now() }
        end, { chunk = 1 })
        local a, b = spans[1], spans[2]
        assert.is_true(a[1] < b[2] and b[1] < a[2], "the two jobs did not overlap")
      end)
    end)
  end)

  describe("errors", function()
    it("come back as the value raised: a string, a table, a loom error of its kind", function()
      within(10, function()
        local ok, err = pcall(pool.run, pool, function() error("plain", 0) end)
        assert.is_false(ok); assert.equal("plain", err)
        ok, err = pcall(pool.run, pool, function() error({ code = 7, list = { 1, 2 } }) end)
        assert.is_false(ok); assert.same({ code = 7, list = { 1, 2 } }, err)
        ok, err = pcall(pool.run, pool, function() loom.error("busy", "try later") end)
        assert.is_false(ok)
        assert.equal("busy", err.kind)
        assert.equal("try later", err.message)
        assert.is_true(loom.is_error(err, "busy"))
      end)
    end)

    it("keep the worker's traceback beside them, as a task's", function()
      within(10, function()
        local function deep_in_the_worker() error("where am I") end
        local t = loom.spawn(function() return pool:run(function() deep_in_the_worker() end) end)
        assert.is_false(pcall(t.join, t))
        local tb = t:traceback()
        assert.matches("deep_in_the_worker", tb)
        assert.matches("re%-raised from a worker thread", tb)
        local reported
        loom.on_error(function(_, _, traceback) reported = traceback end)
        do -- a failed task nobody joins, reported once it is collected
          local u = loom.spawn(function() pool:run(function() deep_in_the_worker() end) end)
          while u:status() ~= "failed" do loom.sleep(0.01) end
        end
        collectgarbage(); collectgarbage()
        loom.on_error(nil)
        assert.matches("deep_in_the_worker", reported or "")
      end)
    end)

    it("of loom itself are loom errors: a closed pool", function()
      within(10, function()
        local p = loom.thread.pool { size = 1 }
        p:close()
        expect_error("closed", p.run, p, function() end)
        assert.is_true(p:stats().closed)
      end)
    end)
  end)

  describe("cancel", function()
    it("stops a tight Lua loop within 50 ms and reuses the worker", function()
      within(20, function()
        local p = loom.thread.pool { size = 1 }
        for _, body in ipairs({
          function() while true do end end,
          -- The stop is raised again if a pcall swallows it.
          function() pcall(function() while true do end end) while true do end end,
        }) do
          local t0 = loom.now()
          expect_error("timeout", loom.timeout, 0.1, function() return p:run(body) end)
          local took = loom.now() - t0
          assert.is_true(took < 0.15, "timeout late: " .. took)
          none_stuck(p)
          assert.equal("reused", p:run(function() return "reused" end))
        end
        p:close()
      end)
    end)

    it("stops a busy loop in a task the job spawned", function()
      within(20, function()
        local p = loom.thread.pool { size = 1 }
        local t0 = loom.now()
        expect_error("timeout", loom.timeout, 0.1, function()
          return p:run(function()
            local wl = require "loom"
            local spinner = wl.spawn(function() while true do end end)
            wl.sleep(0) -- let it start: from here on only the hook can stop it
            return spinner:join()
          end)
        end)
        assert.is_true(loom.now() - t0 < 0.15)
        none_stuck(p)
        assert.equal("free", p:run(function() return "free" end))
        p:close()
      end)
    end)

    it("reaches a job waiting in its own loop", function()
      within(20, function()
        local p = loom.thread.pool { size = 1 }
        local t0 = loom.now()
        expect_error("timeout", loom.timeout, 0.1, function()
          return p:run(function() require("loom").sleep(30) end)
        end)
        assert.is_true(loom.now() - t0 < 0.15)
        assert.equal("free", p:run(function() return "free" end))
        p:close()
      end)
    end)

    it("of a task or a group does the same", function()
      within(20, function()
        local p = loom.thread.pool { size = 1 }
        local t = loom.spawn(function() return p:run(function() while true do end end) end)
        loom.sleep(0.05)
        t:cancel()
        local ok, err = pcall(t.join, t)
        assert.is_false(ok); assert.equal("cancelled", err.kind)
        local ok2, err2 = pcall(loom.group, function(g)
          g:spawn(function() p:run(function() while true do end end) end)
          g:spawn(function() loom.sleep(0.05); error("sibling failed") end)
        end)
        assert.is_false(ok2); assert.matches("sibling failed", err2)
        assert.equal("still", p:run(function() return "still" end))
        p:close()
      end)
    end)

    it("answers on time when the worker is stuck in C, reports it, and the pool serves on", function()
      within(20, function()
        local p = loom.thread.pool { size = 2 }
        local t0 = loom.now()
        expect_error("timeout", loom.timeout, 0.1, function()
          return p:run(block, 1)
        end)
        local took = loom.now() - t0
        assert.is_true(took < 0.25, "timeout late: " .. took)
        assert.equal(1, p:stats().stuck)
        assert.equal("other", p:run(function() return "other" end))
        none_stuck(p)
        p:close()
      end)
    end)

    -- Leaves a job of p stuck in C for `seconds`: once it runs (not while
    -- it waits in the queue), its caller is cancelled and gives up on it.
    local function leave_stuck(p, seconds)
      local started = loom.thread.channel(1)
      local t = loom.spawn(function()
        return p:run(function(ch) ch:send(true); block(seconds) end, started)
      end)
      started:recv()
      t:cancel()
      assert.is_false(pcall(t.join, t))
    end

    it("replaces a worker stuck in C, so the pool serves at its size meanwhile", function()
      within(20, function()
        local p = loom.thread.pool { size = 1 }
        local t0 = loom.now()
        leave_stuck(p, 1.5)
        -- The only worker is stuck: the next job runs on the thread that
        -- took its place.
        assert.equal("served", p:run(function() return "served" end))
        assert.is_true(loom.now() - t0 < 1.2, "waited for the stuck worker: " .. loom.now() - t0)
        local st = p:stats()
        assert.equal(1, st.size); assert.equal(1, st.stuck); assert.equal(2, st.threads)
        -- Once its call returns, the stuck thread ends: back to one.
        none_stuck(p)
        local waited = 0
        while p:stats().threads > 1 and waited < 5 do loom.sleep(0.01); waited = waited + 0.01 end
        assert.equal(1, p:stats().threads)
        assert.equal("again", p:run(function() return "again" end))
        p:close()
      end)
    end)

    it("replaces at most four stuck workers at once", function()
      within(30, function()
        local p = loom.thread.pool { size = 1 }
        -- The first four are replaced; the fifth holds the last thread.
        for _ = 1, 5 do leave_stuck(p, 3) end
        local st = p:stats()
        assert.equal(5, st.stuck); assert.equal(5, st.threads)
        -- No thread left to serve: a job waits in the queue.
        expect_error("timeout", loom.timeout, 0.1, function() return p:run(function() return 1 end) end)
        assert.equal(5, p:stats().threads)
        none_stuck(p)
        assert.equal("after", p:run(function() return "after" end))
        p:close()
      end)
    end)

    it("takes a queued job off the queue", function()
      within(20, function()
        local p = loom.thread.pool { size = 1 }
        local busy = loom.spawn(function() return p:run(function() block(0.3) return "first" end) end)
        loom.sleep(0.05)
        local t0 = loom.now()
        expect_error("timeout", loom.timeout, 0.05, function() return p:run(function() return "never" end) end)
        assert.is_true(loom.now() - t0 < 0.1)
        assert.equal("first", busy:join())
        assert.equal(0, p:stats().queued)
        p:close()
      end)
    end)
  end)

  describe("under load", function()
    -- Timeouts landing anywhere: on queued jobs, on busy loops, on blocking
    -- calls, on jobs waiting on a thread channel or in their loop, in
    -- selects and maps. Every call ends (a result or its timeout), nothing
    -- stays stuck, and the sanitizers' runs see no race or leak.
    it("survives a storm of jobs cancelled at random points", function()
      within(60, function()
        math.randomseed(7)
        local p = loom.thread.pool { size = 3 }
        local ch = loom.thread.channel(4)
        local jobs = {
          function() return p:run(function() while true do end end) end,
          function() return p:run(block, math.random() * 0.03) end,
          function() return p:run(function(c, v) c:send(v) return c:recv() end, ch, { v = 1 }) end,
          function() return p:run(function() require("loom").sleep(0.01) return 1 end) end,
          function() return loom.select { { ch, "recv" }, { ch, "send", 2 }, timeout = 0.01 } end,
          function() return p:map({ 1, 2, 3 }, function(x) return x * 2 end) end,
        }
        local ended = 0
        loom.group(function(g)
          for _ = 1, 12 do
            g:spawn(function()
              for _ = 1, 15 do
                local ok, err = pcall(loom.timeout, math.random() * 0.02, jobs[math.random(#jobs)])
                assert(ok or loom.is_error(err, "timeout"), tostring(err))
                ended = ended + 1
              end
            end)
          end
        end)
        assert.equal(12 * 15, ended)
        none_stuck(p)
        assert.equal("after", p:run(function() return "after" end))
        p:close()
      end)
    end)
  end)

  describe("shutdown", function()
    it("a closed pool ends its queued jobs with a closed error", function()
      within(20, function()
        local p = loom.thread.pool { size = 1 }
        local a = loom.spawn(function() return p:run(function() block(0.2) return 1 end) end)
        local b = loom.spawn(function() return p:run(function() return 2 end) end)
        loom.sleep(0.05)
        p:close()
        local ok, err = pcall(b.join, b)
        assert.is_false(ok); assert.equal("closed", err.kind)
        pcall(a.join, a)
      end)
    end)

    -- A child process: lua_close there with work out; it must exit at
    -- once, and clean under ASan/LSan.
    local function child(body, env)
      local code = [[
        package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
        package.cpath = (os.getenv("LOOM_BUILD_DIR") or "build") .. "/?.so;" .. package.cpath
        local loom = require "loom"
      ]] .. body .. "\nprint('closing')\n"
      local name = os.tmpname()
      local f = assert(io.open(name, "w"))
      f:write(code); f:close()
      -- Output to a file, not a pipe: a stuck worker's `sleep` would hold
      -- a pipe open after the process is gone.
      local t0 = loom.now()
      local ok = os.execute(("timeout 20 env %s lua5.4 %s >%s.out 2>&1"):format(env or "", name, name))
      local took = loom.now() - t0
      local out = assert(io.open(name .. ".out")):read("a")
      os.remove(name); os.remove(name .. ".out")
      assert.is_true(ok, out)
      assert.matches("closing", out)
      return took
    end

    it("a state closed with work queued and running frees everything #subprocess", function()
      child [[
        local p = loom.thread.pool { size = 2 }
        for i = 1, 2 do loom.spawn(function() p:run(function() while true do end end) end) end
        for i = 1, 5 do loom.spawn(function() p:run(function() return i end) end) end
        loom.spawn(function() loom.thread.run(function() require("loom").sleep(10) end) end)
        loom.step(0.05)
      ]]
    end)

    -- A thread still in its blocking call when the process exits cannot be
    -- freed (nor can LeakSanitizer stop it to look): only the exit on time
    -- is checked (the close waits half a second for threads to end).
    it("a state closed with a worker stuck in C does not wait for it #subprocess", function()
      local took = child([[
        local q = loom.thread.pool { size = 1 }
        loom.spawn(function() q:run(function() os.execute("sleep 5") end) end)
        loom.step(0.05)
      ]], "ASAN_OPTIONS=detect_leaks=0")
      assert.is_true(took < 3, "lua_close waited for a stuck worker: " .. took)
    end)

    it("a pool collected while jobs are queued is safe", function()
      within(20, function()
        for _ = 1, 3 do
          local p = loom.thread.pool { size = 1 }
          for i = 1, 4 do
            local t = loom.spawn(function() return p:run(function() return i end) end)
            t:cancel()
          end
          p = nil
          collectgarbage(); collectgarbage()
        end
        loom.sleep(0.05)
        collectgarbage()
      end)
    end)
  end)
end)
