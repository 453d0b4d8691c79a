-- loom.thread's value codec against lua-cjson, in one run:
--   copy     a table of 100k small records ({id, name, price, tags}) copied
--            to a second Lua state and back (core._xcopy: encode, decode in
--            the new state, encode there, decode here; making the new state
--            and closing it, which frees the copy there, are inside the
--            timing), against one lua-cjson encode + decode of the same
--            table (>= 2x, the issue's target). cjson is also lossy: these
--            prices survive, but 2^53+1 and integer subtypes would not.
--   one way  the same records copied once (encode + decode), against the
--            same cjson round trip: one copy each, for information
--
--   lua5.4 bench/thread_codec.lua      (from the repository root; run.sh does it)
-- Environment: LOOM_BUILD_DIR (build-bench), BENCH_REPS (5), BENCH_SCALE (1.0:
-- multiplies the record count, for a quick look use 0.1).
local lib = dofile((arg[0]:match("^(.*)/") or ".") .. "/lib.lua")
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
local loom_s = lib.best(function() check(core._xcopy(records)) end)
-- One direction only: what a call's arguments cost on their way to a
-- worker (encode, then decode; here into the same state).
local one_way_s = lib.best(function()
  local buf = core._xcopy_encode_raw(records)
  check(core._xcopy_decode_raw(buf))
end)

local label = ("%s records"):format(lib.si(RECORDS))
if lib.have("cjson") then
  local cjson = require "cjson"
  local cjson_s = lib.best(function() check(cjson.decode(cjson.encode(records))) end)
  report:check(label .. " to another state and back vs cjson encode+decode",
    ("%.1f ms"):format(loom_s * 1e3), ("%.1f ms"):format(cjson_s * 1e3), cjson_s / loom_s, ">=", 2)
  report:info("  (one way) encode + decode vs cjson encode+decode", ("%.1f ms"):format(one_way_s * 1e3),
    ("%.1f ms"):format(cjson_s * 1e3), ("%.2fx"):format(cjson_s / one_way_s))
else
  report:skip(label .. " vs cjson", "lua-cjson is missing (apt-get install lua-cjson)")
  report:info("  (one way) encode + decode", ("%.1f ms"):format(one_way_s * 1e3))
end

report:finish()
