-- loom.thread's large copies, which cross as streams (lua/thread/xstream.c):
-- a value with a table of LM_XSTREAM_ITEMS (4096) array items or more is
-- decoded by the receiver while the sender still encodes it, both ways.
-- What a stream promises beyond an ordinary copy: an encode that fails
-- halfway ends it cleanly on both sides, a cancel reaches a job whose
-- arguments still stream, shared tables and cycles survive although the
-- sender cannot mark them, and nothing is left waiting.
local loom = require "loom"
local support = dofile("spec/support/thread.lua")
local within, expect_error = support.within, support.expect_error

local N = 20000 -- well past the threshold, and a few hundred KB encoded

local function records(n)
  local t = {}
  for i = 1, n do t[i] = { id = i, name = "item" .. i, price = i / 4, tags = { "a", "b" } } end
  return t
end

local function check(t, n)
  assert.equal(n, #t)
  for _, i in ipairs({ 1, 2, n // 2, n - 1, n }) do
    local r = t[i]
    assert.equal(i, r.id); assert.equal("integer", math.type(r.id))
    assert.equal("item" .. i, r.name); assert.equal(i / 4, r.price)
    assert.same({ "a", "b" }, r.tags)
  end
end

describe("loom.thread streams", function()
  local pool
  before_each(function() pool = loom.thread.pool { size = 1 } end)
  after_each(function() pool:close() end)

  it("copies a large table to a worker and back", function()
    within(20, function()
      local t = records(N)
      local back, n = pool:run(function(x) return x, #x end, t)
      assert.equal(N, n)
      check(back, N)
      assert.are_not.equal(t, back)
    end)
  end)

  it("returns results larger than the threshold from small arguments", function()
    within(20, function()
      local t, extra = pool:run(function(n)
        local out = {}
        for i = 1, n do out[i] = { id = i, name = "item" .. i, price = i / 4, tags = { "a", "b" } } end
        return out, "and more"
      end, N)
      check(t, N)
      assert.equal("and more", extra)
    end)
  end)

  it("keeps shared tables and cycles across a large streamed message", function()
    within(20, function()
      local shared = { "shared" }
      local t = records(N)
      t[1].same = shared
      t[N].same = shared           -- referred to again at the far end
      t[N // 2].back = t           -- a cycle through the top
      t[7].self = t[7]             -- a cycle within a record
      t[8].early = t[N]            -- a record met before its place in the array
      local fn = function(x)
        assert(x[1].same == x[N].same and x[1].same[1] == "shared")
        assert(x[N // 2].back == x and x[7].self == x[7] and x[8].early == x[N])
        return x, x[1].same
      end
      local back, s = pool:run(fn, t)
      check(back, N)
      assert.equal(s, back[1].same); assert.equal(back[1].same, back[N].same)
      assert.equal(back, back[N // 2].back)
      assert.equal(back[7], back[7].self)
      assert.equal(back[N], back[8].early)
      -- a table with many pairs and an array, and a large array as a pair's value
      local mixed = { list = records(N) }
      for i = 1, 5000 do mixed["k" .. i] = i end
      mixed.list[3].up = mixed
      local m = pool:run(function(x) return x end, mixed)
      assert.equal(5000, m.k5000); check(m.list, N); assert.equal(m, m.list[3].up)
    end)
  end)

  it("ends a stream whose encode fails halfway: the path, no leak, the pool serves", function()
    within(20, function()
      local t = records(N)
      t[N - 10].tags[2] = io.stdout
      local err = expect_error("argument", pool.run, pool, function(x) return #x end, t)
      assert.matches("cannot copy userdata at args%[1%]%[" .. (N - 10) .. "%]%.tags%[2%]", err.message)
      t[N - 10].tags[2] = "b"
      assert.equal(N, pool:run(function(x) return #x end, t))
      -- and the same on the way back, from the worker
      local err2 = expect_error("argument", pool.run, pool, function(n)
        local out = {}
        for i = 1, n do out[i] = { i } end
        out[n - 3][2] = io.stdout
        return out
      end, N)
      assert.matches("cannot copy userdata at results%[1%]%[" .. (N - 3) .. "%]%[2%]", err2.message)
      assert.equal(N, pool:run(function(x) return #x end, t))
      assert.equal(0, pool:stats().running)
    end)
  end)

  it("stops on a cancel while a large job streams, and the pool serves", function()
    within(20, function()
      local t = records(4 * N)
      for _ = 1, 3 do
        local ok, err = pcall(loom.timeout, 0.001, function()
          return pool:run(function(x) return x end, t)
        end)
        assert.is_false(ok)
        assert.equal("timeout", err.kind)
      end
      local waited = 0
      while pool:stats().running + pool:stats().stuck > 0 and waited < 5 do
        loom.sleep(0.01); waited = waited + 0.01
      end
      check(pool:run(function(x) return x end, records(N)), N)
    end)
  end)

  it("carries a thread channel inside a large message, both ways", function()
    within(20, function()
      local ch = loom.thread.channel(4)
      local t = records(N)
      t[N].ch = ch
      local back = pool:run(function(x)
        x[N].ch:send("from the worker")
        return x
      end, t)
      assert.equal("from the worker", ch:recv())
      back[N].ch:send("through the copy")
      assert.equal("through the copy", ch:recv())
      check(back, N)
    end)
  end)

  it("sends many large copies through two workers at once (map)", function()
    within(30, function()
      local p2 = loom.thread.pool { size = 2 }
      local list = records(N)
      local out = p2:map(list, function(r) return { r.id * 2, r.name } end, { chunk = 5000 })
      assert.equal(N, out.n)
      assert.same({ 2 * N, "item" .. N }, out[N])
      p2:close()
    end)
  end)
end)
