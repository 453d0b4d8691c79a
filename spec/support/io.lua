-- What the stream, TCP, DNS, HTTP and file specs share: a bounded run, a
-- check of a loom error's kind, a connected pair of TCP streams on
-- loopback, a count of descriptors, and a scratch directory per spec.
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

-- Descriptors this process holds (the count's own pipe included, alike
-- each time).
function M.fd_count()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("n")
  f:close()
  local h = io.popen("ls /proc/" .. pid .. "/fd | wc -l")
  local n = tonumber(h:read("l"))
  h:close()
  return n
end

-- Removes path and everything under it.
function M.remove_all(path)
  local fs = loom.fs
  local ok, st = pcall(fs.stat, path, { follow = false })
  if not ok then return end
  if st.type == "directory" then
    for _, e in ipairs(fs.list(path)) do M.remove_all(path .. "/" .. e.name) end
  end
  fs.remove(path)
end

-- A fresh empty directory (remove_all it after the spec).
function M.new_dir()
  local dir = os.tmpname()
  os.remove(dir)
  loom.fs.mkdir(dir)
  return dir
end

return M
