-- A database server the specs run against, as spec/support/pg.lua and
-- my.lua describe theirs: the URLs from the environment when the run has a
-- server already (scripts/test.sh exports PREFIX_URL, PREFIX_ADMIN_URL and
-- PREFIX_DIR), or else a throwaway one this process starts once with the
-- server's script and stops when the Lua state closes (the end of the
-- busted run). No server is a failure with the reason, never a silent skip.
local M = {}

-- Runs a shell command; its failure is the caller's caller's error.
function M.sh(cmd)
  local ok = os.execute(cmd)
  if not ok then error("command failed: " .. cmd .. " (see the messages above)", 3) end
end
local sh = M.sh

-- The first line of a file, nil when there is none.
function M.read(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("l")
  f:close()
  return s
end

-- name: the server's key ("pg"); env: its variables' prefix ("LOOM_PG");
-- script: the shell script that starts, restarts and stops it.
function M.new(name, env, script)
  local S = {}

  -- Kept in the registry: busted's insulation resets package.loaded.
  function S.state()
    local reg = debug.getregistry()
    local key = "loom.spec." .. name
    local state = reg[key]
    if state then return state end
    local dir
    if os.getenv(env .. "_URL") then
      dir = os.getenv(env .. "_DIR")
      state = { url = os.getenv(env .. "_URL"), admin_url = os.getenv(env .. "_ADMIN_URL"), dir = dir }
    else
      dir = os.tmpname()
      os.remove(dir)
      sh(("bash %s start %s"):format(script, dir))
      state = { url = M.read(dir .. "/url"), admin_url = M.read(dir .. "/admin_url"), dir = dir, owned = true }
      state.sentinel = setmetatable({}, { __gc = function()
        os.execute(("bash %s stop %s"):format(script, dir))
      end })
    end
    state.tls_url = dir and M.read(dir .. "/tls_url")
    reg[key] = state
    return state
  end

  function S.url() return S.state().url end

  function S.admin_url()
    local s = S.state()
    if not s.admin_url then error(env .. "_ADMIN_URL is not set: the fault specs need an administrator", 2) end
    return s.admin_url
  end

  -- The directory of a server this run can act on (restart, signal).
  function S.dir()
    local s = S.state()
    if not s.dir then error(env .. "_DIR is not set: cannot act on a server this run did not start", 3) end
    return s.dir
  end

  -- Stops and starts the server (same port and data): connections break.
  function S.restart() sh(("bash %s restart %s"):format(script, S.dir())) end

  return S
end

return M
