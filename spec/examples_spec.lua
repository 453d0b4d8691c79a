-- Every script in examples/ runs as a user would run it and must succeed:
-- each checks its own results with assert, so a broken feature fails here.
local build = os.getenv("LOOM_BUILD_DIR") or "build"

local function run(script)
  local cmd = ("cd examples && LUA_PATH='../lua/?.lua;../lua/?/init.lua;;' "
    .. "LUA_CPATH='../%s/?.so;;' lua5.4 %s 2>&1"):format(build, script)
  local p = io.popen(cmd)
  local out = p:read("a")
  local ok, how, code = p:close()
  return ok, out, how, code
end

describe("examples", function()
  local expected = {
    ["demo.lua"] = "no oversell: ",
    ["parallel_map.lua"] = "results are in input order",
    ["fan_out_fan_in.lua"] = "fan-in complete: 15 parts, total 90",
    ["work_queue.lua"] = "every job was handled exactly once",
    ["pipeline.lua"] = "done: 400 records",
    ["race_timeout.lua"] = "first answer: mirror-b says 42",
    ["retry_breaker.lua"] = "request 10: result 10",
    ["lazy_cache.lua"] = "computed once",
    ["semaphore_limit.lua"] = "still gave their licence back",
  }
  expected["lazy_cache.lua"] = "8 concurrent readers saw version 1,1,1,1,1,1,1,1"

  it("has an expectation for every example script", function()
    for name in io.popen("ls examples"):lines() do
      if name:match("%.lua$") then
        assert.is_not_nil(expected[name], name .. " has no expected output here")
      end
    end
  end)

  for script, line in pairs(expected) do
    it(script .. " runs and prints what it promises", function()
      local ok, out = run(script)
      assert.is_true(ok, script .. " failed:\n" .. out)
      assert.is_truthy(out:find(line, 1, true), script .. " did not print '" .. line .. "':\n" .. out)
      assert.is_falsy(out:find("nobody joined it", 1, true), "a task failed unnoticed:\n" .. out)
    end)
  end
end)
