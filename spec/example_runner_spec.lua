-- scripts/example.sh, the README's one command for running any example:
-- loom on the Lua paths from any directory, and a throwaway server on
-- loopback for an example that needs one and has no URL, stopped afterwards.
local build = os.getenv("LOOM_BUILD_DIR") or "build"

-- In the sanitizer pass LD_PRELOAD carries libasan into every process this
-- spec starts; the runner is bash, whose own leaks LSan would report. It runs
-- without the preload and hands it to the interpreter alone (LUA).
local preload = os.getenv("LD_PRELOAD")
local lua = preload and ("env LD_PRELOAD=%s lua5.4"):format((preload:gsub("%s+", ":"))) or "lua5.4"

-- Runs the runner from spec/ (not the checkout's root) with the test
-- servers' URLs unset, so it has to start its own. Bounded: a hung server
-- start fails the test instead of the run.
local function runner(args)
  local cmd = ("cd spec && env -u LD_PRELOAD -u LOOM_PG_URL -u LOOM_MYSQL_URL -u LOOM_HTTP_URL "
    .. "LOOM_BUILD_DIR='../%s' LUA='%s' "
    .. "timeout 600 bash ../scripts/example.sh %s 2>&1"):format(build, lua, args)
  local p = io.popen(cmd)
  local out = p:read("a")
  local ok, _, code = p:close()
  return ok, out, code
end

local function listening(port)
  return os.execute(("bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d' 2>/dev/null"):format(port)) == true
end

local function server_port(out, name)
  return tonumber(out:match("a throwaway " .. name .. " server on 127%.0%.0%.1:(%d+)"))
end

describe("scripts/example.sh", function()
  it("runs a SQLite example from another directory", function()
    local ok, out = runner("../examples/sqlite/fan_out.lua")
    assert.is_true(ok, out)
    assert.is_truthy(out:find("the regions add up to all 20000 orders", 1, true), out)
    assert.is_falsy(out:find("throwaway", 1, true), "a SQLite example started a server:\n" .. out)
  end)

  it("runs a PostgreSQL example against a server it starts and stops", function()
    local ok, out = runner("../examples/postgres/fan_out.lua")
    assert.is_true(ok, out)
    assert.is_truthy(out:find("5 queries of 200 ms each answered", 1, true), out)
    local port = assert(server_port(out, "PostgreSQL"), "no server started:\n" .. out)
    assert.is_false(listening(port), "the server on port " .. port .. " still runs")
  end)

  -- The examples on every database take their URL as an argument; the
  -- word "mysql" there asks the runner for a server and passes its URL.
  it("runs an example on every database on a MariaDB server it starts and stops", function()
    local ok, out = runner("../examples/db/named_lock.lua mysql")
    assert.is_true(ok, out)
    assert.is_truthy(out:find("on mysql", 1, true), out)
    assert.is_truthy(out:find("the lock is free: ok", 1, true), out)
    local port = assert(server_port(out, "MariaDB"), "no server started:\n" .. out)
    assert.is_false(listening(port), "the server on port " .. port .. " still runs")
  end)

  it("runs an HTTP example against an nginx it starts and stops", function()
    local ok, out = runner("../examples/http/dashboard.lua")
    assert.is_true(ok, out)
    assert.is_truthy(out:find("dashboard ready: 3 panels", 1, true), out)
    local port = tonumber(out:match("a throwaway nginx at http://127%.0%.0%.1:(%d+)"))
    assert(port, "no nginx started:\n" .. out)
    assert.is_false(listening(port), "nginx on port " .. port .. " still runs")
  end)

  it("stops the server and passes the failure on when the example fails", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write([[
local loom = require "loom"
local db = loom.db.open(assert(os.getenv("LOOM_PG_URL")))
loom.run(function() assert(db:value("SELECT 1") == 1) end)
error("the example broke on purpose")
]])
    f:close()
    local ok, out, code = runner(path)
    os.remove(path)
    assert.is_falsy(ok, out)
    assert.equals(1, code, out)
    assert.is_truthy(out:find("the example broke on purpose", 1, true), out)
    local port = assert(server_port(out, "PostgreSQL"), "no server started:\n" .. out)
    assert.is_false(listening(port), "the server on port " .. port .. " still runs")
  end)

  it("names a missing script and exits 2", function()
    local ok, out, code = runner("../examples/no_such_example.lua")
    assert.is_falsy(ok)
    assert.equals(2, code, out)
    assert.is_truthy(out:find("no such file: ../examples/no_such_example.lua", 1, true), out)
  end)
end)
