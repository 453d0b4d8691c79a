-- loom's TCP streams against their peers, in one run (ratios side by side):
--   echo      one connection, 64-byte messages, round trips per second,
--             client and server in one process: loom >= luv (lua-luv),
--             loom >= 2x cqueues (lua-cqueues). For information: the user
--             CPU time per round trip (the library's own share; the
--             kernel's, most of a loopback round trip, is the same for
--             all), and the rate with the two ends in two processes.
--   bulk      bytes pushed over one loopback connection and read by the
--             server: loom >= 0.8x luv and >= 0.8x socat (C at both ends).
--   idle      connections held open, each with a handler task waiting to
--             read: the server's resident growth per connection <= 4 KiB
--             (the kernel's own socket memory is not in it); luv's beside
--             it for information.
-- Beside them, for information: the C floor of the one-process echo
-- (bench/echo_floor.c: a write, an epoll_wait and a read a side, nothing
-- else) and the least a Lua coroutine library can do for it
-- (bench/echo_least.c: raw epoll, no timeouts, no cancellation), which
-- bound what any library of loom's kind can reach.
-- Each figure comes from its own process or pair of processes (a server
-- pinned to core 0, its client to core 1, with taskset when there are two
-- cores); the best of BENCH_REPS counts, the implementations in turns.
--
--   bash bench/io.sh        (raises the descriptor limit first; run.sh runs it)
-- Environment: LOOM_BUILD_DIR (build-bench, where io.sh also builds the
-- floor and echo_least.so), BENCH_REPS (5), BENCH_SCALE (1.0), BENCH_IDLE
-- (10000: idle connections, fewer if the limit says so).
--
-- This file is also every process the driver starts:
--   lua5.4 bench/io.lua serve echo|bulk|idle IMPL [N]   prints "PORT p"
--   lua5.4 bench/io.lua echo IMPL PORT N                 prints "RESULT r"
--   lua5.4 bench/io.lua echo1 IMPL N                     both ends, "RESULT r"
--                                       (IMPL least: bench/echo_least.c)
--   lua5.4 bench/io.lua bulk IMPL PORT BYTES             prints "RESULT r"
--   lua5.4 bench/io.lua hold PORT N                      N idle connections
local here = arg[0]:match("^(.*)/") or "."
local lib = dofile(here .. "/lib.lua")

local MSG = ("m"):rep(64)
local CHUNK = ("b"):rep(64 * 1024)

local function say(fmt, ...)
  io.write(fmt:format(...), "\n")
  io.flush()
end

-- This process's user CPU time in seconds (/proc/self/stat, in clock
-- ticks of 10 ms: the echo runs long enough for that).
local function user_cpu()
  local f = assert(io.open("/proc/self/stat"))
  local stat = f:read("a")
  f:close()
  local after = stat:match("%) (.*)$")
  local fields = {}
  for x in after:gmatch("%S+") do fields[#fields + 1] = x end
  return tonumber(fields[12]) / 100 -- utime, the 14th field of the line
end

-- An echo's result: round trips per second, and user CPU microseconds per
-- round trip (the library's share: the kernel's is the same for all).
local function echo_result(n, t0, cpu0, now)
  say("RESULT %.1f %.3f", n / (now - t0), (user_cpu() - cpu0) / n * 1e6)
end

local function rss_bytes()
  local f = assert(io.open("/proc/self/statm"))
  local _, resident = f:read("n", "n")
  f:close()
  return resident * 4096
end

-- ---- loom ------------------------------------------------------------------

-- Echoes 64-byte messages until EOF (loom's handler, and the least
-- library's server coroutine).
local function echo_handler(s)
  while true do
    local m = s:read(64)
    if not m then return end
    s:write(m)
  end
end

-- n round trips on stream s after a warm-up, timed by now(), the result
-- said: loom's and the least library's streams read and write alike.
local function timed_echo(s, n, now)
  for _ = 1, 1000 do s:write(MSG); s:read(64) end
  local t0, cpu0 = now(), user_cpu()
  for _ = 1, n do
    s:write(MSG)
    s:read(64)
  end
  echo_result(n, t0, cpu0, now())
end

local function loom_echo_client(loom, port, n)
  local s = loom.tcp.connect("127.0.0.1", port)
  timed_echo(s, n, loom.now)
  s:close()
end

local function loom_serve(kind, n)
  local loom = require "loom"
  loom.run(function()
    local done = loom.event()
    local base
    local srv
    srv = loom.tcp.listen("127.0.0.1", 0, function(s)
      if kind == "echo" then
        echo_handler(s)
        done:set()
      elseif kind == "bulk" then
        local got = 0
        while true do
          local d = s:read(65536)
          if not d then break end
          got = got + #d
        end
        s:write(got, "\n")
        done:set()
      else
        s:read("l") -- idle until the driver ends it
      end
    end, { backlog = 4096 })
    if kind == "idle" then
      collectgarbage()
      collectgarbage()
      base = rss_bytes()
    end
    say("PORT %d", srv.port)
    if kind == "idle" then
      while srv:connections() < n do loom.sleep(0.01) end
      collectgarbage()
      collectgarbage()
      say("RESULT %.1f", (rss_bytes() - base) / n)
      srv:close(0) -- cancels every handler: the client sees EOF everywhere
    else
      done:wait()
      srv:close(5)
    end
  end)
end

-- Both ends in one process: what one round trip costs the library, the
-- kernel's loopback aside (two processes on two cores measure mostly the
-- wake-ups between them).
local function loom_echo1(n)
  local loom = require "loom"
  loom.run(function()
    local srv = loom.tcp.listen("127.0.0.1", 0, echo_handler)
    loom_echo_client(loom, srv.port, n)
    srv:close(5)
  end)
end

local function loom_echo(port, n)
  local loom = require "loom"
  loom.run(function() loom_echo_client(loom, port, n) end)
end

local function loom_bulk(port, bytes)
  local loom = require "loom"
  loom.run(function()
    local t0 = loom.now()
    local s = loom.tcp.connect("127.0.0.1", port)
    for _ = 1, bytes // #CHUNK do s:write(CHUNK) end
    s:shutdown()
    assert(tonumber(s:read("l")) == bytes)
    say("RESULT %.1f", bytes / (loom.now() - t0) / 1e6)
    s:close()
  end)
end

-- ---- luv -------------------------------------------------------------------

-- A connection that echoes what it reads until EOF, then closes (and
-- closes srv).
local function luv_echo_conn(c, srv)
  c:read_start(function(err, data)
    assert(not err, err)
    if data then c:write(data) else c:close(); srv:close() end
  end)
end

-- n round trips after a warm-up on the loop, the result said as they end.
local function luv_echo_client(uv, port, n)
  local c = uv.new_tcp()
  c:nodelay(true)
  local left, got, t0, cpu0, warm = n, 0, nil, nil, 1000
  c:connect("127.0.0.1", port, function(err)
    assert(not err, err)
    c:read_start(function(_, data)
      got = got + #data
      if got < 64 then return end
      got = got - 64
      if warm > 0 then
        warm = warm - 1
        if warm == 0 then t0, cpu0 = uv.hrtime(), user_cpu() end
      else
        left = left - 1
        if left == 0 then
          echo_result(n, t0 / 1e9, cpu0, uv.hrtime() / 1e9)
          c:close()
          return
        end
      end
      c:write(MSG)
    end)
    c:write(MSG)
  end)
end

local function luv_serve(kind, n)
  local uv = require "luv"
  local srv = uv.new_tcp()
  assert(srv:bind("127.0.0.1", 0))
  local held, base = 0, nil
  local conns = {}
  assert(srv:listen(4096, function()
    local c = uv.new_tcp()
    srv:accept(c)
    c:nodelay(true)
    if kind == "echo" then
      luv_echo_conn(c, srv)
    elseif kind == "bulk" then
      local got = 0
      c:read_start(function(_, data)
        if data then
          got = got + #data
        else
          c:write(got .. "\n", function() c:close(); srv:close() end)
        end
      end)
    else
      conns[c] = true
      c:read_start(function() end)
      held = held + 1
      if held == n then
        collectgarbage()
        collectgarbage()
        say("RESULT %.1f", (rss_bytes() - base) / n)
        for k in pairs(conns) do k:close() end
        srv:close()
      end
    end
  end))
  if kind == "idle" then
    collectgarbage()
    collectgarbage()
    base = rss_bytes()
  end
  say("PORT %d", srv:getsockname().port)
  uv.run()
end

local function luv_echo(port, n)
  local uv = require "luv"
  luv_echo_client(uv, port, n)
  uv.run()
end

local function luv_echo1(n)
  local uv = require "luv"
  local srv = uv.new_tcp()
  assert(srv:bind("127.0.0.1", 0))
  assert(srv:listen(128, function()
    local c = uv.new_tcp()
    srv:accept(c)
    c:nodelay(true)
    luv_echo_conn(c, srv)
  end))
  luv_echo_client(uv, srv:getsockname().port, n)
  uv.run()
end

local function luv_bulk(port, bytes)
  local uv = require "luv"
  local c = uv.new_tcp()
  local t0 = uv.hrtime()
  c:connect("127.0.0.1", port, function(err)
    assert(not err, err)
    local left = bytes // #CHUNK
    -- A window of writes in flight, as a libuv program writes a stream it
    -- cannot hold in memory.
    local function more()
      while left > 0 and c:write_queue_size() < 256 * 1024 do
        left = left - 1
        c:write(CHUNK, more)
      end
      if left == 0 then
        left = -1
        c:shutdown()
      end
    end
    more()
    local line = ""
    c:read_start(function(_, data)
      if data then line = line .. data; return end
      assert(tonumber(line) == bytes)
      say("RESULT %.1f", bytes / ((uv.hrtime() - t0) / 1e9) / 1e6)
      c:close()
    end)
  end)
  uv.run()
end

-- N idle connections to PORT, held until the server closes them all.
local function hold(port, n)
  local uv = require "luv"
  local closed, started = 0, 0
  local function one()
    started = started + 1
    local c = uv.new_tcp()
    c:connect("127.0.0.1", port, function(err)
      assert(not err, err)
      if started < n then one() end
      c:read_start(function(_, data)
        if data then return end
        c:close()
        closed = closed + 1
      end)
    end)
  end
  for _ = 1, math.min(64, n) do one() end
  uv.run()
  assert(closed == n)
end

-- ---- cqueues -----------------------------------------------------------------

-- Echoes 64-byte messages on the next connection to srv until EOF.
local function cq_echo_server(srv)
  local con = srv:accept()
  con:setmode("b", "bn")
  while true do
    local m = con:read(64)
    if not m then break end
    con:write(m)
    con:flush()
  end
  con:close()
  srv:close()
end

local function cq_echo_client(port, n)
  local socket = require "cqueues.socket"
  local monotime = require("cqueues").monotime
  local con = socket.connect { host = "127.0.0.1", port = port, nodelay = true }
  con:setmode("b", "bn")
  for _ = 1, 1000 do con:write(MSG); con:flush(); con:read(64) end
  local t0, cpu0 = monotime(), user_cpu()
  for _ = 1, n do
    con:write(MSG)
    con:flush()
    con:read(64)
  end
  echo_result(n, t0, cpu0, monotime())
  con:close()
end

local function cq_listen()
  local srv = require("cqueues.socket").listen("127.0.0.1", 0)
  srv:listen()
  local _, _, port = srv:localname()
  return srv, port
end

local function cq_serve(kind)
  assert(kind == "echo")
  local cq = require("cqueues").new()
  local srv, port = cq_listen()
  say("PORT %d", port)
  cq:wrap(cq_echo_server, srv)
  assert(cq:loop())
end

local function cq_echo(port, n)
  local cq = require("cqueues").new()
  cq:wrap(cq_echo_client, port, n)
  assert(cq:loop())
end

local function cq_echo1(n)
  local cq = require("cqueues").new()
  local srv, port = cq_listen()
  cq:wrap(cq_echo_server, srv)
  cq:wrap(cq_echo_client, port, n)
  assert(cq:loop())
end

-- ---- the least coroutine library (bench/echo_least.c) ----------------------

local function least_echo1(n)
  local least = require "echo_least"
  local client, server = least.pair()
  local echo = coroutine.create(function() echo_handler(server) end)
  local talk = coroutine.create(function() timed_echo(client, n, least.now) end)
  least.run(echo, talk)
end

-- ---- roles -------------------------------------------------------------------

local serve = { loom = loom_serve, luv = luv_serve, cqueues = cq_serve }
local echo = { loom = loom_echo, luv = luv_echo, cqueues = cq_echo }
local bulk = { loom = loom_bulk, luv = luv_bulk }
local echo1 = { loom = loom_echo1, luv = luv_echo1, cqueues = cq_echo1, least = least_echo1 }

local role = arg[1]
if role == "serve" then
  return serve[arg[3]](arg[2], tonumber(arg[4]))
elseif role == "echo" then
  return echo[arg[2]](tonumber(arg[3]), tonumber(arg[4]))
elseif role == "bulk" then
  return bulk[arg[2]](tonumber(arg[3]), tonumber(arg[4]))
elseif role == "echo1" then
  return echo1[arg[2]](tonumber(arg[3]))
elseif role == "hold" then
  return hold(tonumber(arg[2]), tonumber(arg[3]))
end

-- ---- the driver -----------------------------------------------------------------

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1.0
local lua = os.getenv("LUA") or "lua5.4"
local self = arg[0]
local pinned = tonumber(io.popen("nproc"):read("l")) >= 2 and io.popen("command -v taskset"):read("l")
local function on(core, cmd)
  return pinned and ("taskset -c %d %s"):format(core, cmd) or cmd
end

-- Starts a server role; returns its handle and port.
local function start_server(args)
  local h = io.popen(on(0, ("%s %s serve %s"):format(lua, self, args)), "r")
  local line = h:read("l")
  local port = line and tonumber(line:match("^PORT (%d+)"))
  assert(port, "the server did not start: " .. tostring(line))
  return h, port
end

local function result_of(h, what)
  local out = h:read("a")
  h:close()
  local r, extra = out:match("RESULT ([%d.]+) ?([%d.]*)")
  assert(r, what .. " gave no result: " .. out)
  return tonumber(r), tonumber(extra)
end

local function run_client(cmd)
  return result_of(io.popen(on(1, cmd), "r"), cmd)
end

local function pair(server_args, client_fmt)
  local h, port = start_server(server_args)
  local r = run_client(client_fmt:format(port))
  h:read("a")
  h:close()
  return r
end

local have = { loom = true, luv = lib.have("luv"), cqueues = lib.have("cqueues") }
local have_socat = io.popen("command -v socat"):read("l") ~= nil
local report = lib.report("loom TCP streams (bench/io.lua)")

-- Echo: both ends in one process (the targets), and in two processes on
-- two cores (information: there the wake-ups between them dominate).
local n_echo = math.max(2000, math.floor(100000 * scale))
local n_apart = math.max(1000, math.floor(10000 * scale))
local best, apart, cpu = {}, {}, {}
local floor = os.getenv("ECHO_FLOOR")
have.floor = floor ~= nil
have.least = package.searchpath("echo_least", package.cpath) ~= nil
for rep = 1, lib.reps do
  lib.note("echo round %d/%d", rep, lib.reps)
  for _, impl in ipairs({ "loom", "luv", "cqueues", "least", "floor" }) do
    if have[impl] then
      local cmd = impl == "floor" and ("%s %d"):format(floor, n_echo)
        or ("%s %s echo1 %s %d"):format(lua, self, impl, n_echo)
      local r, us = run_client(cmd)
      best[impl] = math.max(best[impl] or 0, r)
      cpu[impl] = math.min(cpu[impl] or math.huge, us)
      if impl ~= "least" and impl ~= "floor" then
        local two = pair("echo " .. impl, ("%s %s echo %s %%d %d"):format(lua, self, impl, n_apart))
        apart[impl] = math.max(apart[impl] or 0, two)
      end
    end
  end
end
local function rate(x) return lib.si(x) .. " rt/s" end
for _, peer in ipairs({ { "luv", 1.0 }, { "cqueues", 2.0 } }) do
  local name = ("echo 64 B, 1 connection: loom / %s"):format(peer[1])
  if best[peer[1]] then
    report:check(name, rate(best.loom), rate(best[peer[1]]), best.loom / best[peer[1]], ">=", peer[2])
    report:info(name .. ", user CPU per round trip", ("%.2f us"):format(cpu.loom),
      ("%.2f us"):format(cpu[peer[1]]), ("%.2fx"):format(cpu[peer[1]] / math.max(cpu.loom, 1e-9)))
    report:info(name .. ", two processes", rate(apart.loom), rate(apart[peer[1]]),
      ("%.2fx"):format(apart.loom / apart[peer[1]]))
  else
    report:skip(name, "lua-" .. peer[1] .. " is not installed")
  end
end
-- What bounds the targets: a library's distance from the floor and from
-- the least coroutine library, and the least one's own ratio to cqueues,
-- the most any library of loom's kind could show there.
local bounds = {
  { "loom", "floor", "C floor (bench/echo_floor.c)" },
  { "loom", "least", "least coroutine library (bench/echo_least.c)" },
  { "least", "cqueues", "the least coroutine library / cqueues" },
}
for _, b in ipairs(bounds) do
  local a, z, what = b[1], b[2], b[3]
  local name = "echo 64 B, 1 connection: " .. (a == "loom" and "loom / " or "") .. what
  if best[a] and best[z] then
    report:info(name, rate(best[a]), rate(best[z]), ("%.2fx"):format(best[a] / best[z]))
  else
    report:skip(name, (best[a] and z or a) .. " was not built or installed (bash bench/io.sh builds them)")
  end
end

-- Bulk.
local bytes = math.max(16, math.floor(512 * scale)) * 1024 * 1024
local bbest = {}
local function free_port()
  local loom = require "loom"
  local l = require("loom.core")._listen("tcp", "127.0.0.1", 0)
  local port = l:sockname().port
  l:close()
  loom.run(function() loom.sleep(0) end)
  return port
end
for rep = 1, lib.reps do
  lib.note("bulk round %d/%d", rep, lib.reps)
  for _, impl in ipairs({ "loom", "luv" }) do
    if have[impl] then
      local r = pair("bulk " .. impl, ("%s %s bulk %s %%d %d"):format(lua, self, impl, bytes))
      bbest[impl] = math.max(bbest[impl] or 0, r)
    end
  end
  if have_socat then
    local port = free_port()
    local listen = ("socat -u -b 65536 TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr OPEN:/dev/null"):format(port)
    local srv = io.popen(on(0, listen), "r")
    os.execute("sleep 0.2")
    local h = io.popen(on(1, ("bash -c 't0=$(date +%%s.%%N); socat -u -b 65536 OPEN:/dev/zero,readbytes=%d "
      .. "TCP:127.0.0.1:%d; echo T $t0 $(date +%%s.%%N)'"):format(bytes, port)), "r")
    local out = h:read("a")
    h:close()
    local t0, t1 = out:match("T ([%d.]+) ([%d.]+)")
    assert(t0, "socat gave no time: " .. out)
    local r = bytes / (tonumber(t1) - tonumber(t0)) / 1e6
    srv:read("a")
    srv:close()
    bbest.socat = math.max(bbest.socat or 0, r)
  end
end
local function mbs(x) return ("%.0f MB/s"):format(x) end
for _, peer in ipairs({ "luv", "socat" }) do
  local name = ("bulk %d MiB over loopback: loom / %s"):format(bytes // 2 ^ 20, peer)
  if bbest[peer] then
    report:check(name, mbs(bbest.loom), mbs(bbest[peer]), bbest.loom / bbest[peer], ">=", 0.8)
  else
    report:skip(name, peer .. " is not installed")
  end
end

-- Idle connections.
local n = tonumber(os.getenv("BENCH_IDLE")) or 10000
local ibest = {}
for _, impl in ipairs({ "loom", "luv" }) do
  if have[impl] then
    lib.note("idle: %d connections on %s", n, impl)
    local h, port = start_server(("idle %s %d"):format(impl, n))
    local client = io.popen(on(1, ("%s %s hold %d %d"):format(lua, self, port, n)), "r")
    ibest[impl] = result_of(h, "idle server " .. impl)
    client:read("a")
    client:close()
  end
end
local function kb(x) return ("%.2f KiB"):format(x / 1024) end
report:check(("idle: %d connections, resident bytes per connection"):format(n), kb(ibest.loom),
  ibest.luv and ("luv " .. kb(ibest.luv)) or "-", ibest.loom, "<=", 4096, "%.0f B")

report:finish()
