-- The MySQL examples, run as a user would, against the test server.
local my = require "spec.support.my"
local build = os.getenv("LOOM_BUILD_DIR") or "build"

local expected = {
  ["optimistic_lock.lua"] = "at version 5 after",
  ["pessimistic_lock.lua"] = "final balance 900",
  ["named_lock.lua"] = "the lock is free: ok",
  ["bulk_load.lua"] = "loaded 50000 rows",
}

describe("mysql examples", function()
  it("has an expectation for every script in examples/mysql", function()
    for name in io.popen("ls examples/mysql"):lines() do
      if name:match("%.lua$") then assert.is_not_nil(expected[name], name .. " has no expectation here") end
    end
  end)

  for script, line in pairs(expected) do
    it(script .. " runs and prints what it promises", function()
      local cmd = ("cd examples/mysql && LOOM_MYSQL_URL='%s' LUA_PATH='../../lua/?.lua;../../lua/?/init.lua;;' "
        .. "LUA_CPATH='../../%s/?.so;;' lua5.4 %s 2>&1"):format(my.url(), build, script)
      local p = io.popen(cmd)
      local out = p:read("a")
      local ok = p:close()
      assert.is_true(ok, script .. " failed:\n" .. out)
      assert.is_truthy(out:find(line, 1, true), script .. " did not print '" .. line .. "':\n" .. out)
      assert.is_falsy(out:find("nobody joined it", 1, true), "a task failed unnoticed:\n" .. out)
    end)
  end
end)
