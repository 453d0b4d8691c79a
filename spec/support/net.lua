-- Loopback stand-ins for unreachable or silent servers, and the resolver
-- shim, shared by the specs that test connecting (hosts, timeouts).
local M = {}

-- Helper processes run without a sanitizer runtime preloaded into the run.
M.PLAIN = "env -u LD_PRELOAD -u ASAN_OPTIONS -u LSAN_OPTIONS "

-- A port on 127.0.0.1 nothing listens on: connecting there is refused.
function M.closed_port()
  for _ = 1, 50 do
    local p = math.random(20000, 60000)
    if not os.execute((M.PLAIN .. "bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d' 2>/dev/null"):format(p)) then return p end
  end
  error("no closed port found")
end

-- spec/support/mute_server.pl: "silent" never accepts (the TCP connect
-- succeeds, no server's first word comes), "login" lets any MySQL login in
-- and then never answers. Returns its port and a function that stops it.
function M.mute_server(mode, addr, port)
  addr = addr or "127.0.0.1"
  local h = io.popen(("%s perl spec/support/mute_server.pl %s %s %d"):format(M.PLAIN, mode, addr, port or 0))
  local line = h:read("l")
  h:close()
  local got, pid = (line or ""):match("^(%d+) (%d+)$")
  assert(got, "spec/support/mute_server.pl did not start on " .. addr)
  return tonumber(got), function() os.execute("kill " .. pid .. " 2>/dev/null") end
end

-- Builds spec/support/dual_host.c into dir and returns the LD_PRELOAD value
-- for a child that should resolve through it (loom-dual.test: ::1 then
-- 127.0.0.1; loom-pair.test: 127.0.0.2 then 127.0.0.1), keeping whatever
-- this run preloads (a sanitizer runtime) first.
function M.dual_host_preload(dir)
  local so = dir .. "/dual_host.so"
  assert(os.execute((M.PLAIN .. "gcc -shared -fPIC -o %s spec/support/dual_host.c -ldl"):format(so)))
  return ((os.getenv("LD_PRELOAD") or "") .. " " .. so):gsub("^ ", "")
end

return M
