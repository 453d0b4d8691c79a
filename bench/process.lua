-- Starting processes: `true` run to its end, one after another, N times;
-- loom.process.run (pipes for stdout and stderr, read to the end, the
-- exit waited for) beside luv's uv.spawn (an exit callback, no pipes),
-- best wall time of BENCH_REPS rounds each, alternating. Wall time: the
-- work is the kernel's fork (luv) or clone (loom's posix_spawn) and exec,
-- and the children's. Then run and uv.spawn again from a parent holding a
-- big heap, where fork's copy of the page tables shows.
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

-- Best wall time of each of items ({name, fn}), lib.reps rounds, the
-- order reversed every other round.
local function measure(items, what)
  local best = {}
  for _, item in ipairs(items) do best[item[1]] = math.huge end
  for round = 1, lib.reps do
    lib.note("process: %sround %d/%d (%d processes each)", what, round, lib.reps, N)
    for i = 1, #items do
      local item = items[round % 2 == 1 and i or #items + 1 - i]
      lib.settle()
      local t0 = loom.now()
      item[2]()
      best[item[1]] = math.min(best[item[1]], loom.now() - t0)
    end
  end
  return best
end

local order = { { "run", loom_run }, { "spawn", loom_spawn } }
if have_luv then
  order[#order + 1] = { "luv", luv_spawn }
  order[#order + 1] = { "luv_pipes", luv_pipes }
end
local best = measure(order, "")

-- The same with a parent that holds a big heap (HEAP_MB of strings): a
-- fork copies the parent's page tables, more the bigger it is.
local HEAP_MB = math.max(50, math.floor(500 * scale))
local big
if have_luv then
  local hold = {}
  for i = 1, HEAP_MB do hold[i] = ("x"):rep((1 << 20) - 8) .. ("%8d"):format(i) end
  big = measure({ { "run", loom_run }, { "luv", luv_spawn } }, ("with %d MB held, "):format(#hold))
end

local function rate(t) return ("%.0f/s"):format(N / t) end
local r = lib.report(("Starting `true` %d times, one after another (best of %d, wall time)"):format(N, lib.reps))
if have_luv then
  r:check("loom.process.run(\"true\") vs luv uv.spawn", rate(best.run), rate(best.luv), best.luv / best.run, ">=", 1.0)
  r:info("loom.process.spawn (no pipes) + p:wait() vs uv.spawn", rate(best.spawn), rate(best.luv),
    ("%.2fx"):format(best.luv / best.spawn))
  r:info("loom.process.run vs uv.spawn with stdout, stderr pipes read", rate(best.run), rate(best.luv_pipes),
    ("%.2fx"):format(best.luv_pipes / best.run))
  r:info(("the same, the parent holding %d MB: loom.process.run vs uv.spawn"):format(HEAP_MB), rate(big.run),
    rate(big.luv), ("%.2fx"):format(big.luv / big.run))
else
  r:skip("loom.process.run(\"true\") vs luv uv.spawn", "lua-luv is not installed (bash scripts/deps.sh)")
end
r:finish()
