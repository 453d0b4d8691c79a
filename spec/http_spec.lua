-- loom.http against a throwaway nginx on loopback (spec/support/http.lua,
-- nginx_server.sh): bodies and headers both ways, redirects, timeouts,
-- cancels, chunked and HTTP/2 responses, TLS failures, dropped
-- connections, many requests at once and a streamed body held bounded.
local loom = require "loom"
local server = require "spec.support.http"

local URL = server.url()

local function run(f) return loom.run(f) end

local function file(name)
  local f = assert(io.open(server.dir() .. "/www/" .. name, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- The error f raises, which must be a loom error.
local function failure(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  assert.is_true(loom.is_error(err), "a loom error, got " .. tostring(err))
  return err
end

describe("loom.http requests", function()
  it("gets a static file, with its headers found in any case", function()
    run(function()
      local res = loom.http.get(URL .. "/small.txt")
      assert.equal(200, res.status)
      assert.equal("1.1", res.version)
      assert.equal("hello from nginx\n", res.body)
      assert.equal("17", res.headers["content-length"])
      assert.equal("17", res.headers["Content-Length"])
      assert.equal(URL .. "/small.txt", res.url)
    end)
  end)

  it("works outside a task too, driving the loop while it waits", function()
    local res = loom.http.get(URL .. "/small.txt")
    assert.equal("hello from nginx\n", res.body)
  end)

  it("works in worker threads, each state with a client of its own", function()
    run(function()
      local url = URL .. "/small.txt" -- an upvalue, copied to the workers
      local got = loom.thread.map({ 1, 2, 3, 4 }, function(i)
        return require("loom").http.get(url).status + i
      end, { chunk = 1 })
      assert.same({ 201, 202, 203, 204, n = 4 }, got)
    end)
  end)

  it("sends a body and headers, and keeps repeated response headers", function()
    run(function()
      local res = loom.http.post(URL .. "/echo", "a\0b", { headers = { ["X-Test"] = "yes" } })
      assert.equal(200, res.status)
      assert.equal("a\0b", res.body)
      assert.equal("POST", res.headers["x-method"])
      assert.equal("yes", res.headers["X-Test"])
      assert.equal("3", res.headers["x-length"])
      assert.equal("a=1", res.headers["set-cookie"])
      assert.same({ "a=1", "b=2" }, res:header_all("Set-Cookie"))
      assert.same({}, res:header_all("x-absent"))
      local put = loom.http.request { method = "put", url = URL .. "/echo", body = "data" }
      assert.equal("PUT", put.headers["x-method"])
      assert.equal("data", put.body)
    end)
  end)

  it("uploads a body pulled from a function or a stream", function()
    run(function()
      local parts, i = { "one ", "", "two ", "three" }, 0
      local res = loom.http.post(URL .. "/echo", function()
        i = i + 1
        loom.yield() -- a producer may wait
        return parts[i]
      end)
      assert.equal("one two three", res.body)
      local big = string.rep("0123456789", 100000)
      local at = 1
      local stream = { read = function(_, n)
        if at > #big then return nil end
        local s = big:sub(at, at + n - 1)
        at = at + n
        return s
      end }
      res = loom.http.put(URL .. "/echo", stream)
      assert.equal(tostring(#big), res.headers["x-length"])
      assert.equal(big, res.body)
    end)
  end)

  it("reuses a connection for the next request to the same server", function()
    run(function()
      local a = loom.http.get(URL .. "/echo")
      local b = loom.http.get(URL .. "/echo")
      assert.equal(a.headers["x-connection"], b.headers["x-connection"])
    end)
  end)

  it("gives a non-2xx status as a response", function()
    run(function()
      local res = loom.http.get(URL .. "/missing.txt")
      assert.equal(404, res.status)
      res = loom.http.get(URL .. "/status/503")
      assert.equal(503, res.status)
      assert.equal("status 503\n", res.body)
      assert.equal(200, loom.http.head(URL .. "/small.txt").status)
    end)
  end)
end)

describe("loom.http redirects", function()
  it("are not followed unless asked", function()
    run(function()
      local res = loom.http.get(URL .. "/redirect/2")
      assert.equal(302, res.status)
      assert.matches("/redirect/1$", res.headers.location)
    end)
  end)

  it("are followed when asked, up to the bound", function()
    run(function()
      local res = loom.http.get(URL .. "/redirect/3", { follow = true })
      assert.equal(200, res.status)
      assert.equal("arrived\n", res.body)
      assert.equal(URL .. "/redirect/0", res.url)
      assert.is_nil(res.headers.location) -- the last response's headers only
      local err = failure(loom.http.get, URL .. "/redirect/5", { follow = 2 })
      assert.equal("http", err.kind)
      assert.equal("CURLE_TOO_MANY_REDIRECTS", err.code)
    end)
  end)
end)

describe("loom.http timeouts and cancels", function()
  it("raises kind timeout when the request's own timeout runs out", function()
    run(function()
      local err = failure(loom.http.get, URL .. "/slow?s=5", { timeout = 0.2 })
      assert.equal("timeout", err.kind)
      assert.equal("CURLE_OPERATION_TIMEDOUT", err.code)
      assert.equal(0, loom.http.stats().easy_live)
    end)
  end)

  it("is stopped by loom.timeout while other tasks run, its handle freed", function()
    run(function()
      local ticks = 0
      local ticker = loom.spawn(function()
        while true do loom.sleep(0.01); ticks = ticks + 1 end
      end)
      local err = failure(loom.timeout, 0.3, loom.http.get, URL .. "/slow?s=5")
      assert.equal("timeout", err.kind)
      assert.is_true(ticks > 0, "the loop ran while the request waited")
      ticker:cancel()
      local s = loom.http.stats()
      assert.equal(0, s.easy_live)
      assert.equal(0, s.transfers)
    end)
  end)

  it("frees the handle when a task is cancelled mid-body", function()
    run(function()
      local got_first = loom.event()
      local t = loom.spawn(function()
        local res <close> = loom.http.get(URL .. "/chunked", { stream = true })
        assert.equal("chunk 1", res:read("l"))
        got_first:set()
        while res:read("l") do end
        error("the body should not have ended")
      end)
      got_first:wait()
      assert.equal(1, loom.http.stats().easy_live)
      t:cancel("enough")
      local ok, err = pcall(t.join, t)
      assert.is_false(ok)
      assert.equal("cancelled", err.kind)
      local s = loom.http.stats()
      assert.equal(0, s.easy_live)
      assert.equal(0, s.transfers)
    end)
  end)

  it("frees a streamed response's transfer when it is collected", function()
    run(function()
      local res = loom.http.get(URL .. "/large.bin", { stream = true, buffer = 65536 })
      assert.equal(200, res.status)
      assert.equal(1, loom.http.stats().transfers)
      res = nil -- luacheck: ignore 311
      collectgarbage()
      collectgarbage()
      local s = loom.http.stats()
      assert.equal(0, s.transfers)
      assert.equal(0, s.easy_live)
    end)
  end)

  it("leaves transfers pending when the state closes without leaks", function()
    -- Kept until the interpreter closes: its finalizers run then (the
    -- sanitizer stage checks that nothing leaks).
    run(function()
      debug.getregistry()["loom.spec.http.pending"] =
        loom.http.get(URL .. "/large.bin", { stream = true, buffer = 65536 })
    end)
  end)
end)

describe("loom.http responses", function()
  it("reads a chunked body whole, or line by line as it comes", function()
    run(function()
      local res = loom.http.get(URL .. "/chunked")
      assert.equal("chunked", res.headers["transfer-encoding"])
      local want = {}
      for i = 1, 10 do want[i] = "chunk " .. i end
      assert.equal(table.concat(want, "\n") .. "\n", res.body)
      local got = {}
      local streamed = loom.http.get(URL .. "/chunked", { stream = true })
      for line in streamed:lines() do got[#got + 1] = line end
      assert.same(want, got)
      assert.is_nil(streamed:read(1))
      assert.equal("", streamed:read("a"))
    end)
  end)

  it("speaks HTTP/2 over TLS by default, and h2c when asked", function()
    run(function()
      local tls = loom.http.get(server.other("https_url") .. "/small.txt",
        { cafile = server.dir() .. "/cert.pem" })
      assert.equal("2", tls.version)
      assert.equal("hello from nginx\n", tls.body)
      local h2c = loom.http.get(server.other("h2c_url") .. "/small.txt", { version = "h2c" })
      assert.equal("2", h2c.version)
      assert.equal("17", h2c.headers["Content-Length"])
      -- Again, and several at once: the connection curl 7.88 cannot reuse
      -- is not reused (core/http/xfer.c).
      local more = loom.map({ 1, 2, 3, 4, 5, 6, 7, 8 }, function()
        local res = loom.http.get(server.other("h2c_url") .. "/small.txt", { version = "h2c" })
        return res.version .. " " .. res.body
      end)
      for i = 1, 8 do assert.equal("2 hello from nginx\n", more[i]) end
      local h1 = loom.http.get(server.other("https_url") .. "/small.txt",
        { cafile = server.dir() .. "/cert.pem", version = "1.1" })
      assert.equal("1.1", h1.version)
    end)
  end)

  it("fails a server it cannot trust as kind http with curl's reason", function()
    run(function()
      local err = failure(loom.http.get, server.other("https_url") .. "/small.txt")
      assert.equal("http", err.kind)
      assert.equal("CURLE_PEER_FAILED_VERIFICATION", err.code)
      assert.matches("certificate", err.reason)
      local res = loom.http.get(server.other("https_url") .. "/small.txt", { verify = false })
      assert.equal(200, res.status)
    end)
  end)

  it("fails a connection dropped mid-body or before any response", function()
    run(function()
      local err = failure(loom.http.get, URL .. "/drop")
      assert.equal("http", err.kind)
      assert.equal("CURLE_PARTIAL_FILE", err.code)
      local res = loom.http.get(URL .. "/drop", { stream = true })
      assert.equal(200, res.status)
      err = failure(res.read, res, "a")
      assert.equal("CURLE_PARTIAL_FILE", err.code)
      err = failure(loom.http.get, URL .. "/nothing")
      assert.equal("CURLE_GOT_NOTHING", err.code)
      err = failure(loom.http.get, "http://127.0.0.1:1/")
      assert.equal("CURLE_COULDNT_CONNECT", err.code)
    end)
  end)

  it("never shows a password of the URL in an error or a response", function()
    run(function()
      local err = failure(loom.http.get, "http://someone:s3cret-pw@127.0.0.1:1/x")
      assert.equal("CURLE_COULDNT_CONNECT", err.code)
      assert.is_nil(tostring(err):find("s3cret-pw", 1, true))
      assert.equal("http://someone:***@127.0.0.1:1/x", err.url)
      local res = loom.http.get((URL:gsub("^http://", "http://someone:s3cret-pw@")) .. "/small.txt")
      assert.equal(200, res.status)
      assert.is_nil(res.url:find("s3cret-pw", 1, true))
      assert.is_nil(tostring(res):find("s3cret-pw", 1, true))
    end)
  end)

  it("runs 64 requests at once in a loom.map", function()
    run(function()
      -- Streams other cases left open, those not collected yet gone first.
      collectgarbage()
      collectgarbage()
      local before = loom.http.stats().transfers
      local most = 0
      local watcher = loom.spawn(function()
        while true do
          most = math.max(most, loom.http.stats().transfers)
          loom.yield()
        end
      end)
      local paths = {}
      for i = 1, 64 do paths[i] = i % 2 == 0 and "/small.txt" or "/lines.txt" end
      local lines = file("lines.txt")
      local bodies = loom.map(paths, function(p) return loom.http.get(URL .. p).body end)
      watcher:cancel()
      for i = 1, 64 do
        assert.equal(i % 2 == 0 and "hello from nginx\n" or lines, bodies[i])
      end
      assert.is_true(most > before + 1, "requests overlapped")
      assert.equal(before, loom.http.stats().transfers)
    end)
  end)

  it("runs 64 requests at once over shared HTTP/2 connections", function()
    run(function()
      local most = 0
      local watcher = loom.spawn(function()
        while true do
          most = math.max(most, loom.http.stats().sockets)
          loom.yield()
        end
      end)
      local items = {}
      for i = 1, 64 do items[i] = i end
      -- By name: curl keeps what it learnt of a host (the HTTP/1.1 and
      -- unverified connections of the cases above) by name and port.
      local url = server.other("https_url"):gsub("127%.0%.0%.1", "localhost") .. "/small.txt"
      local got = loom.map(items, function()
        local res = loom.http.get(url, { cafile = server.dir() .. "/cert.pem" })
        return res.version .. " " .. res.status .. " " .. res.body
      end)
      watcher:cancel()
      for i = 1, 64 do assert.equal("2 200 hello from nginx\n", got[i]) end
      assert.is_true(most < 64, "streams shared connections: " .. most .. " sockets")
    end)
  end)

  it("streams a large body with memory bounded by the buffer", function()
    run(function()
      local res = loom.http.get(URL .. "/large.bin", { stream = true, buffer = 65536 })
      local parts, most, n = {}, 0, 0
      while true do
        most = math.max(most, res:buffered())
        local s = res:read(8192)
        if not s then break end
        n = n + 1
        parts[n] = s
        if n % 16 == 0 then loom.sleep(0) end -- a reader slower than loopback
      end
      assert.is_true(most <= 65536 + 65536, "buffered at most " .. most)
      assert.equal(file("large.bin"), table.concat(parts))
    end)
  end)
end)

describe("loom.http arguments", function()
  it("names the bad argument", function()
    run(function()
      local err = failure(loom.http.request, { url = 5 })
      assert.equal("argument", err.kind)
      assert.matches("'url'", err.message)
      err = failure(loom.http.get, URL, { follow = -1 })
      assert.matches("'follow'", err.message)
      err = failure(loom.http.get, URL, { headers = { ["bad:name"] = "x" } })
      assert.matches("'headers'", err.message)
      err = failure(loom.http.post, URL, 42)
      assert.matches("'body'", err.message)
      err = failure(loom.http.get, URL, { stream = true, buffer = 0.5 })
      assert.matches("'buffer'", err.message)
      err = failure(loom.http.get, URL, { timeout = 0 })
      assert.matches("'timeout'", err.message)
      err = failure(loom.http.get, URL, { version = "9" })
      assert.matches("'version'", err.message)
      err = failure(loom.http.get, "not a url at all")
      assert.equal("http", err.kind)
      err = failure(loom.http.get, "file:///etc/hostname")
      assert.equal("CURLE_UNSUPPORTED_PROTOCOL", err.code)
    end)
  end)

  it("goes through the proxy the environment names", function()
    -- nginx answers a request for an absolute URL itself, as a proxy would
    -- forward it: a host that does not exist is reached only through it.
    local out = assert(io.popen(("env -u no_proxy -u NO_PROXY http_proxy=%s lua5.4 -e '%s' 2>&1"):format(URL, [[
      package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
      package.cpath = "]] .. (os.getenv("LOOM_BUILD_DIR") or "build") .. [[/?.so;" .. package.cpath
      local res = require("loom").http.get("http://loom-proxy-test.invalid/small.txt", {timeout = 10})
      io.write(res.status, " ", res.body)]])))
    local said = out:read("a")
    out:close()
    assert.equal("200 hello from nginx\n", said)
  end)

  it("loads no libcurl until loom.http is used", function()
    local out = assert(io.popen([[lua5.4 -e 'package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
      package.cpath = "]] .. (os.getenv("LOOM_BUILD_DIR") or "build") .. [[/?.so;" .. package.cpath
      require "loom"
      for l in io.lines("/proc/self/maps") do if l:find("libcurl") then print("loaded") os.exit(1) end end
      print("none")' 2>&1]]))
    local said = out:read("a")
    out:close()
    assert.equal("none\n", said)
  end)
end)
