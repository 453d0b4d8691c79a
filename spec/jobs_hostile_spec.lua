-- loom.jobs against a hostile user, on SQLite (a file), PostgreSQL and
-- MariaDB: payloads that JSON text would change, options out of every
-- column's range, handlers that raise what the database refuses to store,
-- backoff functions that answer nonsense, a stop from inside a handler or
-- cut short by a timeout, two workers on one queue, and a worker process
-- killed mid-job. A server that cannot be started fails every case against
-- it with the reason (spec/support/pg.lua, my.lua), never a skip.
local loom = require "loom"
local support = require "spec.support.db"
local drivers = require "spec.support.drivers"

local build = os.getenv("LOOM_BUILD_DIR") or "build"

-- Waits until cond() is true, for at most `bound` seconds.
local function until_true(cond, bound, what)
  local deadline = loom.now() + (bound or 30)
  while not cond() do
    assert(loom.now() < deadline, "still waiting for " .. (what or "a condition"))
    loom.sleep(0.02)
  end
end

local function quiet() end

for _, target in ipairs(drivers.targets) do
  if target.name ~= "sqlite memory" then
  local T = drivers.dialects[target.driver]
  local q = T.sql

describe("jobs, hostile: " .. target.name, function()
  local db
  setup(function() db = loom.db.open(target.url(target), { pool = { max = 12 } }) end)
  teardown(function()
    db:close()
    collectgarbage()
    if target.cleanup then target.cleanup(target) end
  end)

  local function open(opts, handle)
    opts = opts or {}
    opts.prefix = opts.prefix or support.unique("jh") .. "_"
    return loom.jobs.open(handle or db, opts)
  end

  it("keeps payload numbers exact: whole numbers up to 2^53 and every float", function()
    support.run(function()
      local jobs = open()
      local payload = {
        micros = 1700000000123456, -- a timestamp in microseconds: 16 digits
        edge = 1 << 53, neg = -(1 << 53), small = 7,
        third = 1 / 3, sum = 0.1 + 0.2, tiny = 5e-324, list = { 123456789012345678 // 100, 0.1 },
      }
      local id = jobs:enqueue("n", payload)
      local got = jobs:get(id).payload
      assert.same(payload, got)
      assert.equal("integer", math.type(got.micros))
      assert.equal("float", math.type(got.third))
      -- and the handler sees the same
      local seen
      jobs:handle("n", function(job) seen = job.payload end)
      jobs:work { poll = 0.05 }
      until_true(function() return seen ~= nil end, 30, "the job")
      jobs:stop(5)
      assert.same(payload, seen)
    end)
  end)

  it("takes loom.null (a database row's NULL) in a payload as JSON null", function()
    support.run(function()
      local jobs = open()
      local id = jobs:enqueue("n", { note = loom.null, list = { 1, loom.null, 3 } })
      local got = jobs:get(id).payload
      assert.equal(loom.jobs.null, got.note)
      assert.same({ 1, loom.jobs.null, 3 }, got.list)
    end)
  end)

  it("refuses, as argument, payloads no back end can keep as they are", function()
    support.run(function()
      local jobs = open()
      local cases = {
        { { n = (1 << 53) + 1 }, "2^53" },
        { { n = math.maxinteger }, "2^53" },
        { { s = "bad\255utf8" }, "UTF%-8" },
        { { s = "nul\0byte" }, "NUL" },
        { function() end, "JSON" },
        { { x = 0 / 0 }, "JSON" },
      }
      for i, c in ipairs(cases) do
        local e = support.catch_table(jobs.enqueue, jobs, "p", c[1])
        assert.equal("argument", e.kind, "case " .. i)
        assert.matches("#2 to 'enqueue'", e.message, 1, true)
        assert.matches(c[2], e.message)
        -- the same through enqueue_many, which names its list
        e = support.catch_table(jobs.enqueue_many, jobs,
          { { name = "p", payload = {} }, { name = "p", payload = c[1] } })
        assert.equal("argument", e.kind)
        assert.matches("#1 to 'enqueue_many' (job 2:", e.message, 1, true)
      end
      -- a cycle is refused, not a stack overflow
      local cyc = {}
      cyc.self = cyc
      assert.equal("argument", support.catch_table(jobs.enqueue, jobs, "p", cyc).kind)
      -- the caller's table is left as it was
      local t = { n = 1700000000123456, z = loom.null }
      jobs:enqueue("p", t)
      assert.equal(loom.null, t.z)
      assert.equal(0, jobs:stats().queued - 1)
    end)
  end)

  it("refuses, as argument naming the option, values out of every back end's range", function()
    support.run(function()
      local jobs = open()
      local cases = {
        { { timeout = math.huge }, "timeout" },
        { { timeout = 3e6 }, "timeout" }, -- past an int4 of milliseconds
        { { delay = math.huge }, "delay" },
        { { run_at = 1e20 }, "run_at" },
        { { priority = 1 << 40 }, "priority" },
        { { max_attempts = 1 << 40 }, "max_attempts" },
        { { tx = "nope" }, "tx" },
      }
      for i, c in ipairs(cases) do
        local e = support.catch_table(jobs.enqueue, jobs, "r", {}, c[1])
        assert.equal("argument", e.kind, "case " .. i .. ": " .. tostring(e))
        assert.matches("#3 to 'enqueue'", e.message, 1, true)
        assert.matches(c[2], e.message, 1, true)
      end
      assert.equal(0, jobs:stats().queued)
      -- the largest values allowed are stored as given
      local id = jobs:enqueue("r", {}, { priority = -0x80000000, max_attempts = 0x7fffffff, timeout = 2e6 })
      local r = jobs:get(id)
      assert.equal(-0x80000000, r.priority)
      assert.equal(0x7fffffff, r.max_attempts)
      for _, bad in ipairs({ "7", 1.5, {}, true }) do
        assert.equal("argument", support.catch_table(jobs.get, jobs, bad).kind)
      end
    end)
  end)

  it("records every failure, whatever the handler raised, and retries it", function()
    support.run(function()
      local jobs = open({ backoff = function() return 0.01 end })
      local raised = {
        nul = "nul\0byte", bytes = "bad\255\254utf8", long = ("e"):rep(200000),
        number = 42, nothing = nil, plain = {},
        loom_error = setmetatable({ kind = "mine", message = "as a table" }, { __tostring = function(t)
          return "mine: " .. t.message end }),
        bad_tostring = setmetatable({}, { __tostring = function() error("tostring fails too") end }),
        not_string = setmetatable({}, { __tostring = function() return 5 end }),
      }
      local names = { "nul", "bytes", "long", "number", "nothing", "plain", "loom_error", "bad_tostring", "not_string" }
      local runs, ids = {}, {}
      for _, name in ipairs(names) do
        jobs:handle(name, function()
          runs[name] = (runs[name] or 0) + 1
          error(raised[name], 0)
        end)
        ids[name] = jobs:enqueue(name, {}, { max_attempts = 2 })
      end
      local errors = {}
      jobs:work { queues = { default = 20 }, poll = 0.05, on_error = function(e) errors[#errors + 1] = e end }
      until_true(function() return jobs:stats().failed == #names end, 60, "every job to fail twice")
      jobs:stop(5)
      assert.same({}, errors) -- the worker never failed to write an outcome
      for _, name in ipairs(names) do
        local r = jobs:get(ids[name])
        assert.equal(2, runs[name], name)
        assert.equal("failed", r.state, name)
        assert.equal(2, r.attempt, name)
        assert.is_string(r.last_error, name)
        assert.is_truthy(utf8.len(r.last_error), name)
        assert.is_falsy(r.last_error:find("\0", 1, true), name)
      end
      assert.matches("nul", jobs:get(ids.nul).last_error, 1, true)
      assert.matches("byte", jobs:get(ids.nul).last_error, 1, true)
      assert.matches("utf8", jobs:get(ids.bytes).last_error, 1, true)
      assert.equal("42", jobs:get(ids.number).last_error)
      assert.equal("mine: as a table", jobs:get(ids.loom_error).last_error)
      assert.is_true(#jobs:get(ids.long).last_error < 65536)
      assert.matches("^eeee", jobs:get(ids.long).last_error)
    end)
  end)

  it("retries a job whose backoff function fails or answers nonsense", function()
    support.run(function()
      local answers = {
        function() return nil end, function() return -1 end, function() return 0 / 0 end,
        function() error({}) end, function() return "soon" end, function() return math.huge end,
        function() return 1e300 end,
      }
      for i, backoff in ipairs(answers) do
        local jobs = open({ backoff = backoff })
        local runs = 0
        jobs:handle("f", function()
          runs = runs + 1
          error("boom")
        end)
        local id = jobs:enqueue("f", {}, { max_attempts = 3 })
        local reported = {}
        jobs:work { poll = 0.05, on_error = function(_, what) reported[#reported + 1] = what end }
        until_true(function()
          local r = jobs:get(id)
          return r.attempt == 1 and r.state ~= "running"
        end, 30, "case " .. i .. ": the first failure")
        local r = jobs:get(id)
        jobs:stop(5)
        assert.equal("available", r.state, "case " .. i)
        assert.equal(1, r.attempt, "case " .. i)
        assert.matches("boom", r.last_error, 1, true)
        assert.is_true(#reported >= 1, "case " .. i .. ": the bad backoff was not reported")
        assert.matches("backoff", reported[1], 1, true)
      end
    end)
  end)

  it("finishes a stop called from one of the worker's own handlers", function()
    support.run(function()
      local jobs = open()
      local returned, others = false, 0
      jobs:handle("shutdown", function()
        jobs:stop(5)
        returned = true
      end)
      jobs:handle("other", function() loom.sleep(0.05) others = others + 1 end)
      jobs:enqueue("other", {})
      local id = jobs:enqueue("shutdown", {}, { priority = 1 })
      jobs:work { queues = { default = 4 }, poll = 0.05 }
      until_true(function() return jobs.worker == nil end, 30, "the worker to stop")
      assert.is_true(returned)
      assert.is_nil(jobs:get(id)) -- its own job completed, not given back
      assert.equal(1, others)
      assert.equal(0, db:value(("SELECT COUNT(*) FROM %sworkers"):format(jobs.prefix)))
      -- a worker again on the same handle
      local done = loom.event()
      jobs:handle("other", function() done:set() end)
      jobs:enqueue("other", {})
      jobs:work { poll = 0.05 }
      done:wait(30)
      assert.equal(0, jobs:stop(5))
    end)
  end)

  it("leaves no half-stopped worker when a stop is cut short by a timeout", function()
    support.run(function()
      local jobs = open()
      local started = loom.event()
      jobs:handle("long", function()
        started:set()
        loom.sleep(3600)
      end)
      local id = jobs:enqueue("long", {})
      jobs:work { poll = 0.05 }
      started:wait(30)
      local e = support.catch_table(loom.timeout, 0.2, jobs.stop, jobs) -- nil deadline: however long
      assert.equal("timeout", e.kind)
      -- The stop goes on: a second one with a deadline takes over and ends it.
      local n = loom.timeout(30, jobs.stop, jobs, 0.1)
      assert.equal(1, n)
      assert.is_nil(jobs.worker)
      local r = jobs:get(id)
      assert.equal("available", r.state)
      assert.equal(0, r.attempt)
      assert.equal(0, db:value(("SELECT COUNT(*) FROM %sworkers"):format(jobs.prefix)))
    end)
  end)

  it("refuses bad options of work and every with kind argument, at the call", function()
    support.run(function()
      local jobs = open()
      local bad = {
        { queues = "default" }, { queues = { default = 0 } }, { queues = { [1] = 2 } }, { heartbeat = "x" },
        { heartbeat = 0 }, { rescue_every = -1 }, { timeout = 0 / 0 }, { on_error = 5 }, { lease = math.huge },
        { poll = math.huge }, { prefetch = -1 },
      }
      for i, o in ipairs(bad) do
        local e = support.catch_table(jobs.work, jobs, o)
        assert.equal("argument", e.kind, "case " .. i .. ": " .. tostring(e))
        assert.matches("#1 to 'work'", e.message, 1, true)
        assert.is_nil(jobs.worker)
      end
      assert.equal(0, db:value(("SELECT COUNT(*) FROM %sworkers"):format(jobs.prefix)))
      local every = {
        { "t", 1, { payload = function() end } }, { "t", 1, { queue = 5 } }, { "t", 1, { priority = 0.5 } },
        { "t", 1, { max_attempts = 0 } }, { "t", 1, { timeout = -1 } }, { "t", math.huge },
      }
      for i, c in ipairs(every) do
        local e = support.catch_table(jobs.every, jobs, table.unpack(c))
        assert.equal("argument", e.kind, "every case " .. i .. ": " .. tostring(e))
        assert.matches("to 'every'", e.message, 1, true)
      end
      assert.is_nil(next(jobs.periodic))
      local Job = require "loom.jobs.job"
      for i, tx in ipairs({ "not a transaction", 5, {} }) do
        local job = setmetatable({ worker = { db = db, sql = jobs.sql, id = "w" }, id = 1, attempt = 1 }, Job)
        local e = support.catch_table(job.complete, job, tx)
        assert.equal("argument", e.kind, "complete case " .. i)
        assert.matches("#1 to 'complete'", e.message, 1, true)
      end
    end)
  end)

  it("runs each job once with two workers on one queue", function()
    support.run(function()
      local prefix = support.unique("jh") .. "_"
      local other = loom.db.open(target.url(target), { pool = { max = 6 } })
      local a, b = open({ prefix = prefix }), open({ prefix = prefix }, other)
      local runs, by = {}, { 0, 0 }
      for i, jobs in ipairs({ a, b }) do
        jobs:handle("n", function(job)
          runs[job.payload.i] = (runs[job.payload.i] or 0) + 1
          by[i] = by[i] + 1
          if job.payload.i <= 200 and job.payload.i % 5 == 0 then
            -- and more jobs from inside a handler
            jobs:enqueue("n", { i = 1000 + job.payload.i })
          end
          loom.sleep(0.001)
        end)
      end
      local list = {}
      for i = 1, 200 do list[i] = { name = "n", payload = { i = i } } end
      a:enqueue_many(list)
      a:work { queues = { default = 4 }, prefetch = 4, poll = 0.05 }
      b:work { queues = { default = 4 }, prefetch = 4, poll = 0.05 }
      until_true(function()
        local s = a:stats()
        return s.queued + s.running == 0 and by[1] + by[2] == 240
      end, 120, "the jobs")
      a:stop(5)
      b:stop(5)
      other:close()
      for i = 1, 200 do assert.equal(1, runs[i], "job " .. i) end
      for i = 5, 200, 5 do assert.equal(1, runs[1000 + i], "job " .. (1000 + i)) end
      assert.equal(0, a:stats().failed)
    end)
  end)

  it("runs a job again on another worker when the worker running it is killed", function()
    local prefix = support.unique("jh") .. "_"
    local url = target.url(target)
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(([[
      local loom = require "loom"
      loom.run(function()
        local db = loom.db.open(%q)
        local jobs = loom.jobs.open(db, { prefix = %q })
        jobs:handle("hang", function() loom.sleep(3600) end)
        jobs:work { poll = 0.05, lease = 0.5, heartbeat = 0.1 }
        loom.sleep(120) -- a bound, should the spec die before its kill
        os.exit(1)
      end)]]):format(url, prefix))
    f:close()
    local ok, err = pcall(support.run, function()
      local jobs = open({ prefix = prefix })
      local id = jobs:enqueue("hang", { i = 1 })
      local p = loom.process.spawn("lua5.4", { path }, {
        env = { LUA_PATH = "lua/?.lua;lua/?/init.lua;;", LUA_CPATH = build .. "/?.so;;" },
        stdout = "null", stderr = "inherit",
      })
      local first
      until_true(function()
        first = jobs:get(id)
        return first.state == "running"
      end, 60, "the child to claim the job")
      p:kill("KILL")
      local code, sig = loom.timeout(30, p.wait, p)
      assert.is_nil(code)
      assert.equal("KILL", sig)
      local runs = {}
      jobs:handle("hang", function(job) runs[#runs + 1] = job.attempt end)
      jobs:work { poll = 0.05, lease = 0.5, heartbeat = 0.1, rescue_every = 0.1, on_error = quiet }
      until_true(function() return jobs:get(id) == nil end, 60, "the job to run again here")
      jobs:stop(5)
      assert.same({ 2 }, runs)
      assert.is_true(first.owner ~= loom.null)
    end)
    os.remove(path)
    assert(ok, err)
  end)

  it("keeps its own job of a worker that claimed it twice", function()
    support.run(function()
      -- A worker cut off from the database past its lease has its job
      -- taken back; back again, it claims the same job a second time
      -- while the first run still runs. Stopping it must still reach the
      -- second run.
      local jobs = open()
      local started = 0
      local gate = loom.event()
      jobs:handle("twice", function()
        started = started + 1
        if started == 1 then gate:wait(30) return end
        loom.sleep(3600)
      end)
      local id = jobs:enqueue("twice", {})
      local w = jobs:work { poll = 0.05, lease = 0.5, heartbeat = 0.1 }
      until_true(function() return started == 1 end, 30, "the first run")
      -- the lease lapses and another worker's rescue takes the job back
      w.tasks.heartbeat:cancel("frozen")
      loom.sleep(0.7)
      db:exec(jobs.sql.rescue)
      db:exec(q(("UPDATE %sworkers SET expires_at = expires_at + 600000 WHERE id = ?"):format(jobs.prefix)), w.id)
      until_true(function() return started == 2 end, 30, "the second claim")
      gate:set() -- the first, stale run ends
      loom.sleep(0.1)
      assert.equal(1, loom.timeout(30, jobs.stop, jobs, 0.2))
      local r = jobs:get(id)
      assert.equal("available", r.state)
    end)
  end)
end)

  end
end
