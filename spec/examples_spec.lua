-- Every script in examples/ runs as a user would run it and must succeed:
-- each checks its own results with assert, so a broken feature fails here.
-- The ones in examples/db/ run on every database (spec/support/drivers.lua),
-- the ones in a driver's folder on that driver's.
local drivers = require "spec.support.drivers"
local build = os.getenv("LOOM_BUILD_DIR") or "build"

-- Runs dir/script from dir with loom on the paths; env and args go on the
-- command line as they are.
local function run(dir, script, env, args)
  local up = dir:gsub("[^/]+", "..")
  local cmd = ("cd %s && %s LUA_PATH='%s/lua/?.lua;%s/lua/?/init.lua;;' LUA_CPATH='%s/%s/?.so;;' lua5.4 %s %s 2>&1")
    :format(dir, env or "", up, up, up, build, script, args or "")
  local p = io.popen(cmd)
  local out = p:read("a")
  local ok = p:close()
  return ok, out
end

local function check(dir, script, line, env, args)
  local ok, out = run(dir, script, env, args)
  assert.is_true(ok, script .. " failed:\n" .. out)
  assert.is_truthy(out:find(line, 1, true), script .. " did not print '" .. line .. "':\n" .. out)
  assert.is_falsy(out:find("nobody joined it", 1, true), "a task failed unnoticed:\n" .. out)
  return out
end

-- Every script in dir has an expectation, and nothing else is there.
local function expects_all(dir, expected, helpers)
  it("has an expectation for every script in " .. dir, function()
    for name in io.popen("ls " .. dir):lines() do
      if name:match("%.lua$") and not (helpers and helpers[name]) then
        assert.is_not_nil(expected[name], name .. " has no expectation here")
      end
    end
  end)
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
    ["lazy_cache.lua"] = "8 concurrent readers saw version 1,1,1,1,1,1,1,1",
    ["semaphore_limit.lua"] = "still gave their licence back",
    ["thumbnail.lua"] = "thumbnail 48x32 matches the single-state result",
    ["hash_files.lua"] = "every file hashed off the loop",
    ["sync_call.lua"] = "synchronous calls ran off the loop",
  }
  expects_all("examples", expected)

  -- Bars redraw a line with \r: in a pipe (CI, a log) that would make one
  -- line of thousands of frames, so there each bar prints its final figure.
  it("demo.lua prints no progress frames into a pipe", function()
    local ok, out = run("examples", "demo.lua")
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
    it(script .. " runs and prints what it promises", function() check("examples", script, line) end)
  end
end)

describe("examples of sockets and streams", function()
  local expected = {
    ["echo.lua"] = "every client got its lines echoed back",
    ["chat.lua"] = "chat over: every member heard the other two",
    ["tls_echo.lua"] = "every line came back encrypted",
  }
  for script, line in pairs(expected) do
    it("io/" .. script .. " runs and prints what it promises", function() check("examples/io", script, line) end)
  end
end)

describe("examples of files and processes", function()
  local expected = {
    ["hash_files_procs.lua"] = "every file hashed by a process pool",
    ["shell_pipeline.lua"] = "the pipeline matches plain Lua: 40951",
    ["file_to_db.lua"] = "loaded 100000 rows from the file",
  }
  for script, line in pairs(expected) do
    it("io/" .. script .. " runs and prints what it promises", function() check("examples/io", script, line) end)
  end
end)

describe("examples on every database", function()
  local expected = {
    ["optimistic_lock.lua"] = "at version 5 after",
    ["transfers.lua"] = "final balances 900 and 100",
    ["named_lock.lua"] = "after a failed job the lock is free: ok",
    ["bulk_insert.lua"] = "loaded 50000 rows",
    ["batch_updates.lua"] = "updated 5000 accounts in 10 batches",
  }
  expects_all("examples/db", expected, { ["database.lua"] = true })

  for _, target in ipairs(drivers.targets) do
    for script, line in pairs(expected) do
      it(("%s runs on %s and prints what it promises"):format(script, target.name), function()
        -- A SQLite file is the examples' own default: no argument at all.
        local args = target.examples_default and "" or ("'%s'"):format(target.url(target))
        local out = check("examples/db", script, line, nil, args)
        assert.is_truthy(out:find("on " .. target.driver, 1, true), "not run on " .. target.driver .. ":\n" .. out)
      end)
    end
  end
end)

describe("examples of one database", function()
  local pg = require "spec.support.pg"
  local folders = {
    postgres = {
      env = function() return ("LOOM_PG_URL='%s'"):format(pg.url()) end,
      expected = {
        ["fan_out.lua"] = "5 queries of 200 ms each answered",
        ["change_stream.lua"] = "the subscriber saw 4 changes",
        ["cursor_stream.lua"] = "streamed 200000 rows in 20 batches",
        ["cache_warm.lua"] = "after reset() the next request loads it again",
        ["report_timeout.lua"] = "still running on the server: 0",
      },
    },
    -- Three worker processes and a producer on one database.
    jobs = {
      env = function() return ("LOOM_PG_URL='%s'"):format(pg.url()) end,
      expected = { ["workers.lua"] = "300 jobs done by 3 worker processes, each exactly once" },
      helpers = { ["worker.lua"] = true, ["producer.lua"] = true },
    },
    -- Each makes its own database in a temp file and removes it.
    sqlite = {
      expected = {
        ["fan_out.lua"] = "the regions add up to all 20000 orders",
        ["change_stream.lua"] = "nothing of the rolled-back transaction appeared",
        ["cursor_stream.lua"] = "streamed 100000 rows in 10 batches",
        ["cache_warm.lua"] = "after reset() the next request loads it again",
        ["report_timeout.lua"] = "the interrupted one is not still running",
      },
    },
  }
  for name, folder in pairs(folders) do
    local dir = "examples/" .. name
    expects_all(dir, folder.expected, folder.helpers)
    for script, line in pairs(folder.expected) do
      it(("%s/%s runs and prints what it promises"):format(name, script), function()
        check(dir, script, line, folder.env and folder.env())
      end)
    end
  end
end)

describe("examples of loom.http", function()
  local http = require "spec.support.http"
  local expected = {
    ["dashboard.lua"] = "dashboard ready: 3 panels",
    ["crawler.lua"] = "crawled 8 pages in 14 requests",
    ["download.lua"] = "downloaded 8388608 bytes",
  }
  expects_all("examples/http", expected)
  for script, line in pairs(expected) do
    it("http/" .. script .. " runs and prints what it promises", function()
      check("examples/http", script, line, ("LOOM_HTTP_URL='%s'"):format(http.url()))
    end)
  end
end)
