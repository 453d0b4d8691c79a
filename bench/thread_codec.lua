-- loom.thread's value codec against lua-cjson, in one run:
--   there and back  a table of 100k small records ({id, name, price, tags})
--            copied to a worker of a pool and back (pool:run of a function
--            that returns its argument: encode here, decode in the worker,
--            encode there, decode here), against the same trip through
--            lua-cjson (encode, decode, encode, decode): >= 2x. Wall time,
--            as the caller waits for it. cjson is also lossy: these prices
--            survive, but 2^53+1 and integer subtypes would not.
--   info     the same trip through a second state on this thread (a
--            copier from core._xpeer: the worker's share runs on the
--            caller's clock, its garbage included), and through a new state
--            made and closed for it (core._xcopy); one way (encode + decode)
--            against one cjson encode + decode; the trip against one cjson
--            encode + decode; the floor: the same records built twice by a
--            Lua loop.
--
--   lua5.4 bench/thread_codec.lua      (from the repository root; run.sh does it)
-- Environment: LOOM_BUILD_DIR (build-bench), BENCH_REPS (5), BENCH_SCALE (1.0:
-- multiplies the record count, for a quick look use 0.1).
local lib = dofile((arg[0]:match("^(.*)/") or ".") .. "/lib.lua")
local loom = require "loom"
local core = require "loom.core"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1.0
local RECORDS = math.max(1, math.floor(100000 * scale))

local report = lib.report("thread codec (bench/thread_codec.lua)")

local records = {}
for i = 1, RECORDS do
  records[i] = { id = i, name = "item" .. i, price = i / 4, tags = { "a", "b" } }
end

-- The copy must be the same table, or the timing means nothing.
local function check(copy)
  assert(#copy == RECORDS)
  for _, i in ipairs({ 1, RECORDS // 2 + 1, RECORDS }) do
    local a, b = records[i], copy[i]
    assert(a.id == b.id and a.name == b.name and a.price == b.price and
      b.tags[1] == "a" and b.tags[2] == "b" and #b.tags == 2)
  end
end

lib.note("records: %d per run, best of %d", RECORDS, lib.reps)
local function echo(t) return t end
local pool_s
loom.run(function()
  local pool = loom.thread.pool { size = 1 }
  pool:run(echo, { 1 }) -- the worker's state is up before the clock runs
  pool_s = lib.best_wall(loom.now, function() check(pool:run(echo, records)) end)
  pool:close()
end)
local copy = core._xpeer()
local loom_s = lib.best(function() check(copy(records)) end)
local fresh_s = lib.best(function() check(core._xcopy(records)) end)
-- One direction only: what a call's arguments cost on their way to a
-- worker (encode, then decode; here into the same state).
local one_way_s = lib.best(function()
  local buf = core._xcopy_encode_raw(records)
  check(core._xcopy_decode_raw(buf))
end)

-- The floor of any copy: building the same records in Lua, twice (a trip
-- builds a copy at each end), from strings that exist already.
local names = {}
for i = 1, RECORDS do names[i] = records[i].name end
local function build()
  local t = {}
  for i = 1, RECORDS do t[i] = { id = i, name = names[i], price = i / 4, tags = { "a", "b" } } end
  return t
end
local floor_s = lib.best(function() check(build()); check(build()) end)

local label = ("%s records"):format(lib.si(RECORDS))
local function ms(s) return ("%.1f ms"):format(s * 1e3) end
if lib.have("cjson") then
  local cjson = require "cjson"
  local encode, decode = cjson.encode, cjson.decode
  -- The same trip through JSON: encoded here, decoded there, encoded
  -- there, decoded here (both ends in this state: cjson keeps no state).
  -- Wall time, as the worker's trip is timed.
  local cjson_back_s = lib.best_wall(loom.now, function() check(decode(encode(decode(encode(records))))) end)
  local cjson_s = lib.best(function() check(decode(encode(records))) end)
  report:check(label .. " to a worker and back vs the same through cjson",
    ms(pool_s), ms(cjson_back_s), cjson_back_s / pool_s, ">=", 2)
  report:info("  (there and back) through a second state on this thread, vs the same",
    ms(loom_s), ms(cjson_back_s), ("%.2fx"):format(cjson_back_s / loom_s))
  report:info("  (one way) encode + decode vs one cjson encode + decode",
    ms(one_way_s), ms(cjson_s), ("%.2fx"):format(cjson_s / one_way_s))
  report:info("  (there and back) through a new state each time, vs the same",
    ms(fresh_s), ms(cjson_back_s), ("%.2fx"):format(cjson_back_s / fresh_s))
  report:info("  (there and back) to a worker vs one cjson encode + decode", ms(pool_s), ms(cjson_s),
    ("%.2fx"):format(cjson_s / pool_s))
  report:info("  (floor) building the records twice in Lua", ms(pool_s), ms(floor_s),
    ("%.2fx"):format(floor_s / pool_s))
else
  report:skip(label .. " vs cjson", "lua-cjson is missing (apt-get install lua-cjson)")
  report:info("  (there and back) to a worker", ms(pool_s))
  report:info("  (one way) encode + decode", ms(one_way_s))
  report:info("  (there and back) through a new state each time", ms(fresh_s))
  report:info("  (floor) building the records twice in Lua", ms(pool_s), ms(floor_s),
    ("%.2fx"):format(floor_s / pool_s))
end

report:finish()
