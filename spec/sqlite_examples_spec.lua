-- The SQLite examples, run as a user would: each makes its own database in
-- a temp file, checks its own results with assert and removes the file.
local build = os.getenv("LOOM_BUILD_DIR") or "build"

local expected = {
  ["fan_out.lua"] = "the regions add up to all 20000 orders",
  ["bulk_insert.lua"] = "loaded 50000 rows",
  ["batch_updates.lua"] = "updated 5000 accounts in 10 batches",
  ["optimistic_lock.lua"] = "at version 5 after",
  ["transfers.lua"] = "final balances 900 and 100",
  ["named_lock.lua"] = "the lock is free: ok",
  ["change_stream.lua"] = "nothing of the rolled-back transaction appeared",
  ["cursor_stream.lua"] = "streamed 100000 rows in 10 batches",
  ["cache_warm.lua"] = "after reset() the next request loads it again",
  ["report_timeout.lua"] = "the interrupted one is not still running",
}

describe("sqlite examples", function()
  it("has an expectation for every script in examples/sqlite", function()
    for name in io.popen("ls examples/sqlite"):lines() do
      if name:match("%.lua$") then assert.is_not_nil(expected[name], name .. " has no expectation here") end
    end
  end)

  for script, line in pairs(expected) do
    it(script .. " runs and prints what it promises", function()
      local cmd = ("cd examples/sqlite && LUA_PATH='../../lua/?.lua;../../lua/?/init.lua;;' "
        .. "LUA_CPATH='../../%s/?.so;;' lua5.4 %s 2>&1"):format(build, script)
      local p = io.popen(cmd)
      local out = p:read("a")
      local ok = p:close()
      assert.is_true(ok, script .. " failed:\n" .. out)
      assert.is_truthy(out:find(line, 1, true), script .. " did not print '" .. line .. "':\n" .. out)
      assert.is_falsy(out:find("nobody joined it", 1, true), "a task failed unnoticed:\n" .. out)
    end)
  end
end)
