-- loom.thread.channel: channels between Lua states on different threads
-- (lua/thread/channel.c on core/xchan.c). Every wait is bounded.
local loom = require "loom"
local support = dofile("spec/support/thread.lua")
local within, expect_error = support.within, support.expect_error

describe("loom.thread.channel", function()
  local pool
  before_each(function() pool = loom.thread.pool { size = 2 } end)
  after_each(function() pool:close() end)

  it("has loom.channel's methods and refuses a capacity below 1", function()
    local ch = loom.thread.channel(3)
    for _, m in ipairs({ "send", "recv", "try_send", "try_recv", "iter", "close", "is_closed", "cap" }) do
      assert.is_function(ch[m], m)
    end
    assert.equal(3, ch:cap())
    assert.equal(0, #ch)
    assert.matches("loom.thread.channel %(0/3%)", tostring(ch))
    local err = expect_error("argument", loom.thread.channel, 0)
    assert.matches("rendezvous", err.message)
    expect_error("argument", loom.thread.channel)
    expect_error("argument", ch.send, ch, nil)
  end)

  it("copies values: nothing is shared between sender and receiver", function()
    within(5, function()
      local ch = loom.thread.channel(2)
      local t = { 1, { 2 } }
      ch:send(t)
      local got = ch:recv()
      assert.same(t, got)
      assert.are_not.equal(t, got)
      expect_error("argument", ch.send, ch, { conn = io.stdout })
      assert.equal(0, #ch)
    end)
  end)

  it("raises what the receiver cannot decode, and lets go of the message", function()
    within(5, function()
      local ch, inner = loom.thread.channel(2), loom.thread.channel(1)
      package.loaded.chan_spec_only_here = {}
      finally(function() package.loaded.chan_spec_only_here = nil end)
      ch:send({ package.loaded.chan_spec_only_here, inner })
      ch:send({ package.loaded.chan_spec_only_here })
      package.loaded.chan_spec_only_here = nil
      local err = expect_error("argument", ch.recv, ch)
      assert.matches("cannot find module 'chan_spec_only_here'", err.message)
      err = expect_error("argument", ch.try_recv, ch)
      assert.matches("cannot find module 'chan_spec_only_here'", err.message)
      assert.equal(0, #ch)
    end)
  end)

  it("crosses to workers as an argument and as an upvalue, both ways", function()
    within(20, function()
      local inbox, outbox = loom.thread.channel(2), loom.thread.channel(2)
      local job = loom.spawn(function()
        return pool:run(function(inp)
          local n = 0
          for v in inp:iter() do n = n + v; outbox:send(n) end
          outbox:close()
          return n
        end, inbox)
      end)
      local sums = {}
      loom.spawn(function() for v in outbox:iter() do sums[#sums + 1] = v end end)
      for i = 1, 20 do inbox:send(i) end
      inbox:close()
      assert.equal(210, job:join())
      while not outbox:is_closed() or #outbox > 0 do loom.sleep(0.01) end
      loom.sleep(0.01)
      assert.equal(20, #sums)
      assert.equal(210, sums[20])
    end)
  end)

  it("crosses inside a message on another channel", function()
    within(20, function()
      local reply_to = loom.thread.channel(1)
      local requests = loom.thread.channel(1)
      local server = loom.spawn(function()
        return pool:run(function(reqs)
          local req = reqs:recv()
          req.reply:send(req.x * 2)
        end, requests)
      end)
      requests:send({ x = 21, reply = reply_to })
      assert.equal(42, reply_to:recv())
      server:join()
    end)
  end)

  it("waiting in a task never blocks the loop", function()
    within(20, function()
      local ch = loom.thread.channel(1)
      local ticks = 0
      local ticker = loom.spawn(function() while true do loom.sleep(0.01); ticks = ticks + 1 end end)
      loom.spawn(function() pool:run(function(c) require("loom").sleep(0.2); c:send("late") end, ch) end)
      assert.equal("late", ch:recv())
      ticker:cancel()
      assert.is_true(ticks >= 8, "the loop kept running while recv waited: " .. ticks)
    end)
  end)

  it("applies backpressure: a full channel makes the sender wait", function()
    within(20, function()
      local ch = loom.thread.channel(2)
      assert.is_true(ch:try_send(1))
      assert.is_true(ch:try_send(2))
      assert.is_false(ch:try_send(3))
      assert.equal(2, #ch)
      local sent = false
      local t = loom.spawn(function() ch:send(3); sent = true end)
      loom.sleep(0.05)
      assert.is_false(sent)
      -- A worker drains it: the sender in this state is woken from there.
      local got = pool:run(function(c) return c:recv(), c:recv(), c:recv() end, ch)
      t:join()
      assert.is_true(sent)
      assert.equal(1, got)
      local v, ok = ch:try_recv()
      assert.is_nil(v); assert.is_false(ok)
    end)
  end)

  it("close wakes every waiter: receivers get nil, senders an error; what is left stays", function()
    within(20, function()
      local ch = loom.thread.channel(1)
      local results = {}
      local receivers = {}
      for i = 1, 3 do
        receivers[i] = loom.spawn(function() results[i] = { ch:recv() } end)
      end
      loom.sleep(0.02)
      pool:run(function(c) c:close() end, ch)
      for i = 1, 3 do receivers[i]:join() end
      for i = 1, 3 do assert.is_nil(results[i][1]); assert.is_false(results[i][2]) end
      assert.is_true(ch:is_closed())
      expect_error("closed", ch.send, ch, 1)

      local full = loom.thread.channel(1)
      full:send("kept")
      local sender = loom.spawn(function() full:send("blocked") end)
      loom.sleep(0.02)
      full:close()
      local ok, err = pcall(sender.join, sender)
      assert.is_false(ok); assert.equal("closed", err.kind)
      assert.equal("kept", full:recv())
      assert.is_nil(full:recv())
    end)
  end)

  it("a timeout or cancel ends a wait and withdraws it", function()
    within(20, function()
      local ch = loom.thread.channel(1)
      expect_error("timeout", loom.timeout, 0.05, function() return ch:recv() end)
      local t = loom.spawn(function() return ch:recv() end)
      loom.sleep(0.01)
      t:cancel()
      local ok, err = pcall(t.join, t)
      assert.is_false(ok); assert.equal("cancelled", err.kind)
      ch:send("for the next one")
      assert.equal("for the next one", ch:recv())
    end)
  end)

  it("works outside any task", function()
    local ch = loom.thread.channel(1)
    local p = loom.thread.pool { size = 1 }
    loom.spawn(function() p:run(function(c) require("loom").sleep(0.05); c:send("hi") end, ch) end)
    assert.equal("hi", loom.timeout(10, ch.recv, ch))
    p:close()
  end)

  describe("in loom.select", function()
    it("is a case source beside loom.channel, woken from another thread", function()
      within(20, function()
        local x = loom.thread.channel(1)
        local local_ch = loom.channel(1)
        loom.spawn(function() pool:run(function(c) require("loom").sleep(0.05); c:send("from a worker") end, x) end)
        local i, v, ok = loom.select { { local_ch, "recv" }, { x, "recv" }, timeout = 5 }
        assert.equal(2, i); assert.equal("from a worker", v); assert.is_true(ok)
        local_ch:send("local")
        i, v = loom.select { { local_ch, "recv" }, { x, "recv" } }
        assert.equal(1, i); assert.equal("local", v)
      end)
    end)

    it("sends, times out, and reports a closed channel", function()
      within(20, function()
        local x = loom.thread.channel(1)
        local i, _, sent = loom.select { { x, "send", { n = 1 } } }
        assert.equal(1, i); assert.is_true(sent)
        -- Full: the send case waits until the timeout.
        local t0 = loom.now()
        assert.is_nil(loom.select { { x, "send", 2 }, timeout = 0.05 })
        assert.is_true(loom.now() - t0 >= 0.04)
        assert.equal(0, select("#", loom.select { { x, "send", 2 }, timeout = 0 }))
        -- A worker makes room: the waiting send case proceeds.
        loom.spawn(function() pool:run(function(c) require("loom").sleep(0.05); c:recv() end, x) end)
        i = loom.select { { x, "send", 3 }, timeout = 5 }
        assert.equal(1, i)
        assert.equal(3, x:recv())
        x:close()
        local v, ok
        i, v, ok = loom.select { { x, "recv" } }
        assert.equal(1, i); assert.is_nil(v); assert.is_false(ok)
        expect_error("closed", loom.select, { { x, "send", 1 } })
        expect_error("argument", loom.select, { { x, "send", { conn = io.stdout } } })
      end)
    end)

    it("waits again when another thread took what woke it", function()
      within(20, function()
        local x = loom.thread.channel(4)
        local got = {}
        -- Two selecting tasks here and a worker all receive; each value
        -- goes to exactly one of them.
        for _ = 1, 2 do
          loom.spawn(function()
            while true do
              local _, v, ok = loom.select { { x, "recv" } }
              if not ok then return end
              got[#got + 1] = v
            end
          end)
        end
        local stolen = loom.spawn(function()
          return pool:run(function(c) local n = 0 for _ in c:iter() do n = n + 1 end return n end, x)
        end)
        for i = 1, 200 do x:send(i) end
        x:close()
        local n = stolen:join()
        while #got + n < 200 do loom.sleep(0.01) end
        assert.equal(200, #got + n)
      end)
    end)
  end)

  it("frees channels held only by messages nobody read", function()
    within(20, function()
      -- (Not a cycle: a channel whose messages lead back to it keeps
      -- itself alive, as the reference says.)
      for _ = 1, 50 do
        local a, b, c = loom.thread.channel(2), loom.thread.channel(2), loom.thread.channel(1)
        a:send({ b = b, s = ("x"):rep(1000) })
        b:send({ c = c })
      end
      collectgarbage(); collectgarbage()
    end)
  end)
end)
