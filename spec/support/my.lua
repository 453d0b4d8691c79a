-- The MariaDB server the MySQL specs run against: LOOM_MYSQL_URL when set
-- (with LOOM_MYSQL_ADMIN_URL and LOOM_MYSQL_DIR, as scripts/test.sh exports
-- them), or else a throwaway server this process starts once and stops at
-- exit (spec/support/server.lua, my_server.sh). No server is a failure with
-- the reason, never a silent skip.
local server = require "spec.support.server"

local my = server.new("mysql", "LOOM_MYSQL", "spec/support/my_server.sh")

local M = { url = my.url, admin_url = my.admin_url, restart = my.restart }

local sh = server.sh

function M.tls_url()
  local s = my.state()
  if not s.tls_url then error("the test server has no TLS certificate (openssl missing?)", 2) end
  return s.tls_url
end

local function server_pid()
  local dir = my.dir()
  local pid = server.read(dir .. "/pid")
  if not pid or not pid:match("^%d+$") then error("no server pid in " .. dir .. "/pid", 3) end
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

return M
