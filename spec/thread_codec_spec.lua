-- loom.thread's value codec (lua/thread/codec.c): what crosses between two
-- Lua states and what is refused, with the path of the refused value.
-- core._xcopy(...) copies its arguments into a new Lua state and back again
-- (both directions, a real second state); core._xcall(fn, ...) copies fn
-- and its arguments there, calls it there and copies the results back.
local core = require "loom.core"
local loom = require "loom"

local function copy(...) return core._xcopy(...) end

local expect_error = dofile("spec/support/thread.lua").expect_error

describe("the value codec", function()
  describe("scalars", function()
    it("copies nil, booleans and several values in order, trailing nils included", function()
      local n = select("#", copy(nil, true, false, nil))
      assert.equal(4, n)
      local a, b, c, d = copy(nil, true, false, nil)
      assert.is_nil(a); assert.is_true(b); assert.is_false(c); assert.is_nil(d)
      assert.equal(0, select("#", copy()))
    end)

    it("keeps integers integers and floats floats, exactly", function()
      local values = { 0, 1, -1, 127, 128, -129, 2 ^ 31, math.maxinteger, math.mininteger,
        (1 << 53) + 1, -((1 << 53) + 1), 0.5, 1.0, 2 ^ 53 + 2, 1e308, 5e-324, 1 / 3 }
      local back = { copy(table.unpack(values)) }
      for i, v in ipairs(values) do
        assert.equal(math.type(v), math.type(back[i]), "subtype of " .. tostring(v))
        assert.equal(v, back[i])
      end
      assert.equal(9007199254740993, (copy((1 << 53) + 1)))
    end)

    it("keeps -0.0, infinities and nan", function()
      local z, inf, ninf, nan = copy(-0.0, math.huge, -math.huge, 0 / 0)
      assert.equal("float", math.type(z))
      assert.equal(-math.huge, 1 / z)
      assert.equal(math.huge, inf)
      assert.equal(-math.huge, ninf)
      assert.is_true(nan ~= nan)
      assert.equal(string.pack("d", 0 / 0), string.pack("d", nan))
    end)

    it("copies strings binary-safe, short, long and empty", function()
      local s = {}
      for i = 0, 255 do s[#s + 1] = string.char(i) end
      local bytes = table.concat(s)
      local a, b, c, d = copy("", "a\0b", bytes, bytes:rep(40))
      assert.equal("", a)
      assert.equal("a\0b", b)
      assert.equal(bytes, c)
      assert.equal(bytes:rep(40), d)
    end)

    it("copies loom.null as loom.null", function()
      local n, t = copy(loom.null, { loom.null, x = loom.null })
      assert.equal(loom.null, n)
      assert.equal(loom.null, t[1])
      assert.equal(loom.null, t.x)
    end)

    it("brings loom.null into a state that has not loaded loom", function()
      local kind = core._xcall(function(v)
        return tostring(v), package.loaded["loom.core"] ~= nil
      end, loom.null)
      assert.equal("loom.null", kind)
    end)
  end)

  describe("tables", function()
    it("copies nested tables, array and hash parts, holes and odd keys", function()
      local t = { 1, 2, nil, 4, x = { y = { z = "deep" } }, [1.5] = "f", [true] = "b",
        [-1] = "neg", [0] = "zero", [2 ^ 60] = "big" }
      local c = copy(t)
      assert.are_not.equal(t, c)
      assert.same(t, c)
      assert.is_nil(c[3])
      assert.equal("f", c[1.5])
      assert.equal("big", c[2 ^ 60])
    end)

    it("copies tables as keys", function()
      local k = { name = "key" }
      local c = copy({ [k] = "v", other = k })
      assert.equal("v", c[c.other])
    end)

    it("keeps shared sub-tables shared and cycles as cycles", function()
      local shared = { "s" }
      local t = { a = shared, b = shared, list = { shared, shared } }
      t.self = t
      t.list.up = t
      local c = copy(t)
      assert.equal(c, c.self)
      assert.equal(c, c.list.up)
      assert.equal(c.a, c.b)
      assert.equal(c.a, c.list[1])
      assert.equal(c.a, c.list[2])
      assert.are_not.equal(shared, c.a)
      assert.equal("s", c.a[1])
    end)

    it("keeps identity across the arguments of one copy", function()
      local shared = {}
      local a, b = copy(shared, { shared })
      assert.equal(a, b[1])
    end)

    it("copies a table whose array part was built out of order", function()
      local t = {}
      for i = 10, 1, -1 do t[i] = i end
      t.n = 10
      assert.same(t, copy(t))
    end)

    it("copies a 1M-element table", function()
      local t = {}
      for i = 1, 1000000 do t[i] = i end
      local c = copy(t)
      assert.equal(1000000, #c)
      assert.equal(1, c[1])
      assert.equal(777777, c[777777])
      assert.equal(1000000, c[1000000])
    end)

    it("copies a 10 MB string", function()
      local s = ("0123456789abcdef"):rep(10 * 65536)
      assert.equal(10 * 1024 * 1024, #s)
      local c = copy({ s = s })
      assert.equal(s, c.s)
    end)

    it("refuses nesting deeper than 200 levels, naming where", function()
      local ok = {}
      local t = ok
      for _ = 1, 199 do t.next = {}; t = t.next end
      local c = copy(ok)
      local depth = 0
      while c.next do c = c.next; depth = depth + 1 end
      assert.equal(199, depth)
      t.next = {}
      local err = expect_error("argument", copy, ok)
      assert.matches("cannot copy a value nested more than 200 levels deep at args%[1%]%.next", err.message)
      assert.matches("%.next%.%.%.%.next", err.message)
    end)
  end)

  describe("functions", function()
    it("copies a closure with its upvalues, independent of the original", function()
      local n = 0
      local function counter() n = n + 1; return n end
      assert.equal(1, counter())
      local c = copy(counter)
      assert.equal(2, c())
      assert.equal(3, c())
      assert.equal(2, counter())
      assert.equal(2, n)
    end)

    it("runs a copied closure in the other state with its upvalues", function()
      local base, add = 10, function(a, b) return a + b end
      local function f(x) return add(base, x) end
      assert.equal(15, core._xcall(f, 5))
    end)

    it("keeps two closures over one table sharing that table's copy", function()
      local state = { n = 0 }
      local inc = function() state.n = state.n + 1 end
      local get = function() return state.n end
      local i2, g2 = copy(inc, get)
      i2(); i2()
      assert.equal(2, g2())
      assert.equal(0, state.n)
    end)

    it("copies recursive and mutually referring functions", function()
      local function fact(n) return n <= 1 and 1 or n * fact(n - 1) end
      assert.equal(120, core._xcall(function() return fact(5) end))
      local t = {}
      function t.f() return t end
      local c = copy(t)
      assert.equal(c, c.f())
    end)

    it("gives a function the receiver's globals, not a copy of the sender's", function()
      _G.LOOM_CODEC_MARK = "sender"
      finally(function() _G.LOOM_CODEC_MARK = nil end)
      local function read() return rawget(_G, "LOOM_CODEC_MARK"), _G == _ENV end
      local there, same = core._xcall(read)
      assert.is_nil(there)
      assert.is_true(same)
      -- and back again: the copy reads the caller's globals
      assert.equal("sender", (copy(read)()))
      assert.equal(_G, (copy(_G)))
    end)

    it("keeps line numbers and names for tracebacks", function()
      local function fails() error("from here") end
      local ok, err = pcall(copy(fails))
      assert.is_false(ok)
      assert.matches("thread_codec_spec%.lua:%d+: from here", err)
    end)

    it("sends library C functions by name", function()
      local fmt, ins = copy(string.format, table.insert)
      assert.equal(string.format, fmt)
      assert.equal(table.insert, ins)
      assert.equal("x=3", core._xcall(function(f) return f("x=%d", 3) end, string.format))
      local format = string.format
      assert.equal("7", core._xcall(function() return format("%d", 7) end))
    end)

    it("sends modules by name, required in the receiver", function()
      local there = core._xcall(function(l)
        return l == package.loaded.loom and type(l.sleep) == "function" and l.null ~= nil
      end, loom)
      assert.is_true(there)
      assert.equal(loom, (copy(loom)))
      assert.equal(string, (copy(string)))
    end)

    it("runs loom in the receiver through an upvalue", function()
      assert.equal("slept", core._xcall(function()
        loom.sleep(0.001)
        return "slept"
      end))
    end)

    it("refuses a C function no module names", function()
      local anonymous = core._xcall -- in loom.core, so it has a name
      assert.equal(anonymous, (copy(anonymous)))
      local closure = coroutine.wrap(function() end)
      local err = expect_error("argument", copy, { cb = closure })
      assert.equal("cannot copy a C closure with upvalues at args[1].cb", err.message)
      local lone = io.stdout.write -- a method, in no module table
      err = expect_error("argument", copy, 1, { lone })
      assert.equal("cannot copy a C function that no loaded module names at args[2][1]", err.message)
    end)

    it("names the upvalue that cannot cross", function()
      local conn = io.stdout
      local function handler() return conn end
      local err = expect_error("argument", copy, { users = { { cb = handler } } })
      assert.equal("cannot copy userdata at args[1].users[1].cb(upvalue conn)", err.message)
    end)
  end)

  describe("what cannot cross", function()
    it("refuses userdata, naming its path", function()
      local err = expect_error("argument", copy, 1, { conn = io.stdout })
      assert.equal("cannot copy userdata at args[2].conn", err.message)
    end)

    it("refuses threads", function()
      local err = expect_error("argument", copy, { list = { 1, 2, coroutine.create(print) } })
      assert.equal("cannot copy a thread (coroutine) at args[1].list[3]", err.message)
    end)

    it("refuses tables with a metatable", function()
      local err = expect_error("argument", copy, { obj = setmetatable({}, { __index = {} }) })
      assert.equal("cannot copy a table with a metatable at args[1].obj", err.message)
    end)

    it("refuses light userdata and a bad key, naming it as a key", function()
      local err = expect_error("argument", copy, { [io.stdout] = true })
      assert.equal("cannot copy userdata at args[1](key)", err.message)
      err = expect_error("argument", copy, { ["not an identifier"] = { io.stderr } })
      assert.equal('cannot copy userdata at args[1]["not an identifier"][1]', err.message)
    end)

    it("copies loom errors, whose metatable both states register", function()
      local e = select(2, pcall(loom.sleep, "x"))
      local c = copy(e)
      assert.equal(e.kind, c.kind)
      assert.equal(e.message, c.message)
      assert.equal(tostring(e), tostring(c))
      assert.equal(getmetatable(e), getmetatable(c))
      local twice = copy({ e, e, { e } })
      assert.equal(twice[1], twice[2])
      assert.equal(twice[1], twice[3][1])
      assert.equal(getmetatable(e), getmetatable(twice[1]))
    end)

    it("leaves the sender usable after a refused copy", function()
      expect_error("argument", copy, { big = ("x"):rep(1e6), bad = io.stdout })
      assert.same({ 1, { 2 } }, copy({ 1, { 2 } }))
    end)
  end)

  describe("errors raised in the other state", function()
    it("come back as copies of their values", function()
      local ok, err = pcall(core._xcall, function() error({ code = 7 }) end)
      assert.is_false(ok)
      assert.same({ code = 7 }, err)
      ok, err = pcall(core._xcall, function() error("plain", 0) end)
      assert.is_false(ok)
      assert.equal("plain", err)
    end)

    it("keep loom's kind", function()
      local err = expect_error("argument", core._xcall, function() return io.stdout end)
      assert.equal("cannot copy userdata at results[1]", err.message)
    end)

    it("say which C function the receiver cannot find", function()
      -- a module only the sender has
      package.loaded.codec_spec_only_here = { f = string.rep }
      finally(function() package.loaded.codec_spec_only_here = nil end)
      local raw = core._xcopy_encode_raw(package.loaded.codec_spec_only_here)
      package.loaded.codec_spec_only_here = nil
      local err = expect_error("argument", core._xcopy_decode_raw, raw)
      assert.matches("cannot find module 'codec_spec_only_here' in the receiving state", err.message)
    end)
  end)

  describe("a copier through one kept state (core._xpeer)", function()
    it("copies again and again, and survives a refused copy", function()
      local through = core._xpeer()
      for i = 1, 3 do
        local t = { i = i, sub = { "x" } }
        t.sub.up = t
        local c = through(t)
        assert.equal(i, c.i)
        assert.equal(c, c.sub.up)
      end
      local err = expect_error("argument", through, { io.stdout })
      assert.equal("cannot copy userdata at args[1][1]", err.message)
      assert.same({ 1, 2 }, through({ 1, 2 }))
    end)
  end)

  describe("malformed buffers", function()
    it("are protocol errors at every truncation, never a crash", function()
      local function f(x) return x + 1 end
      local shared = { "s" }
      local raw = core._xcopy_encode_raw(1, 2.5, "str", ("long"):rep(100), { shared, shared, k = true },
        f, string.format, loom, loom.null, (1 << 40))
      assert.equal(10, select("#", core._xcopy_decode_raw(raw)))
      for i = 0, #raw - 1 do
        local err = expect_error("protocol", core._xcopy_decode_raw, raw:sub(1, i))
        assert.matches("malformed value buffer", err.message)
      end
      -- The last 4 bytes are the trailer (the count of channels referred
      -- to, none here): a byte before it is one too many.
      local err = expect_error("protocol", core._xcopy_decode_raw, raw:sub(1, -5) .. "x" .. raw:sub(-4))
      assert.matches("bytes after the last value", err.message)
      expect_error("protocol", core._xcopy_decode_raw, raw .. "x")
    end)

    it("are protocol errors when garbled", function()
      local raw = core._xcopy_encode_raw({ a = { 1, 2 } }, "x")
      for i = 1, #raw do
        for _, b in ipairs({ 0, 0x7f, 0x80, 0xff }) do
          local bad = raw:sub(1, i - 1) .. string.char(b) .. raw:sub(i + 1)
          local ok, err = pcall(core._xcopy_decode_raw, bad)
          if not ok then
            assert.equal("table", type(err))
            assert.is_truthy(err.kind == "protocol" or err.kind == "argument")
          end
        end
      end
      expect_error("protocol", core._xcopy_decode_raw, "\1\0\0\0\99")
      expect_error("protocol", core._xcopy_decode_raw, "\255\255\255\255")
      -- a back reference to nothing, a huge table header
      expect_error("protocol", core._xcopy_decode_raw, "\1\0\0\0\11\0\0\0\0")
      expect_error("protocol", core._xcopy_decode_raw, "\1\0\0\0\9\255\255\255\127\0\0\0\0")
    end)
  end)

  describe("garbage collection", function()
    it("survives a collector that runs at every allocation", function()
      collectgarbage("incremental", 0, 1000, 0)
      finally(function()
        collectgarbage("generational")
        collectgarbage()
      end)
      local shared = { "shared" }
      local t = {}
      for i = 1, 2000 do
        t[i] = { id = i, name = "item" .. i, tags = { "a", shared }, f = function() return i end }
      end
      t.self = t
      local c = copy(t)
      collectgarbage()
      for i = 1, 2000, 97 do
        assert.equal("item" .. i, c[i].name)
        assert.equal(i, c[i].f())
        assert.equal(c[1].tags[2], c[i].tags[2])
      end
      assert.equal(c, c.self)
    end)

    it("frees what a refused copy allocated", function()
      local before
      for round = 1, 3 do
        for _ = 1, 20 do
          pcall(copy, { ("x"):rep(1e5), io.stdout })
        end
        collectgarbage()
        collectgarbage()
        local now = collectgarbage("count")
        if round == 2 then before = now end
        if round == 3 then assert.is_true(now < before + 64, "grew from " .. before .. " to " .. now) end
      end
    end)

    it("leaves the collector running after a large decode fails", function()
      local big = {}
      for i = 1, 20000 do big[i] = { i, "x" .. i } end
      local raw = core._xcopy_encode_raw(big)
      assert.is_true(#raw > 65536)
      assert.is_true(collectgarbage("isrunning"))
      expect_error("protocol", core._xcopy_decode_raw, raw:sub(1, -2))
      assert.is_true(collectgarbage("isrunning"))
      package.loaded.codec_spec_gone = {}
      raw = core._xcopy_encode_raw(big, package.loaded.codec_spec_gone)
      package.loaded.codec_spec_gone = nil
      expect_error("argument", core._xcopy_decode_raw, raw)
      assert.is_true(collectgarbage("isrunning"))
      assert.equal(20000, #core._xcopy_decode_raw(core._xcopy_encode_raw(big)))
      assert.is_true(collectgarbage("isrunning"))
    end)

    it("collects garbage in the receiver while the copies are alive", function()
      local there = core._xcall(function(t)
        do
          local junk = {}
          for i = 1, 10000 do junk[i] = { i } end
          assert(#junk == 10000)
        end
        collectgarbage()
        collectgarbage()
        return t[1].x, #t
      end, { { x = "kept" }, 2, 3 })
      assert.equal("kept", there)
    end)
  end)
end)
