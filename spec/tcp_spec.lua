-- loom.tcp and loom.unix: connecting (every address, each attempt bounded),
-- listening (a task per connection, failures reported, a close with a
-- deadline). Loopback only, ports the kernel picks, bounded counts and
-- waits.
local loom = require "loom"
local core = require "loom.core"
local support = dofile("spec/support/io.lua")
local within, expect_error, listener, eventually = support.within, support.expect_error, support.listener,
  support.eventually

local function echo(stream)
  for line in stream:lines() do stream:write(line, "\n") end
end

describe("loom.tcp", function()
  describe("connect", function()
    it("raises kind connection, code ECONNREFUSED, for a port nobody listens on", function()
      within(10, function()
        local l, port = listener()
        l:close()
        local err = expect_error("connection", loom.tcp.connect, "127.0.0.1", port)
        assert.equal("ECONNREFUSED", err.code)
        assert.truthy(err.message:find(tostring(port), 1, true))
      end)
    end)

    it("tries every address: ::1 refused, then 127.0.0.1 listening", function()
      within(10, function()
        local srv = loom.tcp.listen("127.0.0.1", 0, echo)
        -- A name with both addresses where the machine has one ("localhost"
        -- in /etc/hosts), else the same two as a list of hosts.
        local both = loom.dns.resolve("localhost")
        local target = #both > 1 and "localhost" or { "::1", "127.0.0.1" }
        local c = loom.tcp.connect(target, srv.port)
        assert.equal("127.0.0.1", c:peername().address)
        c:write("hi\n")
        assert.equal("hi", c:read("l"))
        c:close()
        srv:close()
      end)
    end)

    it("gives each address connect_timeout, then tries the next", function()
      within(20, function()
        -- 127.0.0.1:port never answers: a listener that accepts nobody,
        -- its backlog full, drops the handshake. 127.0.0.2 is loopback too.
        local srv = loom.tcp.listen("127.0.0.2", 0, echo)
        local silent = core._listen("tcp", "127.0.0.1", srv.port, 1)
        local held = {}
        local function fills()
          local ok, s = pcall(loom.tcp.connect, "127.0.0.1", srv.port, { connect_timeout = 0.2 })
          if ok then held[#held + 1] = s end
          return not ok
        end
        local full = false
        for _ = 1, 8 do
          if fills() then full = true; break end
        end
        assert.is_true(full, "the backlog never filled")
        local t0 = loom.now()
        local err = expect_error("timeout", loom.tcp.connect, "127.0.0.1", srv.port, { connect_timeout = 0.2 })
        assert.equal("ETIMEDOUT", err.code)
        assert.is_true(loom.now() - t0 >= 0.15)
        local c = loom.tcp.connect({ "127.0.0.1", "127.0.0.2" }, srv.port, { connect_timeout = 0.2 })
        assert.equal("127.0.0.2", c:peername().address)
        c:close()
        for _, s in ipairs(held) do s:close() end
        silent:close()
        srv:close()
      end)
    end)

    it("stops a connect at its timeout, and under loom.timeout", function()
      within(20, function()
        local l, port = listener(1)
        local held = {}
        for _ = 1, 8 do
          local ok, s = pcall(loom.tcp.connect, "127.0.0.1", port, { connect_timeout = 0.2 })
          if not ok then break end
          held[#held + 1] = s
        end
        expect_error("timeout", loom.tcp.connect, "127.0.0.1", port, { timeout = 0.1 })
        expect_error("timeout", loom.timeout, 0.1, loom.tcp.connect, "127.0.0.1", port)
        for _, s in ipairs(held) do s:close() end
        l:close()
      end)
    end)

    it("raises kind dns for a name that does not resolve", function()
      within(10, function()
        local err = expect_error("dns", loom.tcp.connect, "no-such-host.invalid", 80)
        assert.truthy(err.code:match("^EAI_"))
      end)
    end)

    it("checks its arguments", function()
      expect_error("argument", loom.tcp.connect, 1, 80)
      expect_error("argument", loom.tcp.connect, "127.0.0.1", 0)
      expect_error("argument", loom.tcp.connect, "127.0.0.1", 80, 5)
      expect_error("argument", loom.tcp.listen, "127.0.0.1", 0, "not a function")
      expect_error("argument", loom.tcp.connect, "127.0.0.1", 80, { tls = "yes" })
    end)
  end)

  describe("listen", function()
    it("serves each connection in a task of its own, on the port the kernel picked", function()
      within(20, function()
        local srv = loom.tcp.listen("127.0.0.1", 0, echo, { backlog = 64, nodelay = true, keepalive = 30 })
        assert.is_true(srv.port > 0)
        assert.equal("127.0.0.1", srv.address)
        assert.equal(srv.port, srv:sockname().port)
        local replies = loom.map({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20 }, function(i)
          local c <close> = loom.tcp.connect("127.0.0.1", srv.port)
          c:write("client ", i, "\n")
          return c:read("l")
        end)
        for i = 1, 20 do assert.equal("client " .. i, replies[i]) end
        srv:close()
      end)
    end)

    it("raises kind io, code EADDRINUSE, for a port taken", function()
      within(10, function()
        local srv = loom.tcp.listen("127.0.0.1", 0, echo)
        local err = expect_error("io", loom.tcp.listen, "127.0.0.1", srv.port, echo)
        assert.equal("EADDRINUSE", err.code)
        srv:close()
      end)
    end)

    it("listens on a name (its first address)", function()
      within(10, function()
        local srv = loom.tcp.listen("localhost", 0, echo)
        local c = loom.tcp.connect("localhost", srv.port)
        c:write("named\n")
        assert.equal("named", c:read("l"))
        c:close()
        srv:close()
      end)
    end)

    it("hands a failing handler's error to on_error and goes on serving", function()
      within(10, function()
        local errors = {}
        local srv = loom.tcp.listen("127.0.0.1", 0, function(stream)
          local line = stream:read("l")
          if line == "fail" then error({ why = "asked to" }) end
          stream:write("ok\n")
        end, { on_error = function(err, traceback)
          errors[#errors + 1] = err
          assert.equal("string", type(traceback))
        end })
        local c1 = loom.tcp.connect("127.0.0.1", srv.port)
        c1:write("fail\n")
        assert.is_nil(c1:read("l", { timeout = 5 })) -- its stream was closed
        c1:close()
        local c2 = loom.tcp.connect("127.0.0.1", srv.port)
        c2:write("fine\n")
        assert.equal("ok", c2:read("l"))
        c2:close()
        assert.equal(1, #errors)
        assert.equal("asked to", errors[1].why)
        srv:close()
      end)
    end)

    it("reports a failing handler as loom reports a failed task, without on_error", function()
      local reported = {}
      loom.on_error(function(err) reported[#reported + 1] = err end)
      finally(function() loom.on_error(nil) end)
      within(10, function()
        local srv = loom.tcp.listen("127.0.0.1", 0, function(stream)
          if stream:read("l") == "fail" then error("handler broke", 0) end
          stream:write("ok\n")
        end)
        local c1 = loom.tcp.connect("127.0.0.1", srv.port)
        c1:write("fail\n")
        assert.is_nil(c1:read("l", { timeout = 5 }))
        c1:close()
        local c2 = loom.tcp.connect("127.0.0.1", srv.port)
        c2:write("again\n")
        assert.equal("ok", c2:read("l"))
        c2:close()
        srv:close()
      end)
      collectgarbage(); collectgarbage()
      assert.same({ "handler broke" }, reported)
    end)

    it("closes: stops accepting and waits for the handlers running", function()
      within(10, function()
        local finished = false
        local srv = loom.tcp.listen("127.0.0.1", 0, function(stream)
          stream:read("l")
          loom.sleep(0.1)
          finished = true
        end)
        local c = loom.tcp.connect("127.0.0.1", srv.port)
        c:write("go\n")
        assert.is_true(eventually(5, function() return srv:connections() == 1 end))
        srv:close(5)
        assert.is_true(finished)
        assert.equal(0, srv:connections())
        expect_error("connection", loom.tcp.connect, "127.0.0.1", srv.port)
        c:close()
      end)
    end)

    it("closes from one of its own handlers: waits for the others, not for itself", function()
      within(10, function()
        local others_done, closed = 0, loom.event()
        local srv
        srv = loom.tcp.listen("127.0.0.1", 0, function(stream)
          if stream:read("l") == "shutdown" then
            srv:close() -- no deadline: it must not wait for this handler
            stream:write("closed\n")
            closed:set()
          else
            loom.sleep(0.1)
            others_done = others_done + 1
          end
        end)
        local busy = loom.tcp.connect("127.0.0.1", srv.port)
        busy:write("work\n")
        assert.is_true(eventually(5, function() return srv:connections() == 1 end))
        local admin = loom.tcp.connect("127.0.0.1", srv.port)
        admin:write("shutdown\n")
        assert.equal("closed", admin:read("l", { timeout = 5 }))
        closed:wait(5)
        assert.equal(1, others_done) -- the close waited for the busy handler
        expect_error("connection", loom.tcp.connect, "127.0.0.1", srv.port)
        busy:close(); admin:close()
      end)
    end)

    it("cancels the handlers still running at the close's deadline", function()
      within(10, function()
        local cancelled = 0
        local srv = loom.tcp.listen("127.0.0.1", 0, function(stream)
          local ok, err = pcall(loom.sleep, 60)
          if not ok and loom.is_error(err, "cancelled") then cancelled = cancelled + 1 end
          assert(stream)
          error(err, 0)
        end)
        local clients = {}
        for i = 1, 3 do clients[i] = loom.tcp.connect("127.0.0.1", srv.port) end
        assert.is_true(eventually(5, function() return srv:connections() == 3 end))
        local t0 = loom.now()
        srv:close(0.2)
        local took = loom.now() - t0
        assert.is_true(took >= 0.15 and took < 5, "took " .. took)
        assert.equal(3, cancelled)
        for _, c in ipairs(clients) do
          assert.equal("", c:read("a", { timeout = 5 })) -- closed by the server
          c:close()
        end
      end)
    end)
  end)
end)

describe("loom.unix", function()
  local path
  before_each(function() path = os.tmpname(); os.remove(path) end)
  after_each(function() os.remove(path) end)

  it("connects and listens on a path, and removes its file on close", function()
    within(10, function()
      local srv = loom.unix.listen(path, echo)
      assert.equal(path, srv.path)
      local c = loom.unix.connect(path)
      c:write("over a unix socket\n")
      assert.equal("over a unix socket", c:read("l"))
      assert.equal("unix", c:peername().family)
      assert.equal(path, c:peername().path)
      c:close()
      srv:close()
      assert.is_nil(io.open(path))
    end)
  end)

  it("raises kind io, code EADDRINUSE, for a path taken", function()
    within(10, function()
      local srv = loom.unix.listen(path, echo)
      local err = expect_error("io", loom.unix.listen, path, echo)
      assert.equal("EADDRINUSE", err.code)
      srv:close()
    end)
  end)

  it("raises kind io, code ENOENT, for a path nobody listens on", function()
    within(10, function()
      local err = expect_error("io", loom.unix.connect, path)
      assert.equal("ENOENT", err.code)
    end)
  end)
end)
