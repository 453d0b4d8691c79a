-- PostgreSQL over TLS. spec/support/pg_server.sh starts the test server with
-- TLS on (a throwaway CA in DIR/ca.crt, a certificate for 127.0.0.1 and
-- localhost, a role `loom_ssl` admitted over TLS only, URL in DIR/ssl_url);
-- the sslmode / sslrootcert query parameters of the URL reach libpq.
local loom = require "loom"
local pg = require "spec.support.pg"

local URL = pg.url()

local function server_dir()
  local state = debug.getregistry()["loom.spec.pg"]
  local dir = state and state.dir or os.getenv("LOOM_PG_DIR")
  if not dir then
    error("LOOM_PG_DIR is not set: the TLS specs need the directory of a server started by "
      .. "spec/support/pg_server.sh (it holds ca.crt)", 2)
  end
  return dir
end

-- DIR/name, which pg_server.sh writes when it set up TLS.
local function tls_file(name)
  local path = server_dir() .. "/" .. name
  local f = io.open(path)
  if not f then
    error(("%s is missing: the test server was started without TLS (is openssl installed? " ..
      "see the output of spec/support/pg_server.sh start)"):format(path), 2)
  end
  f:close()
  return path
end

local function read_line(path)
  local f = assert(io.open(path))
  local s = f:read("l")
  f:close()
  return s
end

local function with_params(url, params)
  return url .. (url:find("?", 1, true) and "&" or "?") .. params
end

local SSL_IN_USE = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"

-- Runs fn(db) on a pool over url, closing it however fn ends.
local function using(url, fn, pool)
  local db = loom.db.open(url, { pool = pool or { max = 2, acquire_timeout = 5 } })
  local ok, err = pcall(loom.run, fn, db)
  db:close()
  if not ok then error(err, 0) end
end

describe("postgres TLS", function()
  it("sslmode=require encrypts, sslmode=disable does not", function()
    using(with_params(URL, "sslmode=require"), function(db)
      assert.is_true(db:value(SSL_IN_USE))
      assert.matches("^TLS", db:value("SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))
    end)
    using(with_params(URL, "sslmode=disable"), function(db)
      assert.is_false(db:value(SSL_IN_USE))
    end)
  end)

  it("sslmode=verify-full with the server's CA accepts 127.0.0.1 and localhost", function()
    local ca = tls_file("ca.crt")
    local params = "sslmode=verify-full&sslrootcert=" .. ca
    using(with_params(URL, params), function(db)
      assert.is_true(db:value(SSL_IN_USE))
    end)
    -- A host name: loom resolves it on the loop, libpq still checks the name.
    local by_name = URL:gsub("@127%.0%.0%.1:", "@localhost:")
    assert.is_true(by_name ~= URL, "the test URL names 127.0.0.1")
    using(with_params(by_name, params), function(db)
      assert.is_true(db:value(SSL_IN_USE))
    end)
  end)

  it("sslmode=verify-full with a CA that did not sign the certificate fails with kind connection", function()
    local wrong = tls_file("other_ca.crt")
    using(with_params(URL, "sslmode=verify-full&sslrootcert=" .. wrong), function(db)
      local started = loom.now()
      local ok, e = pcall(db.value, db, "SELECT 1")
      assert.is_false(ok)
      assert.equal("connection", e.kind)
      assert.matches("certificate verify failed", e.message)
      assert.equal("postgres", e.driver)
      assert.is_true(loom.now() - started < 2, "reported at once, not at the acquire timeout")
      local password = URL:match("^%a+://[^:]+:([^@]+)@")
      assert.is_nil(tostring(e):find(password, 1, true), "the password stays out of the message")
    end)
  end)

  it("a missing sslrootcert file is a clear connection error", function()
    using(with_params(URL, "sslmode=verify-full&sslrootcert=/nonexistent/loom-ca.crt"), function(db)
      local ok, e = pcall(db.value, db, "SELECT 1")
      assert.is_false(ok)
      assert.equal("connection", e.kind)
      assert.matches("/nonexistent/loom-ca.crt", e.message, 1, true)
    end)
  end)

  it("a role admitted over TLS only is refused with sslmode=disable and let in with sslmode=require", function()
    local ssl_url = read_line(tls_file("ssl_url"))
    using(with_params(ssl_url, "sslmode=disable"), function(db)
      local ok, e = pcall(db.value, db, "SELECT 1")
      assert.is_false(ok)
      assert.equal("connection", e.kind)
      assert.matches("no encryption", e.message)
    end)
    using(with_params(ssl_url, "sslmode=require"), function(db)
      assert.equal("loom_ssl", db:value("SELECT current_user::text"))
      assert.is_true(db:value(SSL_IN_USE))
    end)
  end)

  it("large results, streams, batches, COPY, cancellation and notifications work over TLS", function()
    local url = with_params(URL, "sslmode=verify-full&sslrootcert=" .. tls_file("ca.crt"))
    using(url, function(db)
      loom.timeout(30, function()
        -- Results far larger than a TLS record, from several tasks at once.
        loom.each({ 1, 2, 3, 4, 5, 6, 7, 8 }, function(i)
          local rows = db:query("SELECT g, repeat(md5(g::text), 32) AS pad FROM generate_series(1, 2000) g")
          assert.equal(2000, #rows)
          assert.equal(1024, #rows[2000].pad)
          assert.equal(i, db:value("SELECT $1::int", i))
        end)
        local n, sum = 0, 0
        for row in db:rows("SELECT g FROM generate_series(1, 20000) g") do
          n = n + 1
          sum = sum + row.g
        end
        assert.equal(20000, n); assert.equal(20000 * 20001 // 2, sum)
        local results = db:batch({ { "SELECT 1 AS a" }, { "SELECT $1::text AS b", ("x"):rep(100000) } })
        assert.equal(100000, #results[2][1].b)

        db:exec("DROP TABLE IF EXISTS tls_spec_copy")
        db:exec("CREATE TABLE tls_spec_copy (id int, body text)")
        local rows = {}
        for i = 1, 20000 do rows[i] = { i, ("row %d "):format(i):rep(8) } end
        assert.equal(20000, db:insert_many("tls_spec_copy", { "id", "body" }, rows))
        assert.equal(20000, db:value("SELECT count(*) FROM tls_spec_copy"))
        db:exec("DROP TABLE tls_spec_copy")

        -- A timeout cancels on the server; the connection stays usable.
        local ok, e = pcall(loom.timeout, 0.2, db.value, db, "SELECT pg_sleep(10)")
        assert.is_false(ok); assert.equal("timeout", e.kind)
        assert.equal(5, db:value("SELECT 5"))

        local sub = db:listen("tls_spec_channel")
        db:notify("tls_spec_channel", ("p"):rep(5000))
        local note = loom.timeout(5, sub.recv, sub)
        assert.equal("tls_spec_channel", note.channel)
        assert.equal(5000, #note.payload)
        sub:close()
      end)
    end, { max = 4, acquire_timeout = 5 })
  end)
end)
