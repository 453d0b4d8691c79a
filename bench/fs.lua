-- Reading a big file in 64 KiB chunks: loom.fs.open():read(65536) in a
-- task, beside io.open():read(65536) in a plain loop, on the same file
-- (in the page cache for both: written just before, read once to warm),
-- best wall time of BENCH_REPS rounds each, alternating. While loom reads,
-- a 10 ms ticker runs in another task; its worst lateness is reported.
local lib = require "bench.lib"
local loom = require "loom"

local dir = assert(os.getenv("DIR"), "run through bench/fs.sh")
local scale = tonumber(os.getenv("BENCH_SCALE")) or 1
local SIZE = math.floor((1 << 30) * scale) // 65536 * 65536
local CHUNK = 65536
local path = dir .. "/big.bin"

lib.note("fs: writing a %d MiB file", SIZE >> 20)
do
  local f = assert(io.open(path, "wb"))
  local block = ("0123456789abcdef"):rep(CHUNK // 16)
  for _ = 1, SIZE // CHUNK do f:write(block) end
  f:close()
end

-- Reads f to its end in chunks: a Lua file or a loom one, the same calls.
local function drain(f)
  local n = 0
  while true do
    local s = f:read(CHUNK)
    if not s then break end
    n = n + #s
  end
  f:close()
  assert(n == SIZE)
end

local function plain()
  drain(assert(io.open(path, "rb")))
end

local late_worst = 0
local function with_loom()
  loom.run(function()
    local late = 0
    local ticker = loom.spawn(function()
      while true do
        local t0 = loom.now()
        loom.sleep(0.01)
        late = math.max(late, loom.now() - t0 - 0.01)
      end
    end)
    drain(loom.fs.open(path))
    ticker:cancel()
    late_worst = math.max(late_worst, late)
  end)
end

plain() -- the page cache, for both
local best = { io = math.huge, loom = math.huge }
for round = 1, lib.reps do
  lib.note("fs: round %d/%d", round, lib.reps)
  local order = round % 2 == 1 and { "io", "loom" } or { "loom", "io" }
  for _, which in ipairs(order) do
    lib.settle()
    local t0 = loom.now()
    if which == "io" then plain() else with_loom() end
    best[which] = math.min(best[which], loom.now() - t0)
  end
end
os.remove(path)

-- The same ticker with nothing else to do, as long: what the machine's
-- scheduling alone makes it late by.
local idle_late = 0
loom.run(function()
  local stop = loom.now() + math.max(1, best.loom)
  while loom.now() < stop do
    local t0 = loom.now()
    loom.sleep(0.01)
    idle_late = math.max(idle_late, loom.now() - t0 - 0.01)
  end
end)

local mib = SIZE / (1 << 20)
local r = lib.report(("Reading a %.0f MiB file in 64 KiB chunks (best of %d, wall time)"):format(mib, lib.reps))
r:check("loom.fs read(65536) vs io.read(65536)", ("%.0f MiB/s"):format(mib / best.loom),
  ("%.0f MiB/s"):format(mib / best.io), best.io / best.loom, ">=", 0.8)
r:info("worst lateness of a 10 ms ticker while loom reads", ("%.1f ms"):format(late_worst * 1000),
  ("%.1f ms idle"):format(idle_late * 1000))
r:finish()
