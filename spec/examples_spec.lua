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
    ["thumbnail.lua"] = "thumbnail 48x32 matches the single-state result",
    ["hash_files.lua"] = "every file hashed off the loop",
    ["sync_call.lua"] = "synchronous calls ran off the loop",
  }
  expected["lazy_cache.lua"] = "8 concurrent readers saw version 1,1,1,1,1,1,1,1"

  it("has an expectation for every example script", function()
    for name in io.popen("ls examples"):lines() do
      if name:match("%.lua$") then
        assert.is_not_nil(expected[name], name .. " has no expected output here")
      end
    end
  end)

  -- Bars redraw a line with \r: in a pipe (CI, a log) that would make one
  -- line of thousands of frames, so there each bar prints its final figure.
  it("demo.lua prints no progress frames into a pipe", function()
    local ok, out = run("demo.lua")
    assert.is_true(ok, "demo.lua failed:\n" .. out)
    assert.is_falsy(out:find("\r", 1, true), "progress frames in a pipe:\n" .. out:sub(1, 2000))
    for _, figure in ipairs({ "4000/4000 orders written", "120/120 statements sent", "4000/4000 invoices written" }) do
      assert.is_truthy(out:find("\n  " .. figure .. "\n", 1, true), "no line '" .. figure .. "':\n" .. out)
    end
  end)

  -- `script` (util-linux, on every Debian) gives the demo a terminal. In the
  -- sanitizer pass only lua5.4 gets the preloaded libasan: LSan would fail
  -- `script` for its own leaks.
  it("demo.lua draws its bars on a terminal", function()
    local preload = os.getenv("LD_PRELOAD")
    local lua = preload and ("env LD_PRELOAD=%s lua5.4"):format((preload:gsub("%s+", ":"))) or "lua5.4"
    local cmd = ("cd examples && LUA_PATH='../lua/?.lua;../lua/?/init.lua;;' LUA_CPATH='../%s/?.so;;' "
      .. "timeout 300 env -u LD_PRELOAD script -qec '%s demo.lua' /dev/null 2>&1"):format(build, lua)
    local p = io.popen(cmd)
    local out = p:read("a")
    assert.is_true(p:close(), "demo.lua failed on a terminal:\n" .. out)
    assert.is_truthy(out:find("\r  [" .. ("#"):rep(30) .. "] 4000/4000 orders written", 1, true),
      "no bar on a terminal:\n" .. out:sub(1, 2000))
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
