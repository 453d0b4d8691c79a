-- The PostgreSQL examples, run as a user would, against the test server.
local pg = require "spec.support.pg"
local build = os.getenv("LOOM_BUILD_DIR") or "build"

local expected = {
  ["fan_out.lua"] = "5 queries of 200 ms each answered",
  ["bulk_insert.lua"] = "loaded 50000 rows",
  ["batch_updates.lua"] = "updated 5000 accounts in 10 batches",
  ["optimistic_lock.lua"] = "at version 5 after",
  ["pessimistic_lock.lua"] = "final balance 900",
  ["advisory_lock.lua"] = "the lock is free: ok",
  ["change_stream.lua"] = "the subscriber saw 4 changes",
  ["cursor_stream.lua"] = "streamed 200000 rows in 20 batches",
  ["cache_warm.lua"] = "after reset() the next request loads it again",
  ["report_timeout.lua"] = "still running on the server: 0",
}

describe("postgres examples", function()
  it("has an expectation for every script in examples/postgres", function()
    for name in io.popen("ls examples/postgres"):lines() do
      if name:match("%.lua$") then assert.is_not_nil(expected[name], name .. " has no expectation here") end
    end
  end)

  for script, line in pairs(expected) do
    it(script .. " runs and prints what it promises", function()
      local cmd = ("cd examples/postgres && LOOM_PG_URL='%s' LUA_PATH='../../lua/?.lua;../../lua/?/init.lua;;' "
        .. "LUA_CPATH='../../%s/?.so;;' lua5.4 %s 2>&1"):format(pg.url(), build, script)
      local p = io.popen(cmd)
      local out = p:read("a")
      local ok = p:close()
      assert.is_true(ok, script .. " failed:\n" .. out)
      assert.is_truthy(out:find(line, 1, true), script .. " did not print '" .. line .. "':\n" .. out)
      assert.is_falsy(out:find("nobody joined it", 1, true), "a task failed unnoticed:\n" .. out)
    end)
  end
end)
