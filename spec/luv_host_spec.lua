-- loom.luv: a program whose loop is luv's runs loom beside it. The program
-- calls uv.run() and nothing else; its own luv timer ticks while loom's
-- tasks sleep, pass values over channels and query databases, and uv.run()
-- returns once both sides are done. (spec/embed_spec.lua drives loom.step by
-- hand from luv; this is the adapter a luv program uses.)
local loom = require "loom"
local uv = require "luv"
local adapter_mod = require "loom.luv"
local pg = require "spec.support.pg"

-- The work takes well under a second; the guard ends a stalled run (and
-- fails it) long before the spec's own deadline.
local BOUND = 20

-- Runs uv.run() with the adapter and a guard timer; returns the adapter.
local function run_host(setup)
  local adapter = adapter_mod.start(uv)
  local guard, stalled = uv.new_timer(), false
  guard:start(BOUND * 1000, 0, function()
    stalled = true
    adapter:stop()
    uv.walk(function(h) if not h:is_closing() then h:close() end end)
  end)
  guard:unref()
  setup(adapter)
  uv.run("default")
  adapter:stop()
  if not guard:is_closing() then guard:close() end
  uv.run("default")
  assert.is_false(stalled, "uv.run() did not return within " .. BOUND .. " s")
  return adapter
end

-- A luv timer of the program's own that ticks every 5 ms, n times.
local function ticker(n, log)
  local t, ticks = uv.new_timer(), 0
  t:start(5, 5, function()
    ticks = ticks + 1
    log[#log + 1] = "tick"
    if ticks == n then t:close() end
  end)
  return function() return ticks end
end

describe("loom.luv", function()
  it("runs sleeping tasks and channels while the program's own timer ticks", function()
    local log, ch, got, ticks = {}, nil, {}, nil
    run_host(function()
      ticks = ticker(10, log)
      ch = loom.channel(0)
      loom.spawn(function()
        for i = 1, 5 do
          loom.sleep(0.01)
          log[#log + 1] = "send"
          ch:send(i)
        end
        ch:close()
      end)
      loom.spawn(function()
        for v in ch:iter() do got[#got + 1] = v end
      end)
    end)
    assert.same({ 1, 2, 3, 4, 5 }, got)
    assert.equal(10, ticks())
    -- Both sides made progress in turns: the ticks (every 5 ms) and the
    -- sends (every 10 ms) interleave rather than one running to its end.
    local first_send, last_tick
    for i, what in ipairs(log) do
      if what == "send" and not first_send then first_send = i end
      if what == "tick" then last_tick = i end
    end
    assert.is_true(first_send < last_tick, "loom ran only after the program's timer was done")
  end)

  it("steps tasks a luv callback spawns after loom went idle", function()
    local done = {}
    run_host(function()
      local t = uv.new_timer()
      t:start(20, 0, function()
        t:close()
        -- loom has had nothing to do for 20 ms: no fd event and no timer
        -- announces this task, only the check after this callback.
        loom.spawn(function()
          loom.sleep(0.01)
          done[#done + 1] = "late task"
        end)
      end)
    end)
    assert.same({ "late task" }, done)
  end)

  it("runs SQLite queries (answers from worker threads)", function()
    local sum, db = 0, nil
    run_host(function()
      db = loom.db.open("sqlite::memory:")
      local wg = loom.waitgroup()
      for i = 1, 8 do
        wg:add(1)
        loom.spawn(function()
          local v = db:value("SELECT ?", i)
          sum = sum + v
          wg:done()
        end)
      end
      loom.spawn(function() wg:wait(); db:close() end)
    end)
    assert.equal(36, sum)
  end)

  it("runs PostgreSQL queries on a pool while the program's timer ticks", function()
    local log, ids, ticks = {}, {}, nil
    run_host(function()
      ticks = ticker(4, log)
      local db = loom.db.open(pg.url(), { pool = { max = 4 } })
      loom.spawn(function()
        loom.group(function(g)
          for i = 1, 8 do
            g:spawn(function()
              ids[i] = db:value("SELECT $1::int + 0 * pg_backend_pid() FROM (SELECT pg_sleep(0.02)) AS s", i)
            end)
          end
        end)
        db:close()
      end)
    end)
    assert.same({ 1, 2, 3, 4, 5, 6, 7, 8 }, ids)
    assert.equal(4, ticks())
  end)
end)
