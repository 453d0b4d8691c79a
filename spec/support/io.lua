-- What the stream, TCP and DNS specs share: a bounded run, a check of a
-- loom error's kind, and a connected pair of TCP streams on loopback.
local loom = require "loom"
local core = require "loom.core"
local shared = dofile("spec/support/thread.lua")
local M = {}

-- fn inside loom.run, bounded by a timeout; the loom error fn(...) raises,
-- which must be of `kind`: as the thread specs have them.
M.within, M.expect_error = shared.within, shared.expect_error

-- A listener that accepts only when asked (core._listen), on 127.0.0.1 and
-- a port the kernel picks.
function M.listener(backlog)
  local l = core._listen("tcp", "127.0.0.1", 0, backlog)
  return l, l:sockname().port
end

-- client, server: the two ends of one loopback TCP connection.
function M.pair(opts)
  local l, port = M.listener()
  local client = loom.tcp.connect("127.0.0.1", port, opts)
  local server = l:accept()
  l:close()
  return client, server
end

-- Polls cond() every 10 ms until it holds, for at most `seconds`.
function M.eventually(seconds, cond)
  local deadline = loom.now() + seconds
  while not cond() do
    if loom.now() > deadline then return false end
    loom.sleep(0.01)
  end
  return true
end

return M
