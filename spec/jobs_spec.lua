-- loom.jobs, the same cases on PostgreSQL, MariaDB and SQLite (a file:
-- jobs are for several processes, which an in-memory database is not
-- shared with). Each case has tables of its own (a fresh prefix).
local loom = require "loom"
local support = require "spec.support.db"
local drivers = require "spec.support.drivers"

-- Waits until cond() is true, for at most `bound` seconds.
local function until_true(cond, bound, what)
  local deadline = loom.now() + (bound or 30)
  while not cond() do
    assert(loom.now() < deadline, "still waiting for " .. (what or "a condition"))
    loom.sleep(0.02)
  end
end

for _, target in ipairs(drivers.targets) do
  if target.name ~= "sqlite memory" then
  local T = drivers.dialects[target.driver]
  local q = T.sql

describe("jobs: " .. target.name, function()
  local db
  setup(function() db = loom.db.open(target.url(target), { pool = { max = 12 } }) end)
  teardown(function()
    db:close()
    collectgarbage()
    if target.cleanup then target.cleanup(target) end
  end)

  local function open(opts, handle)
    opts = opts or {}
    opts.prefix = opts.prefix or support.unique("jb") .. "_"
    return loom.jobs.open(handle or db, opts)
  end

  local function side_table(prefix)
    local t = prefix .. "effects"
    db:exec(("CREATE TABLE %s (job_id BIGINT NOT NULL, note TEXT)"):format(t))
    return t
  end

  it("runs jobs, retries failures with backoff, keeps a job failed after max_attempts", function()
    support.run(function()
      local runs = {}
      local jobs = open({ backoff = function() return 0.15 end })
      jobs:handle("work", function(job)
        local list = runs[job.payload.key] or {}
        runs[job.payload.key] = list
        list[#list + 1] = loom.now()
        assert.equal(#list, job.attempt)
        if job.payload.fail_until >= job.attempt then error("failing on purpose " .. job.attempt) end
      end)
      local ok_id = jobs:enqueue("work", { key = "ok", fail_until = 0 })
      local retry_id = jobs:enqueue("work", { key = "retry", fail_until = 1 })
      local dead_id = jobs:enqueue("work", { key = "dead", fail_until = 99 }, { max_attempts = 3 })
      assert.is_true(ok_id < retry_id and retry_id < dead_id)
      jobs:work { queues = { default = 4 }, poll = 0.05 }
      until_true(function() local r = jobs:get(dead_id) return r and r.state == "failed" end, 30, "the failed job")
      until_true(function() return jobs:get(retry_id) == nil end, 30, "the retried job")
      jobs:stop(5)
      assert.equal(1, #runs.ok)
      assert.equal(2, #runs.retry)
      assert.is_true(runs.retry[2] - runs.retry[1] >= 0.1, "retried before its backoff")
      assert.equal(3, #runs.dead)
      assert.is_nil(jobs:get(ok_id))
      local dead = jobs:get(dead_id)
      assert.equal(3, dead.attempt)
      assert.matches("failing on purpose 3", dead.last_error, 1, true)
      assert.matches("stack traceback", dead.traceback, 1, true)
      assert.equal(loom.null, dead.owner)
      local s = jobs:stats()
      assert.equal(1, s.failed); assert.equal(0, s.queued); assert.equal(0, s.running)
    end)
  end)

  it("runs every job of a long queue once through few slots and a prefetch buffer", function()
    support.run(function()
      local jobs = open()
      local runs, most, active = {}, 0, 0
      jobs:handle("n", function(job)
        active = active + 1
        most = math.max(most, active)
        loom.sleep(math.random(0, 3) / 1000)
        active = active - 1
        runs[job.payload.i] = (runs[job.payload.i] or 0) + 1
      end)
      local list = {}
      for i = 1, 300 do list[i] = { name = "n", payload = { i = i } } end
      jobs:enqueue_many(list)
      jobs:work { queues = { default = 3 }, prefetch = 7, poll = 0.05 }
      until_true(function() return jobs:stats().queued + jobs:stats().running == 0 end, 60, "the queue to drain")
      jobs:stop(5)
      for i = 1, 300 do assert.equal(1, runs[i], "job " .. i) end
      assert.equal(3, most)
    end)
  end)

  it("serves a queue with a long name", function()
    support.run(function()
      local jobs = open()
      local queue = ("q"):rep(100)
      local done = loom.event()
      jobs:handle("long", function(job)
        assert.equal(queue, job.queue)
        done:set()
      end)
      -- Where notifications exist, only one can wake the worker in time:
      -- the job comes from another handle, and the poll is far off.
      jobs:work { queues = { [queue] = 1 }, poll = T.listens and 60 or nil }
      open({ prefix = jobs.prefix }):enqueue("long", {}, { queue = queue })
      done:wait(30)
      jobs:stop(5)
    end)
  end)

  it("wakes on a burst of enqueues from elsewhere: throttled notifications lose none", function()
    support.run(function()
      local jobs = open()
      local seen = 0
      jobs:handle("b", function() seen = seen + 1 end)
      jobs:work { queues = { default = 4 }, poll = T.listens and 60 or nil, prefetch = 0 }
      local producer = open({ prefix = jobs.prefix, notify_interval = 0.05 })
      for round = 1, 3 do
        for _ = 1, 10 do producer:enqueue("b", {}) end
        until_true(function() return seen == 10 * round end, 30, "round " .. round)
        loom.sleep(0.02)
      end
      jobs:stop(5)
    end)
  end)

  it("backs off exponentially with jitter, capped", function()
    support.run(function()
      local jobs = open({ backoff = { base = 1, max = 10 } })
      for attempt, cap in ipairs({ 1, 2, 4, 8, 10, 10 }) do
        for _ = 1, 20 do
          local d = jobs:_backoff(attempt)
          assert.is_true(d >= cap / 2 and d <= cap, ("attempt %d waited %g"):format(attempt, d))
        end
      end
    end)
  end)

  it("keeps one queued job per unique_key", function()
    support.run(function()
      local jobs = open()
      local id = jobs:enqueue("u", { n = 1 }, { unique_key = "only" })
      assert.is_not_nil(id)
      assert.is_nil(jobs:enqueue("u", { n = 2 }, { unique_key = "only" }))
      assert.equal(1, jobs:enqueue_many({ { name = "u", payload = {}, unique_key = "only" },
        { name = "u", payload = {}, unique_key = "other" } }))
      local done = loom.event()
      jobs:handle("u", function() done:set() end)
      jobs:work { queues = { default = 1 }, poll = 0.05 }
      until_true(function() return jobs:get(id) == nil end, 30, "the unique job to finish")
      jobs:stop(5)
      -- finished: the key is free again
      assert.is_not_nil(jobs:enqueue("u", { n = 3 }, { unique_key = "only" }))
    end)
  end)

  it("enqueues in the caller's transaction: no job when it rolls back", function()
    support.run(function()
      local jobs = open()
      local ok = pcall(db.transaction, db, function(tx)
        jobs:enqueue("t", { n = 1 }, { tx = tx })
        jobs:enqueue_many({ { name = "t", payload = { n = 2 } } }, { tx = tx })
        error("roll back")
      end)
      assert.is_false(ok)
      assert.equal(0, jobs:stats().queued)
      local id
      db:transaction(function(tx)
        id = jobs:enqueue("t", { n = 3 }, { tx = tx })
        assert.equal(2, jobs:enqueue_many({ { name = "t", payload = { n = 4 } },
          { name = "t", payload = { n = 5 }, queue = "other" } }, { tx = tx }))
      end)
      assert.equal(3, jobs:stats().queued)
      assert.same({ n = 3 }, jobs:get(id).payload)
      assert.equal(1, jobs:stats().queues.other.queued)
    end)
  end)

  it("completes a job in the handler's transaction once; a lost lease rolls the handler's work back", function()
    support.run(function()
      local jobs = open()
      local t = side_table(jobs.prefix)
      local insert = q(("INSERT INTO %s (job_id, note) VALUES (?, ?)"):format(t))
      jobs:handle("pay", function(job)
        db:transaction(function(tx)
          tx:exec(insert, job.id, "paid")
          job:complete(tx)
        end)
      end)
      local ids = {}
      for i = 1, 20 do ids[i] = jobs:enqueue("pay", { i = i }) end
      jobs:work { queues = { default = 5 }, poll = 0.05 }
      until_true(function() return jobs:stats().queued + jobs:stats().running == 0 end, 30, "the jobs")
      jobs:stop(5)
      assert.equal(20, db:value(("SELECT COUNT(*) FROM %s"):format(t)))
      for _, id in ipairs(ids) do
        assert.equal(1, db:value(q(("SELECT COUNT(*) FROM %s WHERE job_id = ?"):format(t)), id))
      end

      -- A worker whose lease lapses: another takes its job back and runs
      -- it; the first one's complete(tx) fails and its write is undone.
      local stale = open({ prefix = jobs.prefix })
      local fresh = open({ prefix = jobs.prefix })
      local gate, lost = loom.event(), nil
      stale:handle("slow", function(job)
        gate:wait(30)
        local ok, e = pcall(db.transaction, db, function(tx)
          tx:exec(insert, job.id, "stale")
          job:complete(tx)
        end)
        lost = not ok and e
      end)
      fresh:handle("slow", function(job)
        db:transaction(function(tx)
          tx:exec(insert, job.id, "fresh")
          job:complete(tx)
        end)
      end)
      local id = stale:enqueue("slow", {})
      local w = stale:work { queues = { default = 1 }, poll = 0.05, lease = 0.5, heartbeat = 0.1 }
      until_true(function() local r = stale:get(id) return r and r.state == "running" end, 30, "the claim")
      w.tasks.heartbeat:cancel("this worker is frozen") -- its lease lapses
      fresh:work { queues = { default = 1 }, poll = 0.05, lease = 0.5, heartbeat = 0.1, rescue_every = 0.1 }
      until_true(function() return stale:get(id) == nil end, 30, "the rescue and the second run")
      gate:set()
      until_true(function() return lost ~= nil end, 30, "the stale handler")
      assert.equal("lease_lost", lost.kind)
      assert.same({ { note = "fresh" } }, db:query(q(("SELECT note FROM %s WHERE job_id = ?"):format(t)), id))
      stale:stop(5)
      fresh:stop(5)
    end)
  end)

  it("cancels a handler that runs past its timeout", function()
    support.run(function()
      local jobs = open()
      local finished = false
      jobs:handle("slow", function()
        loom.sleep(30)
        finished = true
      end, { timeout = 0.1 })
      local id = jobs:enqueue("slow", {}, { max_attempts = 1 })
      local id2 = jobs:enqueue("slow", {}, { max_attempts = 1, timeout = 0.05 })
      jobs:work { queues = { default = 2 }, poll = 0.05 }
      until_true(function() return jobs:stats().failed == 2 end, 30, "the timeouts")
      jobs:stop(5)
      assert.is_false(finished)
      assert.matches("timeout", jobs:get(id).last_error)
      assert.matches("timeout", jobs:get(id2).last_error)
    end)
  end)

  it("stops gracefully: running jobs finish within the deadline, the rest go back to the queue", function()
    support.run(function()
      local jobs = open()
      local quick_done = false
      jobs:handle("quick", function() loom.sleep(0.1) quick_done = true end)
      jobs:handle("long", function() loom.sleep(30) end)
      local quick = jobs:enqueue("quick", {})
      local long = jobs:enqueue("long", {})
      local queued = jobs:enqueue("long", {}, { delay = 3600 })
      jobs:work { queues = { default = 4 }, poll = 0.05 }
      until_true(function() return jobs:stats().running == 2 end, 30, "both jobs to start")
      local t0 = loom.now()
      assert.equal(1, jobs:stop(0.5))
      assert.is_true(loom.now() - t0 < 10)
      assert.is_true(quick_done)
      assert.is_nil(jobs:get(quick))
      local r = jobs:get(long)
      assert.equal("available", r.state)
      assert.equal(0, r.attempt) -- given back unrun: the attempt does not count
      assert.equal(loom.null, r.owner)
      assert.equal("available", jobs:get(queued).state)
      assert.equal(0, db:value(("SELECT COUNT(*) FROM %sworkers"):format(jobs.prefix)))
    end)
  end)

  it("cancels queued and running jobs", function()
    support.run(function()
      local jobs = open()
      local started, after = loom.event(), false
      jobs:handle("c", function()
        started:set()
        loom.sleep(30)
        after = true
      end)
      local later = jobs:enqueue("c", {}, { delay = 3600 })
      assert.is_true(jobs:cancel(later))
      assert.equal("cancelled", jobs:get(later).state)
      local id = jobs:enqueue("c", {})
      jobs:work { queues = { default = 1 }, poll = 0.05, heartbeat = 0.1 }
      started:wait(30)
      -- a second handle, as another process would cancel it
      assert.is_true(open({ prefix = jobs.prefix }):cancel(id))
      until_true(function() return jobs:get(id).state == "cancelled" end, 30, "the cancel")
      assert.is_false(after)
      assert.is_false(jobs:cancel(id))
      assert.is_false(jobs:cancel(123456789))
      jobs:stop(5)
      assert.equal(2, jobs:stats().cancelled)
    end)
  end)

  it("runs a periodic job once per period across two workers", function()
    support.run(function()
      local prefix = support.unique("jb") .. "_"
      local seen, dup = {}, {}
      local other = loom.db.open(target.url(target), { pool = { max = 6 } })
      local workers = { open({ prefix = prefix }), open({ prefix = prefix }, other) }
      for _, jobs in ipairs(workers) do
        jobs:every("tick", 0.25, { payload = { hello = "periodic" } })
        jobs:handle("tick", function(job)
          assert.equal("periodic", job.payload.hello)
          if seen[job.unique_key] then dup[#dup + 1] = job.unique_key end
          seen[job.unique_key] = true
        end)
        jobs:work { queues = { default = 2 }, poll = 0.05 }
      end
      until_true(function()
        local n = 0
        for _ in pairs(seen) do n = n + 1 end
        return n >= 4
      end, 30, "four periods")
      for _, jobs in ipairs(workers) do jobs:stop(5) end
      other:close()
      assert.same({}, dup)
      local dues = {}
      for key in pairs(seen) do dues[#dues + 1] = assert(math.tointeger(key:match("^tick@(%d+)$"))) end
      table.sort(dues)
      for i = 2, #dues do assert.equal(0, (dues[i] - dues[i - 1]) % 250) end
    end)
  end)

  it("counts jobs per queue and state in stats, with the oldest wait", function()
    support.run(function()
      local jobs = open()
      jobs:enqueue("a", {}, { queue = "q1" })
      jobs:enqueue("a", {}, { queue = "q1" })
      jobs:enqueue("a", {}, { queue = "q2", delay = 3600 })
      loom.sleep(0.1)
      local s = jobs:stats()
      assert.equal(3, s.queued)
      assert.equal(2, s.queues.q1.queued); assert.equal(1, s.queues.q2.queued)
      assert.is_true(s.queues.q1.oldest_wait >= 0.05)
      assert.is_nil(s.queues.q2.oldest_wait) -- not due yet
      assert.equal(0, s.running); assert.equal(0, s.failed)
    end)
  end)

  it("migrates once when two processes open the same tables at once", function()
    local prefix = support.unique("jb") .. "_"
    local url = target.url(target)
    local src = ([[
      local loom = require "loom"
      loom.run(function()
        local db = loom.db.open(%q)
        local jobs = loom.jobs.open(db, { prefix = %q })
        jobs:enqueue("m", {})
        db:close()
        print("migrated")
      end)]]):format(url, prefix)
    local procs = {}
    for i = 1, 3 do
      local path = os.tmpname()
      local f = assert(io.open(path, "w")); f:write(src); f:close()
      procs[i] = { path = path, p = io.popen(("LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='%s/?.so;;' "
        .. "timeout -k 5 120 lua5.4 %s 2>&1"):format(os.getenv("LOOM_BUILD_DIR") or "build", path)) }
    end
    for _, proc in ipairs(procs) do
      local out = proc.p:read("a")
      assert.is_true(proc.p:close(), out)
      assert.matches("migrated", out)
      os.remove(proc.path)
    end
    support.run(function()
      assert.equal(1, db:value(("SELECT COUNT(*) FROM %sjobs_schema"):format(prefix)))
      assert.equal(3, open({ prefix = prefix }):stats().queued)
    end)
  end)
end)

  end
end
