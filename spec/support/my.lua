-- The MariaDB server the MySQL specs run against: LOOM_MYSQL_URL when set
-- (with LOOM_MYSQL_ADMIN_URL and LOOM_MYSQL_DIR, as scripts/test.sh exports
-- them), or else a throwaway server this process starts once and stops at
-- exit. No server is a failure with the reason, never a silent skip.
local M = {}

local HERE = "spec/support/my_server.sh"

local function sh(cmd)
  local ok = os.execute(cmd)
  if not ok then error("command failed: " .. cmd .. " (see the messages above)", 3) end
end

local function read(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("l")
  f:close()
  return s
end

local function server()
  -- Kept in the registry: busted's insulation resets package.loaded.
  local reg = debug.getregistry()
  local state = reg["loom.spec.mysql"]
  if state then return state end
  if os.getenv("LOOM_MYSQL_URL") then
    local dir = os.getenv("LOOM_MYSQL_DIR")
    state = { url = os.getenv("LOOM_MYSQL_URL"), admin_url = os.getenv("LOOM_MYSQL_ADMIN_URL"),
              dir = dir, tls_url = dir and read(dir .. "/tls_url") }
  else
    local dir = os.tmpname()
    os.remove(dir)
    sh(("bash %s start %s"):format(HERE, dir))
    state = { url = read(dir .. "/url"), admin_url = read(dir .. "/admin_url"),
              tls_url = read(dir .. "/tls_url"), dir = dir, owned = true }
    state.sentinel = setmetatable({}, { __gc = function()
      os.execute(("bash %s stop %s"):format(HERE, dir))
    end })
  end
  reg["loom.spec.mysql"] = state
  return state
end

function M.url() return server().url end

function M.admin_url()
  local s = server()
  if not s.admin_url then error("LOOM_MYSQL_ADMIN_URL is not set: the fault specs need an administrator", 2) end
  return s.admin_url
end

function M.tls_url()
  local s = server()
  if not s.tls_url then error("the test server has no TLS certificate (openssl missing?)", 2) end
  return s.tls_url
end

local function server_pid()
  local s = server()
  if not s.dir then error("LOOM_MYSQL_DIR is not set: cannot signal a server this run did not start", 3) end
  local pid = read(s.dir .. "/pid")
  if not pid or not pid:match("^%d+$") then error("no server pid in " .. s.dir .. "/pid", 3) end
  return pid
end

-- Freezes the server (SIGSTOP): connections stay open, nothing answers.
-- Always thaw it again; my_server.sh thaws it before stopping it too.
function M.freeze() sh("kill -STOP " .. server_pid()) end

-- As root the server runs under runuser, which stops itself when its child
-- stops and would stay stopped (with the server as its zombie once it
-- exits): wake it too. The tools run without the sanitizer preloaded into
-- this process (ps hangs under it).
function M.thaw()
  local pid = server_pid()
  sh(("unset LD_PRELOAD ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS; "
    .. "kill -CONT %s; parent=$(ps -o ppid= -p %s | tr -d ' '); "
    .. "if [ -n \"$parent\" ] && [ \"$(ps -o comm= -p \"$parent\")\" = runuser ]; then kill -CONT \"$parent\"; fi")
    :format(pid, pid))
end

-- Stops and starts the server (same port and data): connections break.
function M.restart()
  local s = server()
  if not s.dir then error("LOOM_MYSQL_DIR is not set: cannot restart a server this run did not start", 2) end
  sh(("bash %s restart %s"):format(HERE, s.dir))
end

return M
