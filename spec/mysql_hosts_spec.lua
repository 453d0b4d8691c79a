-- MySQL connects like libpq: every address a host name resolves to is
-- tried in order until one answers, connect_timeout bounding each (issue 11).
-- spec/support/my.lua starts a throwaway server unless LOOM_MYSQL_URL is set.
local loom = require "loom"
local my = require "spec.support.my"

local URL = my.url()
local build = os.getenv("LOOM_BUILD_DIR") or "build"
local user, pw, port, rest = URL:match("^mysql://([^:]+):([^@]+)@127%.0%.0%.1:(%d+)(/.*)$")

local net = require "spec.support.net"
local closed_port, mute_server = net.closed_port, net.mute_server

local function url_at(hostport, query)
  local u = ("mysql://%s:%s@%s%s"):format(user, pw, hostport, rest)
  if query then u = u .. (u:find("?", 1, true) and "&" or "?") .. query end
  return u
end


-- Bounds only the wait for a connection on a slow, loaded machine: every
-- connect below ends (or fails) through the driver well before it.
local POOL = { pool = { acquire_timeout = 30 } }

local function connect(url)
  local db = loom.db.open(url, POOL)
  local ok, v = pcall(loom.run, function() return db:value("SELECT @@port") end)
  db:close()
  return ok, v
end

describe("mysql: every address of a host", function()
  assert(user, "the spec needs a mysql://user:password@127.0.0.1:port/db URL, got " .. URL)

  it("a numeric address is used as given", function()
    local ok, v = connect(url_at("127.0.0.1:" .. port))
    assert.is_true(ok, tostring(v))
    assert.equal(tonumber(port), v)
  end)

  it("localhost is looked up on the loop and reached", function()
    local ok, v = connect(url_at("localhost:" .. port))
    assert.is_true(ok, tostring(v))
    assert.equal(tonumber(port), v)
  end)

  it("a name that does not resolve is a connection error naming it", function()
    local ok, e = connect(url_at("no-such-host.invalid:" .. port))
    assert.is_false(ok)
    assert.equal("connection", e.kind)
    assert.matches("no-such-host.invalid", e.message, 1, true)
  end)

  it("an address that lets the login in and then never answers is given up after connect_timeout", function()
    -- The library bounds its own waits, but not the statement the driver
    -- sends right after the login: this hung until the pool gave up.
    local p, stop = mute_server("login", "127.0.0.1")
    local ok, e = connect(url_at("127.0.0.1:" .. p, "connect_timeout=2"))
    stop()
    assert.is_false(ok)
    assert.equal("connection", e.kind, tostring(e))
    assert.matches('"127.0.0.1", port ' .. p, e.message, 1, true)
    assert.matches("timeout expired", e.message, 1, true)
  end)

  it("an address that never greets is given up after connect_timeout too", function()
    local p, stop = mute_server("silent", "127.0.0.1")
    local ok, e = connect(url_at("127.0.0.1:" .. p, "connect_timeout=2"))
    stop()
    assert.is_false(ok)
    assert.equal("connection", e.kind, tostring(e))
    assert.matches("127.0.0.1", e.message, 1, true)
  end)
end)

-- #subprocess: the child process preloads spec/support/dual_host.c, a
-- resolver in which loom-dual.test is ::1 then 127.0.0.1 (like "localhost"
-- where /etc/hosts lists ::1 first) and loom-pair.test is 127.0.0.2 then
-- 127.0.0.1; the server listens on 127.0.0.1 only.
describe("mysql: a name with several addresses #subprocess", function()
  local dir, preload

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    preload = net.dual_host_preload(dir)
    local f = assert(io.open(dir .. "/child.lua", "w"))
    f:write([[
      local loom = require "loom"
      local db = loom.db.open(os.getenv("HOSTS_URL"), { pool = { acquire_timeout = 30 } })
      local ok, v = pcall(loom.run, function() return db:value("SELECT @@port") end)
      db:close()
      if ok then
        io.write("port ", tostring(v), "\n")
      elseif type(v) == "table" then
        io.write("failed ", tostring(v.kind), " ", tostring(v.code), "\n", tostring(v.message), "\n")
      else
        io.write("failed ", tostring(v), "\n")
      end
    ]])
    f:close()
  end)

  teardown(function() os.execute("rm -rf " .. dir) end)

  -- Runs the child on url: "port N", or the error's kind and code on the
  -- first line and its message after. The child must exit cleanly (under
  -- the sanitizers too: their reports end it with a failure).
  local function child(url)
    local cmd = ("LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='%s/?.so;;' LD_PRELOAD='%s' "
      .. "timeout 90 lua5.4 %s/child.lua 2>&1"):format(build, preload, dir)
    local h = io.popen("HOSTS_URL='" .. url:gsub("'", "'\\''") .. "' " .. cmd)
    local out = h:read("a")
    local exited = h:close()
    assert(exited, "the child failed:\n" .. out)
    return out, out:match("[^\n]*")
  end

  it("a name whose first address (::1) refuses is reached through its second", function()
    local out, first = child(url_at("loom-dual.test:" .. port))
    assert.equal("port " .. port, first, out)
  end)

  it("a name whose first IPv4 address refuses is reached through its second", function()
    local out, first = child(url_at("loom-pair.test:" .. port))
    assert.equal("port " .. port, first, out)
  end)

  it("an address that does not answer is given up after connect_timeout, and the next one is tried", function()
    -- Nothing answers on 127.0.0.2 at the server's port: connect_timeout=2
    -- applies per address, so 127.0.0.1 still gets its own 2 s.
    local _, stop = mute_server("silent", "127.0.0.2", tonumber(port))
    local out, first = child(url_at("loom-pair.test:" .. port, "connect_timeout=2"))
    stop()
    assert.equal("port " .. port, first, out)
  end)

  it("an address that logs in and then never answers is given up for the next one", function()
    local _, stop = mute_server("login", "127.0.0.2", tonumber(port))
    local out, first = child(url_at("loom-pair.test:" .. port, "connect_timeout=2"))
    stop()
    assert.equal("port " .. port, first, out)
  end)

  it("when every address fails, the error names each attempt and never the password", function()
    local p = closed_port()
    local out, first = child(url_at("loom-dual.test:" .. p))
    assert.matches("^failed connection ", first, nil, false)
    assert.matches('"loom-dual.test" (::1), port ' .. p, out, 1, true)
    assert.matches('"loom-dual.test" (127.0.0.1), port ' .. p, out, 1, true)
    assert.is_true(out:find("::1", 1, true) < out:find("127.0.0.1", 1, true), out)
    assert.is_falsy(out:find(pw, 1, true))
  end)

  it("a server that answers and refuses the login ends the connect with its error", function()
    -- 127.0.0.2 refuses, 127.0.0.1 is the server, and the wrong password
    -- is its answer: code 1045, after the line of the address before it.
    local bad = ("mysql://%s:%s@loom-pair.test:%s%s"):format(user, "wrong-secret-pw", port, rest)
    local out, first = child(bad)
    assert.equal("failed connection 1045", first, out)
    assert.matches('"loom-pair.test" (127.0.0.2), port ' .. port, out, 1, true)
    assert.matches('"loom-pair.test" (127.0.0.1), port ' .. port, out, 1, true)
    assert.is_falsy(out:find("wrong-secret-pw", 1, true))
  end)
end)
