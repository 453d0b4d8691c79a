-- Streams, TCP, Unix domain sockets, TLS and DNS as a hostile user drives
-- them: arguments of every wrong type, NUL bytes and overlong paths, calls
-- that race a second task, peers that trickle, reset or never answer,
-- closes and cancels at awkward moments. Each test proves a promise of
-- docs/REFERENCE.md. Loopback only; every wait is bounded (each body runs
-- under loom.timeout, every read that may wait has a timeout of its own).
local loom = require "loom"
local support = dofile("spec/support/io.lua")
local within, expect_error, pair, listener = support.within, support.expect_error, support.pair, support.listener

local function tmpdir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. dir))
  return dir
end

-- client, server: the two ends of a Unix domain socket, whose kernel
-- buffers are small enough that a writer waits on each read of its peer.
local function unix_pair(dir)
  local ends = loom.channel(1)
  local srv = loom.unix.listen(dir .. "/pair", function(s)
    ends:send(s)
    loom.sleep(60) -- the handler's end lives as long as the test needs it
  end)
  local c = loom.unix.connect(dir .. "/pair")
  local s = ends:recv()
  return c, s, srv
end

-- A task reading n bytes at a time, pausing between reads, until EOF.
local function slow_reader(s, n, pause)
  return loom.spawn(function()
    local got = 0
    while true do
      local d = s:read(n, { timeout = 10 })
      if not d then return got end
      got = got + #d
      loom.sleep(pause)
    end
  end)
end

local fd_count = support.fd_count

local function exists(path)
  return os.execute("test -e '" .. path .. "' -o -S '" .. path .. "'") == true
end

describe("a hostile user of loom's I/O", function()
  describe("options", function()
    it("checks connect's options before connecting, naming loom.tcp.connect", function()
      within(10, function()
        local l, port = listener()
        for _, opts in ipairs({
          { timeout = "soon" }, { timeout = -1 }, { timeout = 0 / 0 },
          { connect_timeout = "x" }, { handshake_timeout = -2 },
          { read_timeout = "x" }, { write_timeout = 0 / 0 },
          { high_water = 0 }, { high_water = "big" }, { high_water = 1.5 },
          { keepalive = "yes" }, { keepalive = -1 }, { keepalive = math.huge },
          { nodelay = "no" },
        }) do
          local err = expect_error("argument", loom.tcp.connect, "127.0.0.1", port, opts)
          assert.truthy(err.message:find("loom.tcp.connect", 1, true), err.message)
        end
        -- Nothing reached the listener: no connection was made and dropped.
        local ok, err = pcall(loom.timeout, 0.05, l.accept, l)
        assert.is_false(ok)
        assert.equal("timeout", err.kind)
        l:close()
      end)
    end)

    it("checks listen's options as loom errors naming the option", function()
      within(10, function()
        local h = function() end
        for _, opts in ipairs({ { backlog = "x" }, { backlog = 1.5 }, { backlog = -1 }, { high_water = 0 } }) do
          local err = expect_error("argument", loom.tcp.listen, "127.0.0.1", 0, h, opts)
          assert.truthy(err.message:find("loom.tcp.listen", 1, true), err.message)
        end
        local dir = tmpdir()
        local err = expect_error("argument", loom.unix.listen, dir .. "/s", h, { backlog = "x" })
        assert.truthy(err.message:find("loom.unix.listen", 1, true), err.message)
        assert.is_false(exists(dir .. "/s"))
        os.execute("rm -rf " .. dir)
      end)
    end)

    it("checks resolve's timeout as an argument of loom.dns.resolve", function()
      within(10, function()
        local err = expect_error("argument", loom.dns.resolve, "localhost", { timeout = "x" })
        assert.truthy(err.message:find("loom.dns.resolve", 1, true), err.message)
      end)
    end)

    it("checks setoption's name as a loom error", function()
      within(10, function()
        local c, s = pair()
        expect_error("argument", c.setoption, c)
        expect_error("argument", c.setoption, c, {})
        expect_error("argument", c.setoption, c, "keepalive", "yes")
        expect_error("argument", c.setoption, c, "keepalive", math.huge)
        expect_error("argument", c.setoption, c, "nodelay", "no")
        c:close(); s:close()
      end)
    end)
  end)

  describe("hosts", function()
    it("are checked by loom.tcp.connect and loom.tcp.listen, in their own names", function()
      within(10, function()
        local many = {}
        for i = 1, 17 do many[i] = "127.0.0.1" end
        local err = expect_error("argument", loom.tcp.connect, many, 1)
        assert.truthy(err.message:find("loom.tcp.connect", 1, true), err.message)
        err = expect_error("argument", loom.tcp.connect, { "127.0.0.1", nil, "127.0.0.1" }, 1)
        assert.truthy(err.message:find("loom.tcp.connect", 1, true), err.message)
        err = expect_error("argument", loom.tcp.listen, "999.1.1.1", 0, function() end)
        assert.truthy(err.message:find("loom.tcp.listen", 1, true), err.message)
        expect_error("argument", loom.tcp.listen, "", 0, function() end)
      end)
    end)
  end)

  describe("names that cannot be host names", function()
    it("fail as dns, in messages of a bounded length, and pass to the next host", function()
      within(20, function()
        local long_label = ("a"):rep(300) -- one label over 63 bytes: no name
        local huge = ("a"):rep(100000)
        for _, name in ipairs({ long_label, huge }) do
          local err = expect_error("dns", loom.dns.resolve, name, { timeout = 5 })
          assert.equal("EAI_NONAME", err.code)
          assert.truthy(#err.message < 200, #err.message)
          err = expect_error("dns", loom.tcp.connect, name, 1, { timeout = 5 })
          assert.truthy(#err.message < 200, #err.message)
        end
        local srv = loom.tcp.listen("127.0.0.1", 0, function(s) s:write("hi\n") end)
        local s = loom.tcp.connect({ long_label, "127.0.0.1" }, srv.port, { timeout = 5 })
        assert.equal("hi", s:read("l", { timeout = 5 }))
        s:close()
        srv:close(5)
      end)
    end)
  end)

  describe("names with NUL bytes", function()
    it("are refused, never cut short at the NUL", function()
      within(10, function()
        local dir = tmpdir()
        local path = dir .. "/sock"
        local srv = loom.unix.listen(path, function(s) s:write("hi\n") end)
        expect_error("argument", loom.unix.connect, path .. "\0junk")
        expect_error("argument", loom.unix.listen, dir .. "/other\0junk", function() end)
        assert.is_false(exists(dir .. "/other"))
        expect_error("argument", loom.tcp.connect, "127.0.0.1\0evil.example", srv.port or 1)
        expect_error("argument", loom.tcp.listen, "127.0.0.1\0x", 0, function() end)
        expect_error("argument", loom.dns.resolve, "localhost\0evil.example")
        expect_error("argument", loom.tcp.connect, "localhost", 1, { tls = { servername = "localhost\0evil" } })
        srv:close()
        os.execute("rm -rf " .. dir)
      end)
    end)
  end)

  describe("unix domain sockets", function()
    it("refuse a path too long for a socket address instead of cutting it short", function()
      within(10, function()
        local dir = tmpdir()
        local long = dir .. "/" .. ("a"):rep(150)
        local err = expect_error("io", loom.unix.listen, long, function() end)
        assert.equal("ENAMETOOLONG", err.code)
        -- No socket file left under the cut name.
        local h = io.popen("ls -A " .. dir)
        local listing = h:read("a")
        h:close()
        assert.equal("", listing)
        err = expect_error("io", loom.unix.connect, long)
        assert.equal("ENAMETOOLONG", err.code)
        os.execute("rm -rf " .. dir)
      end)
    end)
  end)

  describe("byte counts", function()
    it("take a float with an integer's value, as Lua's io does, and refuse others", function()
      within(10, function()
        local c, s = pair()
        c:write("hello world")
        assert.equal("hell", s:read(2.0 ^ 2, { timeout = 5 }))
        expect_error("argument", s.read, s, 1.5)
        expect_error("argument", s.read, s, -1)
        c:close()
        s:close()
      end)
    end)
  end)

  describe("lines", function()
    it("refuses more formats than it can keep, as io.lines does", function()
      within(10, function()
        local c, s = pair()
        local fmts = {}
        for i = 1, 300 do fmts[i] = "l" end
        expect_error("argument", c.lines, c, table.unpack(fmts))
        c:close(); s:close()
      end)
    end)
  end)

  describe("a second reader or writer", function()
    it("refused, leaves the first reader's timeout as it was", function()
      within(10, function()
        local c, s = pair()
        local reader = loom.spawn(function() return c:read("l", { timeout = 5 }) end)
        loom.sleep(0.02)
        expect_error("usage", c.read, c, "l", { timeout = 0 })
        -- Half a line wakes the reader, which must go on waiting.
        s:write("hal")
        loom.sleep(0.05)
        s:write("f\n")
        assert.equal("half", reader:join())
        c:close(); s:close()
      end)
    end)

    it("refused, leaves the first writer's timeout as it was", function()
      within(30, function()
        local dir = tmpdir()
        local c, s, srv = unix_pair(dir)
        c:sethighwater(1024)
        local body = ("w"):rep(2 * 1024 * 1024)
        local writer = loom.spawn(function() return c:write(body, { timeout = 20 }) end)
        loom.sleep(0.02)
        expect_error("usage", c.write, c, "x", { timeout = 0 })
        expect_error("usage", c.shutdown, c, { timeout = 0 })
        local reader = slow_reader(s, 65536, 0.001)
        assert.equal(c, writer:join())
        c:close()
        assert.equal(#body, reader:join())
        srv:close(0)
        os.execute("rm -rf " .. dir)
      end)
    end)
  end)

  describe("a per-call timeout", function()
    it("bounds a read from a peer that trickles a byte at a time", function()
      within(20, function()
        local c, s = pair()
        local trickle = loom.spawn(function()
          for _ = 1, 40 do
            s:write("x")
            loom.sleep(0.05)
          end
          s:write("\n")
        end)
        local err = expect_error("timeout", c.read, c, "l", { timeout = 0.3 })
        assert.truthy(err.message:find("read", 1, true))
        trickle:join()
        -- Nothing was lost: the whole line is there for the next read.
        assert.equal(("x"):rep(40), c:read("l", { timeout = 5 }))
        c:close(); s:close()
      end)
    end)

    it("bounds a write to a peer that reads slowly", function()
      within(30, function()
        local dir = tmpdir()
        local c, s, srv = unix_pair(dir)
        c:sethighwater(4096)
        -- 16 KiB each 10 ms: 8 MiB take seconds, each wait far less than 0.5 s.
        local reader = slow_reader(s, 16384, 0.01)
        expect_error("timeout", c.write, c, ("s"):rep(8 * 1024 * 1024), { timeout = 0.5 })
        c:close({ timeout = 0 })
        assert.is_true(reader:join() < 8 * 1024 * 1024)
        srv:close(0)
        os.execute("rm -rf " .. dir)
      end)
    end)
  end)

  describe("connect's timeout", function()
    it("bounds the whole call, the TLS handshake included", function()
      within(20, function()
        local l, port = listener() -- takes the connection, never answers the hello
        local t = loom.spawn(function()
          return pcall(loom.tcp.connect, "127.0.0.1", port, { tls = { verify = false }, timeout = 0.3 })
        end)
        local joined, ok, err = pcall(loom.timeout, 5, t.join, t) -- the handshake's own bound is 10 s
        assert.is_true(joined, "connect outlived its timeout")
        assert.is_false(ok)
        assert.equal("timeout", err.kind)
        assert.equal("ETIMEDOUT", err.code)
        l:close()
      end)
    end)

    it("of 0 raises as every connect timeout does, with code ETIMEDOUT", function()
      within(10, function()
        local l, port = listener()
        local err = expect_error("timeout", loom.tcp.connect, "127.0.0.1", port, { timeout = 0 })
        assert.equal("ETIMEDOUT", err.code)
        l:close()
      end)
    end)
  end)

  describe("streams dropped mid-wait", function()
    it("are collected with a write, a read and a handshake pending, and hold no descriptor", function()
      within(30, function()
        -- Earlier tests' leftovers go to the collector before the count.
        collectgarbage()
        collectgarbage()
        loom.sleep(0.05)
        local before = fd_count()
        local l, port = listener()
        local tasks = {
          loom.spawn(function()
            local c = loom.tcp.connect("127.0.0.1", port, { high_water = 1024 })
            c:write(("x"):rep(8 * 1024 * 1024)) -- more than the kernel takes
          end),
          loom.spawn(function()
            local c = loom.tcp.connect("127.0.0.1", port)
            c:read("l")
          end),
          loom.spawn(function()
            loom.tcp.connect("127.0.0.1", port, { tls = { verify = false } })
          end),
        }
        local accepted = {}
        for i = 1, #tasks do accepted[i] = l:accept() end
        loom.sleep(0.1)
        for _, t in ipairs(tasks) do
          t:cancel()
          expect_error("cancelled", t.join, t)
        end
        tasks = nil -- luacheck: ignore 311 (dropped for the collector)
        collectgarbage()
        collectgarbage()
        -- Each peer sees its connection end (EOF, or a reset for the one
        -- whose bytes were dropped unsent).
        for _, s in ipairs(accepted) do
          local ok, err = pcall(s.read, s, "a", { timeout = 10 })
          assert(ok or err.kind == "connection", tostring(err))
          s:close()
        end
        l:close()
        -- None left behind (fewer is fine: what earlier tests left may
        -- close meanwhile).
        assert.is_true(support.eventually(5, function() return fd_count() <= before end),
          ("%d descriptors before, %d after"):format(before, fd_count()))
      end)
    end)
  end)

  describe("srv:close", function()
    it("refuses a NaN deadline before closing anything", function()
      within(10, function()
        local srv = loom.tcp.listen("127.0.0.1", 0, function(s) s:write(s:read("l", { timeout = 5 }), "\n") end)
        expect_error("argument", srv.close, srv, 0 / 0)
        expect_error("argument", srv.close, srv, "1")
        -- Still serving.
        local c = loom.tcp.connect("127.0.0.1", srv.port)
        c:write("ping\n")
        assert.equal("ping", c:read("l", { timeout = 5 }))
        c:close()
        srv:close()
      end)
    end)
  end)
end)
