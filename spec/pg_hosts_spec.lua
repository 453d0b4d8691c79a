-- PostgreSQL connects like libpq: every address a name resolves to, and
-- every host of a multi-host connection string, tried in order until one
-- answers (issue 11).
-- spec/support/pg.lua starts a throwaway server unless LOOM_PG_URL is set.
local loom = require "loom"
local pg = require "spec.support.pg"

local URL = pg.url()
local build = os.getenv("LOOM_BUILD_DIR") or "build"
local user, pw, port, dbname = URL:match("^postgres://([^:]+):([^@]+)@127%.0%.0%.1:(%d+)/([^?]+)")

local net = require "spec.support.net"
local closed_port = net.closed_port

local function value_of(url, opts)
  local db = loom.db.open(url, opts or { pool = { acquire_timeout = 20 } })
  local ok, v = pcall(loom.run, function() return db:value("SELECT inet_server_port()") end)
  db:close()
  return ok, v
end

describe("postgres: several hosts, several addresses", function()
  assert(user, "the spec needs a postgres://user:password@127.0.0.1:port/db URL, got " .. URL)

  it("a multi-host URL moves past a host that refuses", function()
    local ok, v = value_of(("postgres://%s:%s@127.0.0.1:%d,127.0.0.1:%s/%s")
      :format(user, pw, closed_port(), port, dbname))
    assert.is_true(ok, tostring(v))
    assert.equal(tonumber(port), v)
  end)

  it("a host given by name among them is looked up on the loop and tried the same way", function()
    local ok, v = value_of(("postgres://%s:%s@localhost:%d,127.0.0.1:%s/%s")
      :format(user, pw, closed_port(), port, dbname))
    assert.is_true(ok, tostring(v))
    assert.equal(tonumber(port), v)
  end)

  it("when every host fails, the error names each attempt and never the password", function()
    local a, b = closed_port(), closed_port()
    local ok, e = value_of(("postgres://%s:%s@127.0.0.1:%d,localhost:%d/%s"):format(user, pw, a, b, dbname),
      { pool = { acquire_timeout = 20 } })
    assert.is_false(ok)
    assert.equal("connection", e.kind)
    assert.matches(tostring(a), e.message, 1, true)
    assert.matches(tostring(b), e.message, 1, true)
    assert.is_falsy(tostring(e):find(pw, 1, true))
  end)

  it("a name that does not resolve is a connection error naming it", function()
    local ok, e = value_of(("postgres://%s:%s@no-such-host.invalid:%s/%s"):format(user, pw, port, dbname),
      { pool = { acquire_timeout = 20 } })
    assert.is_false(ok)
    assert.equal("connection", e.kind)
    assert.matches("no-such-host.invalid", e.message, 1, true)
  end)

  it("an address that does not answer is given up after connect_timeout, and the next one is tried", function()
    -- A listener that never accepts: the TCP connect succeeds and the
    -- server's greeting never comes. connect_timeout=2 is per address, as
    -- in libpq; acquire_timeout 20 s only bounds a slow, loaded machine.
    local silent, stop = net.mute_server("silent")
    local ok, v = value_of(("postgres://%s:%s@127.0.0.1:%s,127.0.0.1:%s/%s?connect_timeout=2")
      :format(user, pw, silent, port, dbname))
    stop()
    assert.is_true(ok, tostring(v))
    assert.equal(tonumber(port), v)
  end)

  -- #subprocess: the child process preloads a resolver in which the name
  -- loom-dual.test gives ::1 first and 127.0.0.1 second, like "localhost"
  -- where /etc/hosts lists ::1 first; the server listens on 127.0.0.1 only.
  it("a name whose first address refuses is reached through its second #subprocess", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    local preload = net.dual_host_preload(dir)
    local script = [[
      local loom = require "loom"
      local db = loom.db.open(os.getenv("DUAL_URL"), { pool = { acquire_timeout = 20 } })
      local ok, v = pcall(loom.run, function() return db:value("SELECT inet_server_port()") end)
      db:close()
      io.write(ok and ("port " .. tostring(v)) or ("failed " .. tostring(v)), "\n")
    ]]
    local f = assert(io.open(dir .. "/child.lua", "w"))
    f:write(script)
    f:close()
    local cmd = ("DUAL_URL='postgres://%s:%s@loom-dual.test:%s/%s' LD_PRELOAD='%s' "
      .. "LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='%s/?.so;;' timeout 60 lua5.4 %s/child.lua 2>&1")
      :format(user, pw, port, dbname, preload, build, dir)
    local p = io.popen(cmd)
    local out = p:read("a")
    p:close()
    os.execute("rm -rf " .. dir)
    assert.equal("port " .. port, out:match("[^\n]*"), out)
  end)
end)
