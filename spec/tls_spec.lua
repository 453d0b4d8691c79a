-- TLS streams (lua/io/tls.c, core/tls_transport.c, core/tls.c): loom.tcp's
-- tls option on loopback, with throwaway certificates test/tls_certs.sh
-- makes (a CA, localhost's certificate, one for another name, one from an
-- untrusted CA, a client certificate). Every test body runs under
-- loom.timeout, every handshake under handshake_timeout.
local loom = require "loom"

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("bash test/tls_certs.sh " .. dir), "test/tls_certs.sh failed (openssl missing?)")
local function cert(name) return dir .. "/" .. name end

local function within(seconds, fn)
  return loom.run(function() return loom.timeout(seconds, fn) end)
end

local function expect_error(kind, fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error, but the call succeeded")
  assert(type(err) == "table", "error is not a table: " .. tostring(err))
  assert.equal(kind, err.kind, tostring(err))
  return err
end

local function server_tls(name, extra)
  local t = { cert = cert(name .. ".crt"), key = cert(name .. ".key") }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

-- A line echo server; its handlers' failures go to srv.errors.
local function echo_server(tls, on_stream)
  local errors = {}
  local srv = loom.tcp.listen("127.0.0.1", 0, function(s)
    if on_stream then on_stream(s) end
    for line in s:lines("L") do s:write(line) end
  end, { tls = tls, handshake_timeout = 5, on_error = function(err) errors[#errors + 1] = err end })
  srv.errors = errors
  return srv
end

local function client_tls(extra)
  local t = { ca = cert("ca.crt") }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

local function connect(host, port, tls)
  return loom.tcp.connect(host, port, { tls = tls, handshake_timeout = 5 })
end

describe("TLS", function()
  teardown(function() os.execute("rm -rf " .. dir) end)

  it("echoes lines over a verified connection", function()
    within(20, function()
      local srv = echo_server(server_tls("server"))
      local c = connect("localhost", srv.port, client_tls())
      for i = 1, 50 do
        c:write("line ", i, "\n")
        assert.equal("line " .. i, c:read("l", { timeout = 5 }))
      end
      assert.is_nil(c:alpn())
      c:close()
      srv:close(5)
      assert.same({}, srv.errors)
    end)
  end)

  it("handshakes on a server whose options start reading before TLS is on", function()
    within(20, function()
      -- high_water starts the stream reading in the accept loop: the
      -- client's hello may be buffered before the handler's task puts TLS on.
      local srv = loom.tcp.listen("127.0.0.1", 0, function(s)
        for line in s:lines("L") do s:write(line) end
      end, { tls = server_tls("server"), high_water = 4096, handshake_timeout = 5 })
      for i = 1, 5 do
        local c = connect("localhost", srv.port, client_tls())
        c:write("early ", i, "\n")
        assert.equal("early " .. i, c:read("l", { timeout = 5 }))
        c:close()
      end
      srv:close(5)
    end)
  end)

  it("verifies against the system's CAs with tls = true", function()
    within(20, function()
      local srv = echo_server(server_tls("server"))
      local err = expect_error("tls", connect, "localhost", srv.port, true)
      assert.equal("verify", err.code)
      assert.matches("certificate verify failed", err.message, 1, true)
      srv:close(5)
    end)
  end)

  it("refuses a certificate for another host, with OpenSSL's reason", function()
    within(20, function()
      local srv = echo_server(server_tls("wrong"))
      local err = expect_error("tls", connect, "localhost", srv.port, client_tls())
      assert.equal("verify", err.code)
      assert.matches("TLS handshake with localhost port " .. srv.port ..
        ": certificate verify failed: hostname mismatch", err.message, 1, true)
      -- An address the certificate does not list either.
      local srv2 = echo_server(server_tls("server"))
      err = expect_error("tls", connect, "127.0.0.1", srv2.port, client_tls({ servername = "127.0.0.2" }))
      assert.matches("IP address mismatch", err.message, 1, true)
      -- The server hears the client's alert: a handshake failure of its own.
      assert.is_true(loom.timeout(5, function()
        while #srv.errors == 0 do loom.sleep(0.01) end
        return true
      end))
      assert.equal("tls", srv.errors[1].kind)
      srv:close(5)
      srv2:close(5)
    end)
  end)

  it("refuses a certificate from an untrusted CA", function()
    within(20, function()
      local srv = echo_server(server_tls("stranger"))
      local err = expect_error("tls", connect, "localhost", srv.port, client_tls())
      assert.equal("verify", err.code)
      assert.matches("unable to get local issuer certificate", err.message, 1, true)
      srv:close(5)
    end)
  end)

  it("connects to anyone with verify = false", function()
    within(20, function()
      local srv = echo_server(server_tls("stranger"))
      local c = connect("127.0.0.1", srv.port, { verify = false })
      c:write("unverified\n")
      assert.equal("unverified", c:read("l", { timeout = 5 }))
      c:close()
      srv:close(5)
    end)
  end)

  it("settles ALPN on the server's preference, or on nothing", function()
    within(20, function()
      local seen
      local srv = echo_server(server_tls("server", { alpn = { "http/1.1", "h2" } }),
        function(s) seen = s:alpn() end)
      local c = connect("localhost", srv.port, client_tls({ alpn = { "h2", "http/1.1" } }))
      assert.equal("http/1.1", c:alpn())
      c:write("x\n")
      c:read("l", { timeout = 5 })
      assert.equal("http/1.1", seen)
      c:close()
      c = connect("localhost", srv.port, client_tls({ alpn = { "imap" } }))
      assert.is_nil(c:alpn())
      c:close()
      srv:close(5)
    end)
  end)

  it("sends the host name as SNI, never an address; servername overrides both", function()
    within(20, function()
      local names = {}
      local srv = echo_server(server_tls("server"), function(s)
        names[#names + 1] = s:servername() or "none"
      end)
      local function once(host, tls)
        local c = connect(host, srv.port, tls)
        c:write("sni\n")
        c:read("l", { timeout = 5 })
        assert.is_nil(c:servername()) -- a client's view: none
        c:close()
      end
      once("localhost", client_tls())
      once("127.0.0.1", client_tls())
      once("127.0.0.1", client_tls({ servername = "localhost" }))
      assert.same({ "localhost", "none", "localhost" }, names)
      srv:close(5)
    end)
  end)

  it("asks for a client certificate with verify = true on the server", function()
    within(20, function()
      local srv = echo_server(server_tls("server", { ca = cert("ca.crt"), verify = true }))
      -- TLS 1.3: the client finishes first and hears the refusal on reading.
      local ok, err = pcall(function()
        local c = connect("localhost", srv.port, client_tls())
        c:write("anonymous\n")
        return c:read("l", { timeout = 5 })
      end)
      assert.is_false(ok)
      assert.equal("tls", err.kind, tostring(err))
      local c = connect("localhost", srv.port, client_tls({ cert = cert("client.crt"), key = cert("client.key") }))
      c:write("known\n")
      assert.equal("known", c:read("l", { timeout = 5 }))
      c:close()
      srv:close(5)
    end)
  end)

  it("takes PEM text for the certificate and key", function()
    within(20, function()
      local function slurp(name)
        local f = assert(io.open(cert(name), "rb"))
        local text = f:read("a")
        f:close()
        return text
      end
      local srv = echo_server({ cert = slurp("server.crt"), key = slurp("server.key") })
      local c = connect("localhost", srv.port, client_tls())
      c:write("pem\n")
      assert.equal("pem", c:read("l", { timeout = 5 }))
      c:close()
      srv:close(5)
      -- A key that is not the certificate's; no key text in the error.
      local err = expect_error("tls", loom.tcp.listen, "127.0.0.1", 0, function() end,
        { tls = { cert = slurp("server.crt"), key = slurp("wrong.key") } })
      assert.equal("config", err.code)
      assert.is_nil(err.message:find("BEGIN", 1, true))
    end)
  end)

  it("moves megabytes both ways at once", function()
    within(60, function()
      local srv = loom.tcp.listen("127.0.0.1", 0, function(s)
        while true do
          local chunk = s:read(16384, { timeout = 10 })
          if not chunk then break end
          s:write(chunk)
        end
      end, { tls = server_tls("server") })
      local c = connect("localhost", srv.port, client_tls())
      local parts = {}
      for i = 1, 256 do parts[i] = string.rep(string.char(i % 256), 16384) end
      local big = table.concat(parts)
      local writer = loom.spawn(function() c:write(big) end)
      local back = c:read(#big, { timeout = 30 })
      writer:join()
      assert.equal(#big, #back)
      assert.is_true(back == big)
      c:close()
      srv:close(5)
    end)
  end)

  it("reads the peer's close_notify as EOF, after its data", function()
    within(20, function()
      local srv = loom.tcp.listen("127.0.0.1", 0, function(s)
        s:write("last words\n")
      end, { tls = server_tls("server") })
      local c = connect("localhost", srv.port, client_tls())
      assert.equal("last words", c:read("l", { timeout = 5 }))
      assert.is_nil(c:read("l", { timeout = 5 }))
      c:close()
      srv:close(5)
    end)
  end)

  it("reports a peer that closes without close_notify as truncated", function()
    within(20, function()
      local tls_srv = loom.tcp.listen("127.0.0.1", 0, function(s)
        s:write("partial\n")
        pcall(s.read, s, "l", { timeout = 10 }) -- truncated too, by the cut
      end, { tls = server_tls("server") })
      -- A plain relay between the client and the TLS server, which the
      -- test cuts: the client's socket ends with no TLS record saying so.
      local cut = loom.channel()
      local relay = loom.tcp.listen("127.0.0.1", 0, function(a)
        local b = loom.tcp.connect("127.0.0.1", tls_srv.port)
        local function pump(from, to)
          return loom.spawn(function()
            pcall(function()
              while true do
                local byte = from:read(1)
                if not byte then return end
                to:write(byte)
              end
            end)
          end)
        end
        local p1, p2 = pump(a, b), pump(b, a)
        cut:recv()
        a:close()
        b:close()
        p1:join()
        p2:join()
      end)
      local c = connect("127.0.0.1", relay.port, client_tls({ servername = "localhost" }))
      assert.equal("partial", c:read("l", { timeout = 5 }))
      cut:send(true)
      local err = expect_error("tls", c.read, c, "l", { timeout = 5 })
      assert.equal("truncated", err.code)
      assert.matches("truncated", err.message, 1, true)
      c:close()
      relay:close(5)
      tls_srv:close(5)
    end)
  end)

  it("bounds a handshake with a server that never answers", function()
    within(20, function()
      local mute = loom.tcp.listen("127.0.0.1", 0, function(s)
        s:read("a", { timeout = 10 })
      end)
      local started = loom.now()
      local err = expect_error("timeout", loom.tcp.connect, "127.0.0.1", mute.port,
        { tls = client_tls({ servername = "localhost" }), handshake_timeout = 0.2 })
      assert.matches("TLS handshake", err.message, 1, true)
      assert.is_true(loom.now() - started < 5)
      mute:close(5)
    end)
  end)

  it("checks its options before connecting", function()
    within(20, function()
      local err = expect_error("argument", loom.tcp.connect, "127.0.0.1", 1, { tls = { alpn = "h2" } })
      assert.matches("tls.alpn must be a list of strings", err.message, 1, true)
      err = expect_error("argument", loom.tcp.connect, "127.0.0.1", 1, { tls = { bogus = 1 } })
      assert.matches("unknown tls option 'bogus'", err.message, 1, true)
      err = expect_error("argument", loom.tcp.connect, "127.0.0.1", 1, { tls = "yes" })
      assert.matches("'loom.tcp.connect'", err.message, 1, true)
      err = expect_error("tls", loom.tcp.connect, "127.0.0.1", 1, { tls = { ca = "/nonexistent/ca.pem" } })
      assert.equal("config", err.code)
      assert.matches("/nonexistent/ca.pem", err.message, 1, true)
      err = expect_error("argument", loom.tcp.listen, "127.0.0.1", 0, function() end, { tls = true })
      assert.matches("tls must be a table", err.message, 1, true)
      err = expect_error("tls", loom.tcp.listen, "127.0.0.1", 0, function() end, { tls = {} })
      assert.matches("needs a certificate and a key", err.message, 1, true)
      err = expect_error("argument", loom.tcp.connect, { "a", "b" }, 1, { tls = true })
      assert.matches("servername", err.message, 1, true)
    end)
  end)
end)
