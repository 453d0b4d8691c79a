-- TLS streams against cqueues' TLS (lua-cqueues on lua-luaossl), in one
-- run: round trips per second of 64-byte messages over one TLS connection
-- on loopback, an echo server and its client in two processes (pinned to
-- cores 0 and 1 with taskset when there are two), the best of BENCH_REPS
-- pairs each, the implementations in turns. Both speak TLS 1.3 with the
-- same certificate (test/tls_certs.sh); loom's client verifies it,
-- cqueues' does not (a cost paid once, in the handshake).
--
--   lua5.4 bench/io-tls.lua          (from the repository root)
-- Environment: LOOM_BUILD_DIR (build-bench), BENCH_REPS (5), BENCH_SCALE
-- (1.0: multiplies the seconds each client runs).
--
-- This file is also the processes it starts:
--   lua5.4 bench/io-tls.lua serve IMPL DIR               prints "PORT p"
--   lua5.4 bench/io-tls.lua echo IMPL PORT SECONDS DIR   prints "RESULT r"
local here = arg[0]:match("^(.*)/") or "."
local lib = dofile(here .. "/lib.lua")

local MSG = ("m"):rep(64)

local function say(fmt, ...)
  io.write(fmt:format(...), "\n")
  io.flush()
end

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- ---- loom ------------------------------------------------------------------

local function loom_serve(dir)
  local loom = require "loom"
  loom.run(function()
    local done = loom.event()
    local srv = loom.tcp.listen("127.0.0.1", 0, function(s)
      while true do
        local m = s:read(64)
        if not m then break end
        s:write(m)
      end
      done:set()
    end, { tls = { cert = dir .. "/server.crt", key = dir .. "/server.key" } })
    say("PORT %d", srv.port)
    done:wait()
    srv:close(5)
  end)
end

local function loom_echo(port, seconds, dir)
  local loom = require "loom"
  loom.run(function()
    local s = loom.tcp.connect("localhost", port, { tls = { ca = dir .. "/ca.crt" } })
    local n, now = 0, loom.now
    for _ = 1, 1000 do s:write(MSG); s:read(64) end -- warm
    local t0 = now()
    local deadline = t0 + seconds
    repeat
      for _ = 1, 100 do
        s:write(MSG)
        s:read(64)
      end
      n = n + 100
    until now() >= deadline
    say("RESULT %.1f", n / (now() - t0))
    s:close()
  end)
end

-- ---- cqueues ---------------------------------------------------------------

local function cq_serve(dir)
  local cqueues = require "cqueues"
  local socket = require "cqueues.socket"
  local context = require "openssl.ssl.context"
  local ctx = context.new("TLS", true)
  ctx:setCertificate(require("openssl.x509").new(slurp(dir .. "/server.crt")))
  ctx:setPrivateKey(require("openssl.pkey").new(slurp(dir .. "/server.key")))
  local cq = cqueues.new()
  local srv = socket.listen { host = "127.0.0.1", port = 0 }
  local _, _, port = srv:localname()
  say("PORT %d", port)
  cq:wrap(function()
    local c = srv:accept()
    assert(c:starttls(ctx))
    c:setmode("b", "bn")
    while true do
      local m = c:read(64)
      if not m then break end
      c:write(m)
    end
    c:close()
    srv:close()
  end)
  assert(cq:loop())
end

local function cq_echo(port, seconds)
  local cqueues = require "cqueues"
  local socket = require "cqueues.socket"
  local cq = cqueues.new()
  cq:wrap(function()
    local c = socket.connect { host = "127.0.0.1", port = port }
    assert(c:starttls(require("openssl.ssl.context").new("TLS", false)))
    c:setmode("b", "bn")
    local n, now = 0, cqueues.monotime
    for _ = 1, 1000 do c:write(MSG); c:read(64) end
    local t0 = now()
    local deadline = t0 + seconds
    repeat
      for _ = 1, 100 do
        c:write(MSG)
        c:read(64)
      end
      n = n + 100
    until now() >= deadline
    say("RESULT %.1f", n / (now() - t0))
    c:close()
  end)
  assert(cq:loop())
end

-- ---- the processes ---------------------------------------------------------

local role = arg[1]
if role == "serve" then
  if arg[2] == "loom" then loom_serve(arg[3]) else cq_serve(arg[3]) end
  return
elseif role == "echo" then
  local port, seconds, dir = tonumber(arg[3]), tonumber(arg[4]), arg[5]
  if arg[2] == "loom" then loom_echo(port, seconds, dir) else cq_echo(port, seconds) end
  return
end

-- ---- the driver ------------------------------------------------------------

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1.0
local SECONDS = 2 * scale
local pin = os.execute("command -v taskset >/dev/null 2>&1") and
  io.popen("nproc"):read("n") >= 2
local function on(core) return pin and ("taskset -c %d "):format(core) or "" end

local dir = os.tmpname()
os.remove(dir)
assert(os.execute(("bash %s/../test/tls_certs.sh %s"):format(here, dir)), "test/tls_certs.sh failed")
local env = ("env LOOM_BUILD_DIR=%s"):format(lib.build)

-- One server and one client process: the client's figure.
local function pair(impl)
  local server = io.popen(("%s%s lua5.4 %s serve %s %s"):format(on(0), env, arg[0], impl, dir))
  local port = server:read("l"):match("PORT (%d+)")
  local client = io.popen(("%s%s lua5.4 %s echo %s %s %s %s"):format(on(1), env, arg[0], impl, port,
    SECONDS, dir))
  local out = client:read("a")
  client:close()
  server:close()
  return tonumber(out:match("RESULT ([%d.]+)"))
end

local report = lib.report("TLS echo (bench/io-tls.lua)")
local have_cq = lib.have("cqueues") and lib.have("openssl.ssl.context")
local best = {}
for _ = 1, lib.reps do
  for _, impl in ipairs(have_cq and { "loom", "cqueues" } or { "loom" }) do
    local r = pair(impl)
    assert(r, impl .. " gave no figure")
    best[impl] = math.max(best[impl] or 0, r)
  end
end
os.execute("rm -rf " .. dir)
if have_cq then
  report:info("TLS echo 64 B round trips/s vs cqueues+luaossl", lib.si(best.loom), lib.si(best.cqueues),
    ("%.2fx"):format(best.loom / best.cqueues))
else
  report:skip("TLS echo 64 B round trips/s vs cqueues", "lua-cqueues or lua-luaossl missing")
end
report:finish()
