-- Runs Lua source in a child lua5.4 with this checkout's loom on its paths
-- (the build named by LOOM_BUILD_DIR), for what would hang, spin or exit
-- the spec process itself.
local M = {}

-- Killed after `limit` seconds when given. Returns whether it exited 0 and
-- everything it printed (stdout and stderr).
function M.run(source, limit)
  local build = os.getenv("LOOM_BUILD_DIR") or "build"
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(source)
  f:close()
  local cmd = ("LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='%s/?.so;;' %slua5.4 %s 2>&1")
    :format(build, limit and ("timeout -k 5 %d "):format(limit) or "", path)
  local p = io.popen(cmd)
  local out = p:read("a")
  local ok = p:close()
  os.remove(path)
  return ok, out
end

return M
