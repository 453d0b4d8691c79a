-- The PostgreSQL server specs run against: LOOM_PG_URL when set (with
-- LOOM_PG_ADMIN_URL and LOOM_PG_DIR, as scripts/test.sh exports them), or
-- else a throwaway server this process starts once and stops at exit.
local M = {}

local HERE = "spec/support/pg_server.sh"
local state -- kept in the registry: busted's insulation resets package.loaded

local function sh(cmd)
  local ok = os.execute(cmd)
  if not ok then error("command failed: " .. cmd, 2) end
end

local function read(path)
  local f = assert(io.open(path))
  local s = f:read("l")
  f:close()
  return s
end

local function server()
  local reg = debug.getregistry()
  state = reg["loom.spec.pg"]
  if state then return state end
  if os.getenv("LOOM_PG_URL") then
    state = { url = os.getenv("LOOM_PG_URL"), admin_url = os.getenv("LOOM_PG_ADMIN_URL"),
              dir = os.getenv("LOOM_PG_DIR") }
  else
    local dir = os.tmpname()
    os.remove(dir)
    sh(("bash %s start %s"):format(HERE, dir))
    state = { url = read(dir .. "/url"), admin_url = read(dir .. "/admin_url"), dir = dir, owned = true }
    -- Stopped when the Lua state closes (the end of the busted run).
    state.sentinel = setmetatable({}, { __gc = function()
      os.execute(("bash %s stop %s"):format(HERE, dir))
    end })
  end
  reg["loom.spec.pg"] = state
  return state
end

function M.url() return server().url end

function M.admin_url()
  local s = server()
  if not s.admin_url then error("LOOM_PG_ADMIN_URL is not set: the fault tests need a superuser", 2) end
  return s.admin_url
end

-- Restarts the server (fast shutdown, same port): connections break.
function M.restart()
  local s = server()
  if not s.dir then error("LOOM_PG_DIR is not set: cannot restart a server this run did not start", 2) end
  sh(("bash %s restart %s"):format(HERE, s.dir))
end

return M
