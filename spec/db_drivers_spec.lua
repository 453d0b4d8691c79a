-- Drivers are modules of their own (loom.driver.<name>, one per build
-- option) and loom.db loads on first use: what a program maps is what it
-- uses. Each case runs in a child process, whose /proc/self/maps shows
-- which client libraries it loaded.
local child = require "spec.support.child"

local build = os.getenv("LOOM_BUILD_DIR") or "build"

-- Runs source in a child and returns its output, failing on a non-zero exit.
local function run(source)
  local ok, out = child.run(([[
local function mapped(name)
  local f = assert(io.open("/proc/self/maps"))
  local maps = f:read("a")
  f:close()
  return maps:find(name, 1, true) ~= nil
end
local function libraries()
  local out = {}
  for _, lib in ipairs({ "libpq", "libmariadb", "libsqlite3" }) do
    if mapped(lib) then out[#out + 1] = lib end
  end
  return table.concat(out, " ")
end
]] .. source), 120)
  assert(ok, out)
  return out
end

describe("loading", function()
  it("require 'loom' and running a task load no database code and no client library", function()
    local out = run([[
      local loom = require "loom"
      print(loom.run(function() loom.sleep(0.01); return "ran" end))
      print("db module:", package.loaded["loom.db"] ~= nil)
      print("libraries:", libraries())
    ]])
    assert.matches("ran\n", out, 1, true)
    assert.matches("db module:\tfalse\n", out, 1, true)
    assert.matches("libraries:\t\n", out, 1, true)
  end)

  it("an SQLite database loads SQLite's library and no other", function()
    local out = run([[
      local loom = require "loom"
      loom.run(function()
        local db <close> = loom.db.open("sqlite::memory:")
        print("value:", db:value("SELECT 6 * 7"))
      end)
      print("libraries:", libraries())
    ]])
    assert.matches("value:\t42\n", out, 1, true)
    assert.matches("libraries:\tlibsqlite3\n", out, 1, true)
  end)

  it("require 'loom.db' alone gives loom.db", function()
    local out = run([[
      local db = require "loom.db"
      print(db == require("loom").db, type(db.open))
    ]])
    assert.matches("true\tfunction\n", out, 1, true)
  end)
end)

describe("drivers", function()
  -- A build with only the SQLite driver: this build's core and SQLite
  -- modules, alone on package.cpath.
  local function sqlite_only(source)
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute(("mkdir -p %s/loom/driver && cp %s/loom/core.so %s/loom/ && cp %s %s/loom/driver/")
      :format(dir, build, dir, build .. "/loom/driver/sqlite.so", dir)))
    local ok, out = pcall(run, ("package.cpath = %q\n"):format(dir .. "/?.so") .. source)
    os.execute("rm -rf " .. dir)
    assert(ok, out)
    return out
  end

  it("a URL of a driver this build left out names the build option that builds it", function()
    local out = sqlite_only([[
      local loom = require "loom"
      local ok, e = pcall(loom.db.open, "mysql://app:s3cr3t@127.0.0.1/app")
      print(ok, e.kind, e.message)
      print("libraries:", libraries())
    ]])
    assert.matches("false\targument\tloom was built without the mysql driver "
      .. "(the build option LOOM_WITH_MYSQL=ON builds it)\n", out, 1, true)
    assert.is_nil(out:find("s3cr3t", 1, true))
    assert.matches("libraries:\t\n", out, 1, true)
  end)

  it("an unknown scheme lists the schemes of the drivers built", function()
    local out = sqlite_only([[
      local loom = require "loom"
      local ok, e = pcall(loom.db.open, "oracle://app@host/db")
      print(ok, e.kind, e.message)
    ]])
    assert.matches("false\targument\tno database driver for 'oracle:' (URLs start with sqlite:)\n", out, 1, true)
  end)

  it("the core refuses a value that no driver module gave", function()
    local out = run([[
      local core = require "loom.core"
      for _, v in ipairs({ "postgres", io.stdout, false }) do
        local ok, e = pcall(core._db_open, v, "x", {}, {})
        print(ok, e.kind, e.message)
        ok, e = pcall(core._listener, v, "x")
        print(ok, e.kind, e.message)
      end
    ]])
    for _, t in ipairs({ "string", "userdata", "boolean" }) do
      for _, f in ipairs({ "_db_open", "_listener" }) do
        assert.matches(("false\targument\tbad argument #1 to '%s' (driver expected, got %s)\n"):format(f, t),
          out, 1, true)
      end
    end
  end)

  it("a driver that cannot notify gets no listener", function()
    local out = run([[
      local core = require "loom.core"
      local ok, e = pcall(core._listener, require "loom.driver.sqlite", "x")
      print(ok, e.kind, e.message)
    ]])
    assert.matches("false\targument\tthe sqlite driver has no notifications to listen to\n", out, 1, true)
  end)
end)
