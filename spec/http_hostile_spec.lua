-- loom.http as a hostile user and hostile servers drive it: options of
-- every wrong type, NUL bytes, streamed bodies read in ways the buffer does
-- not fit, two readers at once, closes and cancels mid-transfer, and
-- servers (small loom.tcp ones in this file, loopback only) that lie,
-- stop mid-headers, trickle, flood or never answer. Every body runs under
-- loom.timeout (support.within); every request that may wait has a bound.
local loom = require "loom"
local support = dofile("spec/support/io.lua")
local within, expect_error, eventually = support.within, support.expect_error, support.eventually

local fd_count = support.fd_count

-- A server on 127.0.0.1 that reads each request's head and hands the
-- connection to respond(stream, request_line, headers); returns it and its
-- base URL. A handler's failure (a client gone) is expected here.
local function server(respond)
  local served = { count = 0, done = 0 }
  local srv = loom.tcp.listen("127.0.0.1", 0, function(s)
    served.count = served.count + 1
    local line = s:read("l", { timeout = 10 })
    local headers = {}
    while true do
      local h = s:read("l", { timeout = 10 })
      if h == nil or h == "" or h == "\r" then break end
      headers[#headers + 1] = h:gsub("\r$", "")
      if #headers > 200 then break end
    end
    local ok, err = pcall(respond, s, line, headers)
    served.done = served.done + 1
    if not ok then error(err, 0) end
  end, { on_error = function() end })
  return srv, ("http://127.0.0.1:%d"):format(srv.port), served
end

-- A 200 with a body of `size` bytes (`fill` repeated), sent at once.
local function body_of(size, fill)
  return function(s)
    local body = (fill or "0123456789abcdef"):rep(size // #(fill or "0123456789abcdef") + 1):sub(1, size)
    s:write("HTTP/1.1 200 OK\r\nContent-Length: ", #body, "\r\n\r\n", body)
  end
end

local function stats_settle()
  collectgarbage()
  collectgarbage()
  return loom.http.stats()
end

describe("a hostile user of loom.http", function()
  describe("options", function()
    it("refuses a timeout that is not a real positive number, naming it", function()
      within(20, function()
        local srv, url = server(body_of(10))
        for _, o in ipairs({
          { timeout = 0 / 0 }, { timeout = -math.huge },
          { connect_timeout = 0 / 0 }, { connect_timeout = -0.0 },
          { timeout = "5" }, { connect_timeout = {} },
        }) do
          local k = next(o)
          local err = expect_error("argument", loom.http.get, url .. "/", o)
          assert.truthy(err.message:find("'" .. k .. "'", 1, true), err.message)
        end
        -- One too long to count in curl's milliseconds is no bound at all.
        for _, o in ipairs({ { timeout = 1e300 }, { connect_timeout = math.huge }, { timeout = 2 ^ 62 } }) do
          assert.equal("0123456789", loom.http.get(url .. "/", o).body)
        end
        srv:close()
      end)
    end)

    it("refuses a NUL byte in the URL, a header, the method or cafile instead of cutting at it", function()
      within(20, function()
        local seen = {}
        local srv, url = server(function(s, line, headers)
          seen[#seen + 1] = line .. " | " .. table.concat(headers, " | ")
          body_of(2)(s)
        end)
        local cases = {
          { "url", function() return loom.http.get(url .. "/ok\0/../evil") end },
          { "headers", function() return loom.http.get(url .. "/", { headers = { ["X-A"] = "v\0evil" } }) end },
          { "headers", function() return loom.http.get(url .. "/", { headers = { ["X-A\0b"] = "v" } }) end },
          { "headers", function() return loom.http.get(url .. "/", { headers = { ["X-A"] = { "ok", "v\0w" } } }) end },
          { "method", function() return loom.http.request { url = url .. "/", method = "GET\0X" } end },
          { "cafile", function() return loom.http.get(url .. "/", { cafile = "/etc/ssl/cert.pem\0x" }) end },
        }
        for _, case in ipairs(cases) do
          local err = expect_error("argument", case[2])
          assert.truthy(err.message:find("'" .. case[1] .. "'", 1, true), err.message)
        end
        assert.same({}, seen)
        srv:close()
      end)
    end)

    it("refuses a header name that is not a token", function()
      within(20, function()
        local srv, url = server(body_of(2))
        for _, name in ipairs({ "X Y", "X\tY", "(x)", "x@y", "é" }) do
          local err = expect_error("argument", loom.http.get, url .. "/", { headers = { [name] = "1" } })
          assert.truthy(err.message:find("'headers' to 'loom.http.get'", 1, true), err.message)
        end
        srv:close()
      end)
    end)

    it("refuses a body that cannot be read, as an argument", function()
      within(20, function()
        local srv, url = server(body_of(2))
        for _, body in ipairs({ 42, true, coroutine.create(print), debug.upvalueid(fd_count, 1) }) do
          local err = expect_error("argument", loom.http.post, url .. "/", body)
          assert.truthy(err.message:find("'body' to 'loom.http.post'", 1, true), err.message)
        end
        srv:close()
      end)
    end)

    it("passes the error a body function raises through unchanged, and frees the transfer", function()
      within(20, function()
        local srv, url = server(function(s) s:read("a", { timeout = 10 }) end)
        local mine = { "mine" }
        local i = 0
        local ok, err = pcall(loom.http.post, url .. "/", function()
          i = i + 1
          if i == 3 then error(mine) end
          return "chunk"
        end)
        assert.is_false(ok)
        assert.equal(mine, err)
        local s = stats_settle()
        assert.equal(0, s.easy_live)
        srv:close()
      end)
    end)
  end)

  describe("a request body that only gives empty chunks", function()
    it("lets the loop run and is ended by the timeout around it", function()
      within(20, function()
        -- The 100 Continue at once: curl asks for the body now, not after
        -- its one-second wait for it.
        local srv, url = server(function(s)
          s:write("HTTP/1.1 100 Continue\r\n\r\n")
          s:read("a", { timeout = 10 })
        end)
        local ticks, pulls = 0, 0
        local ticker = loom.spawn(function()
          while true do loom.sleep(0.01); ticks = ticks + 1 end
        end)
        local err = expect_error("timeout", loom.timeout, 0.3, loom.http.post, url .. "/",
          function() pulls = pulls + 1; return "" end)
        assert.truthy(err)
        assert.truthy(pulls > 1, pulls)
        -- The ticker ran meanwhile: the empty chunks did not hold the loop.
        assert.truthy(ticks > 0, ticks)
        ticker:cancel()
        srv:close()
      end)
    end)
  end)

  describe("a streamed body", function()
    it("is read whole by read('a') though it is larger than the buffer", function()
      within(30, function()
        local srv, url = server(body_of(1000000))
        local res = loom.http.get(url .. "/", { stream = true, buffer = 65536 })
        local all = res:read("a")
        assert.equal(1000000, #all)
        assert.equal(("0123456789abcdef"):rep(62500), all)
        assert.is_nil(res:read(1))
        assert.equal("", res:read("a"))
        srv:close()
      end)
    end)

    it("gives read(n) its n bytes though n is larger than the buffer", function()
      within(30, function()
        local srv, url = server(body_of(1000000))
        local res = loom.http.get(url .. "/", { stream = true, buffer = 16384 })
        local a = res:read(600000)
        assert.equal(600000, #a)
        local b = res:read(600000) -- the rest, short, at the end
        assert.equal(400000, #b)
        assert.equal(("0123456789abcdef"):rep(62500), a .. b)
        assert.is_nil(res:read(600000))
        srv:close()
      end)
    end)

    it("gives a line longer than the buffer whole", function()
      within(30, function()
        local line = ("x"):rep(300000)
        local srv, url = server(function(s)
          local body = "short\n" .. line .. "\r\n" .. line .. "\nlast"
          s:write("HTTP/1.1 200 OK\r\nContent-Length: ", #body, "\r\n\r\n", body)
        end)
        local res = loom.http.get(url .. "/", { stream = true, buffer = 4096 })
        assert.equal("short", res:read("l"))
        assert.equal(line, res:read("l"))
        assert.equal(line .. "\n", res:read("L"))
        assert.equal("last", res:read("l"))
        assert.is_nil(res:read("l"))
        srv:close()
      end)
    end)

    it("ends though a far timer is the loop's only other event", function()
      -- The body's end is seen by curl on a timer of its own, after the last
      -- resume: that must wake the reader then, not when some later timer
      -- (the loom.timeout around each read) happens to fire. nginx, in a
      -- process of its own, leaves this loop nothing else to wake it.
      local nginx = require "spec.support.http"
      within(120, function()
        for _ = 1, 3 do
          local res = loom.http.get(nginx.url() .. "/large.bin", { stream = true, buffer = 16384, timeout = 60 })
          local n = 0
          while true do
            local s = loom.timeout(10, res.read, res, 8192)
            if not s then break end
            n = n + #s
          end
          assert.equal(8 * 1024 * 1024, n)
        end
      end)
    end)

    it("gives read(0) '' while the body goes on and nil at its end, as a file does", function()
      within(20, function()
        local srv, url = server(body_of(10))
        local res = loom.http.get(url .. "/", { stream = true })
        assert.equal("", res:read(0))
        assert.equal(10, #res:read("a"))
        assert.is_nil(res:read(0))
        srv:close()
      end)
    end)

    it("refuses a second reader while one waits, and the first gets the body", function()
      within(20, function()
        local go = loom.event()
        local srv, url = server(function(s)
          s:write("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfirst")
          go:wait()
          s:write("-rest")
        end)
        local res = loom.http.get(url .. "/", { stream = true })
        assert.equal("first", res:read(5))
        local first = loom.spawn(function() return res:read("a") end)
        loom.sleep(0.05)
        local err = expect_error("usage", res.read, res, "a")
        assert.truthy(err.message:find("another task", 1, true), err.message)
        go:set()
        assert.equal("-rest", first:join())
        assert.is_nil(res:read(1))
        srv:close()
      end)
    end)

    it("closed by another task wakes its reader with kind closed", function()
      within(20, function()
        local srv, url = server(function(s)
          s:write("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
          s:read(1, { timeout = 10 }) -- until the client goes
        end)
        local res = loom.http.get(url .. "/", { stream = true })
        local reader = loom.spawn(function() return res:read("a") end)
        loom.sleep(0.05)
        res:close()
        local ok, err = pcall(reader.join, reader)
        assert.is_false(ok)
        assert.equal("closed", err.kind)
        expect_error("closed", res.read, res, 1)
        res:close()
        local s = stats_settle()
        assert.equal(0, s.transfers)
        srv:close()
      end)
    end)

    it("read under a timeout that runs out is closed, never half-done", function()
      within(20, function()
        local srv, url = server(function(s)
          s:write("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
          s:read(1, { timeout = 10 }) -- until the client goes
        end)
        local res = loom.http.get(url .. "/", { stream = true })
        local err = expect_error("timeout", loom.timeout, 0.1, res.read, res, "a")
        assert.equal("timeout", err.kind)
        -- The transfer was stopped: what was buffered is still there to
        -- read, and then the response says it was stopped.
        assert.equal("ab", res:read(2))
        expect_error("closed", res.read, res, 1)
        res:close()
        assert.equal(0, stats_settle().transfers)
        srv:close()
      end)
    end)

    it("collected mid-transfer frees its transfer and its connection", function()
      within(30, function()
        local srv, url, served = server(function(s)
          s:write("HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
          local chunk = ("z"):rep(65536)
          for _ = 1, 1600 do s:write(chunk, { timeout = 5 }) end
        end)
        stats_settle() -- earlier tests' leftovers go before the count
        loom.sleep(0.05)
        local before = fd_count()
        for _ = 1, 5 do
          local res = loom.http.get(url .. "/", { stream = true, buffer = 8192 })
          assert.equal(200, res.status)
          res = nil -- luacheck: ignore 311
          collectgarbage()
          collectgarbage()
        end
        local s = loom.http.stats()
        assert.equal(0, s.transfers)
        assert.equal(0, s.easy_live)
        assert.is_true(eventually(10, function() return served.done == 5 end), "the server saw each client go")
        -- None left behind; fewer is fine (what earlier tests left may
        -- close meanwhile, later under the sanitizers).
        local after = fd_count()
        assert.is_true(after <= before, ("%d descriptors before, %d after"):format(before, after))
        srv:close()
      end)
    end)
  end)

  describe("a hostile server", function()
    it("that closes in the middle of the headers fails the request", function()
      within(20, function()
        local srv, url = server(function(s)
          s:write("HTTP/1.1 200 OK\r\nContent-Le")
        end)
        local err = expect_error("http", loom.http.get, url .. "/")
        assert.truthy(err.code, tostring(err))
        err = expect_error("http", loom.http.get, url .. "/", { stream = true })
        assert.truthy(err.code, tostring(err))
        err = expect_error("http", loom.http.head, url .. "/")
        assert.truthy(err.code, tostring(err))
        assert.equal(0, stats_settle().transfers)
        srv:close()
      end)
    end)

    it("that floods headers, or sends one endless header, fails the request", function()
      within(30, function()
        local srv, url = server(function(s, line)
          s:write("HTTP/1.1 200 OK\r\n")
          if line:find("/many", 1, true) then
            for i = 1, 20000 do s:write("X-H", i, ": ", ("v"):rep(40), "\r\n") end
          else
            s:write("X-Long: ", ("v"):rep(300000), "\r\n")
          end
          s:write("Content-Length: 0\r\n\r\n")
        end)
        for _, path in ipairs({ "/many", "/long" }) do
          local err = expect_error("http", loom.http.get, url .. path, { timeout = 10 })
          assert.truthy(err.code, tostring(err))
        end
        srv:close()
      end)
    end)

    it("that answers nonsense fails the request with curl's code", function()
      within(20, function()
        local replies = {
          ["/garbage"] = "SSH-2.0-OpenSSH_9.2\r\n\r\n",
          ["/nocolon"] = "HTTP/1.1 200 OK\r\nnonsense\r\nContent-Length: 0\r\n\r\n",
          ["/badchunk"] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
          ["/negative"] = "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nabc",
          ["/short"] = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc",
        }
        local srv, url = server(function(s, line)
          s:write(replies[line:match("^%u+ (%S+)")])
        end)
        for path in pairs(replies) do
          local err = expect_error("http", loom.http.get, url .. path, { timeout = 10 })
          assert.truthy(err.code:find("^CURLE_"), tostring(err))
          assert.equal(url .. path, err.url)
        end
        assert.equal(0, stats_settle().transfers)
        srv:close()
      end)
    end)

    it("that never answers is bounded by timeout, and the next request works", function()
      within(20, function()
        local mute = true
        local srv, url = server(function(s)
          if mute then s:read(1, { timeout = 10 }) else body_of(2)(s) end
        end)
        local err = expect_error("timeout", loom.http.get, url .. "/", { timeout = 0.2 })
        assert.equal("CURLE_OPERATION_TIMEDOUT", err.code)
        mute = false
        assert.equal("01", loom.http.get(url .. "/", { timeout = 5 }).body)
        srv:close()
      end)
    end)

    it("that trickles a byte at a time is bounded by timeout as a whole", function()
      within(20, function()
        local srv, url = server(function(s)
          s:write("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
          for _ = 1, 1000 do
            s:write("x")
            loom.sleep(0.02)
          end
        end)
        local err = expect_error("timeout", loom.http.get, url .. "/", { timeout = 0.5 })
        assert.equal("CURLE_OPERATION_TIMEDOUT", err.code)
        srv:close()
      end)
    end)

    it("that answers before reading an upload gives its answer", function()
      within(20, function()
        local srv, url = server(function(s)
          s:write("HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig")
        end)
        local sent = 0
        local res = loom.http.post(url .. "/", function()
          sent = sent + 1
          if sent > 1000 then return nil end
          loom.sleep(0)
          return ("u"):rep(65536)
        end, { timeout = 10 })
        assert.equal(413, res.status)
        assert.equal("big", res.body)
        assert.equal(0, stats_settle().transfers)
        srv:close()
      end)
    end)
  end)

  describe("cancelled and timed-out requests", function()
    it("leave no transfer, handle or descriptor behind", function()
      within(60, function()
        local srv, url, served = server(function(s, line)
          if line:find("/head", 1, true) then s:read(1, { timeout = 10 }) return end
          s:write("HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nabc")
          s:read(1, { timeout = 10 }) -- until the client goes
        end)
        -- One request first: curl's own descriptors (its resolver's) exist
        -- from then on.
        expect_error("timeout", loom.http.get, url .. "/head", { timeout = 0.05 })
        assert.is_true(eventually(15, function() return served.done == served.count end))
        -- What earlier specs left to the collector (a stream, a pipe) goes
        -- now, with its close callbacks, not in the middle of the count.
        stats_settle()
        loom.sleep(0.05)
        local before = fd_count()
        for i = 1, 10 do
          local path = i % 2 == 0 and "/head" or "/body"
          expect_error("timeout", loom.timeout, 0.05 + i * 0.01, loom.http.get, url .. path)
          local t = loom.spawn(function()
            local res = loom.http.get(url .. path, { stream = i % 3 == 0 })
            return res.body or res:read("a")
          end)
          loom.sleep(0.02)
          t:cancel()
          local ok, err = pcall(t.join, t)
          assert.is_false(ok)
          assert.equal("cancelled", err.kind)
        end
        local s = stats_settle()
        assert.equal(0, s.transfers)
        assert.equal(0, s.easy_live)
        assert.is_true(eventually(15, function() return served.done == served.count end))
        -- None left behind; fewer is fine (curl's cache may drop an idle
        -- connection an earlier test left).
        local after = fd_count()
        assert.is_true(after <= before, ("%d descriptors before, %d after"):format(before, after))
        srv:close()
      end)
    end)
  end)
end)
