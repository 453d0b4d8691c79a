-- What the loom.thread specs share: a bounded run, a check of a loom
-- error's kind, and a blocking C call for a worker.
local loom = require "loom"
local M = {}

-- fn inside loom.run, bounded by a timeout.
function M.within(seconds, fn)
  return loom.run(function() return loom.timeout(seconds, fn) end)
end

-- The loom error fn(...) raises, which must be of `kind`.
function M.expect_error(kind, fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error, but the call succeeded")
  assert(type(err) == "table", "error is not a table: " .. tostring(err))
  assert(kind == err.kind, "wrong kind: " .. tostring(err))
  return err
end

-- A blocking C call in a worker (the thread sleeps in uv_sleep): what
-- os.execute or a synchronous library does, without a process (the
-- ThreadSanitizer run cannot start one). It crosses as a copy.
function M.block(seconds) require("loom.core")._block(seconds) end

return M
