-- Starting processes: `true` run to its end, one after another, N times;
-- loom.process.run (pipes for stdout and stderr, read to the end, the
-- exit waited for) beside luv's uv.spawn (an exit callback, no pipes),
-- best wall time of BENCH_REPS rounds each, alternating. Wall time: the
-- work is the kernel's fork and exec, and the children's.
local lib = require "bench.lib"
local loom = require "loom"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1
local N = math.max(20, math.floor(500 * scale))

local function loom_run()
  loom.run(function()
    for _ = 1, N do
      local r = loom.process.run("true")
      assert(r.code == 0)
    end
  end)
end

local function loom_spawn()
  loom.run(function()
    for _ = 1, N do
      local p = loom.process.spawn("true", {}, { stdin = "null", stdout = "null", stderr = "null" })
      assert(p:wait() == 0)
    end
  end)
end

local have_luv, uv = pcall(require, "luv")
local function luv_spawn()
  for _ = 1, N do
    local done = false
    local handle
    handle = uv.spawn("true", { args = {} }, function(code)
      assert(code == 0)
      done = true
      handle:close()
    end)
    assert(handle, "uv.spawn failed")
    while not done do uv.run("once") end
  end
  uv.run("nowait")
end

-- luv with what run has: pipes for stdout and stderr, read to their end.
local function luv_pipes()
  for _ = 1, N do
    local left = 3
    local out, err = uv.new_pipe(false), uv.new_pipe(false)
    local handle
    handle = uv.spawn("true", { args = {}, stdio = { nil, out, err } }, function(code)
      assert(code == 0)
      left = left - 1
      handle:close()
    end)
    assert(handle, "uv.spawn failed")
    for _, pipe in ipairs({ out, err }) do
      pipe:read_start(function(e, data)
        assert(not e, e)
        if not data then
          left = left - 1
          pipe:close()
        end
      end)
    end
    while left > 0 do uv.run("once") end
  end
  uv.run("nowait")
end

local best = { run = math.huge, spawn = math.huge, luv = math.huge, luv_pipes = math.huge }
local order = { { "run", loom_run }, { "spawn", loom_spawn } }
if have_luv then
  order[#order + 1] = { "luv", luv_spawn }
  order[#order + 1] = { "luv_pipes", luv_pipes }
end
for round = 1, lib.reps do
  lib.note("process: round %d/%d (%d processes each)", round, lib.reps, N)
  for i = 1, #order do
    local item = order[round % 2 == 1 and i or #order + 1 - i]
    lib.settle()
    local t0 = loom.now()
    item[2]()
    best[item[1]] = math.min(best[item[1]], loom.now() - t0)
  end
end

local function rate(t) return ("%.0f/s"):format(N / t) end
local r = lib.report(("Starting `true` %d times, one after another (best of %d, wall time)"):format(N, lib.reps))
if have_luv then
  r:check("loom.process.run(\"true\") vs luv uv.spawn", rate(best.run), rate(best.luv), best.luv / best.run, ">=", 1.0)
  r:info("loom.process.spawn (no pipes) + p:wait() vs uv.spawn", rate(best.spawn), rate(best.luv),
    ("%.2fx"):format(best.luv / best.spawn))
  r:info("loom.process.run vs uv.spawn with stdout, stderr pipes read", rate(best.run), rate(best.luv_pipes),
    ("%.2fx"):format(best.luv_pipes / best.run))
else
  r:skip("loom.process.run(\"true\") vs luv uv.spawn", "lua-luv is not installed (bash scripts/deps.sh)")
end
r:finish()
