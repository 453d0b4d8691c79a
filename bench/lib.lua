-- Shared helpers of loom's benchmarks: the runtime and concurrency ones,
-- and loom's side of the database ones (bench/pg.lua, mysql.lua).
--
-- The machines these run on have 2 shared, noisy cores, so nothing here
-- trusts one absolute time: every figure is measured a few times (BENCH_REPS,
-- default 5) and the best run counts (the least disturbed one), and every
-- target is a ratio to a baseline measured in the same process, in the same
-- run, right beside loom's figure.
--
-- Exit codes the scripts share (bench/run.sh reads them):
--   0 every target met, 3 a target missed, 77 a comparison could not run
--   (a peer library is missing), anything else: the benchmark broke.
local M = {}

M.build = os.getenv("LOOM_BUILD_DIR") or "build-bench"
M.reps = tonumber(os.getenv("BENCH_REPS")) or 5

-- loom replaces coroutine.resume and coroutine.wrap with versions that let
-- its waits through; the baselines must use Lua's own, taken before.
M.raw = {
  create = coroutine.create,
  resume = coroutine.resume,
  wrap = coroutine.wrap,
  yield = coroutine.yield,
}

package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = M.build .. "/?.so;" .. package.cpath

local clock = os.clock

-- Full collections before a measurement, so one run does not pay for the
-- garbage of the previous one.
function M.settle()
  collectgarbage()
  collectgarbage()
end

-- Runs fn() `reps` times; returns the smallest CPU time (os.clock: user +
-- system time of this process, which other processes on the shared cores
-- disturb less than wall time). fn may return extra values; those of the
-- best run are returned after the time.
function M.best(fn, reps)
  local best, extra = math.huge, nil
  for _ = 1, reps or M.reps do
    M.settle()
    local t0 = clock()
    local r = table.pack(fn())
    local dt = clock() - t0
    if dt < best then best, extra = dt, r end
  end
  return best, table.unpack(extra, 1, extra.n)
end

-- The smallest wall-clock time of `reps` runs of fn(), by `now` (a clock
-- in seconds, loom.now): for work spread over threads, whose CPU times
-- os.clock would add up.
function M.best_wall(now, fn, reps)
  local best = math.huge
  for _ = 1, reps or M.reps do
    M.settle()
    local t0 = now()
    fn()
    best = math.min(best, now() - t0)
  end
  return best
end

-- Operations per second of fn() doing n operations: the best of reps runs.
function M.rate(n, fn, reps)
  local dt = M.best(fn, reps)
  return n / dt
end

-- Median of an array of numbers (sorted in place).
function M.median(xs)
  table.sort(xs)
  local n = #xs
  if n % 2 == 1 then return xs[(n + 1) // 2] end
  return (xs[n // 2] + xs[n // 2 + 1]) / 2
end

-- The value at quantile q (0..1) of an array (sorted in place).
function M.quantile(xs, q)
  table.sort(xs)
  local i = math.max(1, math.min(#xs, math.ceil(q * #xs)))
  return xs[i]
end

-- Numbers read best with a unit prefix: 12.3M, 845k.
function M.si(x)
  if x == nil then return "-" end
  local a = math.abs(x)
  if a >= 1e9 then return ("%.2fG"):format(x / 1e9) end
  if a >= 1e6 then return ("%.2fM"):format(x / 1e6) end
  if a >= 1e4 then return ("%.0fk"):format(x / 1e3) end
  if a >= 100 then return ("%.0f"):format(x) end
  return ("%.3g"):format(x)
end

-- Whether a Lua module is there; the peers are optional at run time, but
-- a missing one is reported, never skipped silently.
function M.have(name)
  local ok = pcall(require, name)
  return ok
end

-- A report: one table per script, one row per figure. A row is
--   {name, loom, peer, ratio, target, verdict}
-- as strings; M.check fills ratio and verdict from numbers.
local Report = {}
Report.__index = Report

function M.report(title)
  return setmetatable({ title = title, rows = {}, failed = 0, skipped = 0 }, Report)
end

local compare = {
  [">="] = function(a, b) return a >= b end,
  ["<="] = function(a, b) return a <= b end,
  [">"] = function(a, b) return a > b end,
  ["<"] = function(a, b) return a < b end,
}

-- A row with a target: `value` is compared with `target` by `op` (">=",
-- "<=", ">", "<"). loom_text/peer_text are what the loom and baseline
-- columns show; fmt formats value and target (default "%.2fx").
function Report:check(name, loom_text, peer_text, value, op, target, fmt)
  fmt = fmt or "%.2fx"
  local ok = assert(compare[op], "unknown comparison")(value, target)
  if not ok then self.failed = self.failed + 1 end
  self.rows[#self.rows + 1] = {
    name, loom_text, peer_text, fmt:format(value),
    op .. " " .. fmt:format(target), ok and "PASS" or "FAIL",
  }
end

-- A row for information only (a floor, another shape of the same figure).
function Report:info(name, loom_text, peer_text, ratio_text)
  self.rows[#self.rows + 1] = { name, loom_text, peer_text or "-", ratio_text or "-", "-", "info" }
end

-- A row whose comparison could not run.
function Report:skip(name, why)
  self.skipped = self.skipped + 1
  self.rows[#self.rows + 1] = { name, "-", "-", "-", "-", "SKIP: " .. why }
end

function Report:print()
  local head = { "benchmark", "loom", "baseline", "ratio", "target", "result" }
  local rows = { head }
  for _, r in ipairs(self.rows) do rows[#rows + 1] = r end
  local width = {}
  for _, r in ipairs(rows) do
    for i, cell in ipairs(r) do width[i] = math.max(width[i] or 0, #cell) end
  end
  local function line(r)
    local cells = {}
    for i, cell in ipairs(r) do cells[i] = cell .. (" "):rep(width[i] - #cell) end
    return "| " .. table.concat(cells, " | ") .. " |"
  end
  local rule = {}
  for i = 1, #head do rule[i] = ("-"):rep(width[i]) end
  io.write("\n## ", self.title, "\n\n", line(head), "\n", line(rule), "\n")
  for _, r in ipairs(self.rows) do io.write(line(r), "\n") end
  io.write("\n")
  io.flush()
end

-- Prints the table and exits with the shared code.
function Report:finish()
  self:print()
  if self.failed > 0 then os.exit(3) end
  if self.skipped > 0 then os.exit(77) end
  os.exit(0)
end

-- Progress on stderr, so stdout stays the table.
function M.note(fmt, ...)
  io.stderr:write(fmt:format(...), "\n")
  io.stderr:flush()
end

-- The line a database benchmark's shell driver reads: "RESULT name value".
function M.result(name, value)
  io.write(("RESULT %s %.1f\n"):format(name, value))
  io.flush()
end

-- The load loom's database benchmarks measure: `tasks` tasks on db, each
-- first calling warm() (connections open, statements prepared), then step()
-- over and over until `seconds` have passed; step returns how many queries
-- it ran. Returns queries per second over the measured part.
function M.db_rate(loom, tasks, seconds, warm, step)
  local total, started, stop = 0, nil, nil
  loom.run(function()
    local ids = {}
    for i = 1, tasks do ids[i] = i end
    loom.each(ids, warm)
    local now = loom.now
    started = now()
    local deadline = started + seconds
    local workers = {}
    for t = 1, tasks do
      workers[t] = loom.spawn(function()
        local n = 0
        repeat n = n + step() until now() >= deadline
        total = total + n
      end)
    end
    for t = 1, tasks do workers[t]:join() end
    stop = now()
  end)
  return total / (stop - started)
end

return M
