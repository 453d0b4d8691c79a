-- What the database specs share: SQLite files in the temp directory, a
-- bounded run, catching an error, and table names of their own.
local assert = require "luassert"

local M = {}

-- A fresh path for an SQLite file (nothing there yet).
function M.tmpfile()
  local path = os.tmpname()
  os.remove(path)
  return path .. ".db"
end

-- Removes an SQLite file and the files SQLite keeps beside it.
function M.remove_db(path)
  os.remove(path); os.remove(path .. "-wal"); os.remove(path .. "-shm"); os.remove(path .. "-journal")
end

-- Every case runs inside loom.run with a bound, so a hang is a failure with
-- a reason rather than a stuck run. Generous: sanitizers on a loaded
-- two-core machine are slow, and no case asserts a speed.
M.BOUND = 240
function M.run(fn)
  -- The loom the calling spec has: busted reloads modules per spec file.
  local loom = require "loom"
  return loom.run(function() return loom.timeout(M.BOUND, fn) end)
end

-- fn(...) must fail: returns its error.
function M.catch(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error, got success")
  return e
end

-- fn(...) must fail with an error table: returns it.
function M.catch_table(fn, ...)
  local e = M.catch(fn, ...)
  assert.equal("table", type(e), "a loom error table expected, got " .. tostring(e))
  return e
end

-- A table name no other run on a shared server uses: prefix, a random
-- part and a count.
local names = 0
function M.unique(prefix)
  names = names + 1
  return ("%s_%d_%d"):format(prefix, math.random(1, 1e6), names)
end

return M
