-- loom.tcp: TCP streams (lua/io/stream.c) and servers (lua/loom/server.lua).
--
--   local s = loom.tcp.connect(host, port, {timeout =, connect_timeout =,
--                              nodelay =, keepalive =, high_water =,
--                              read_timeout =, write_timeout =})
--   local srv = loom.tcp.listen(host, port, function(stream) ... end,
--                               {backlog =, on_error =, nodelay =, ...})
--   srv.port, srv.address, srv:close(deadline)
--
-- connect tries every address host resolves to, in the resolver's order,
-- each for at most connect_timeout seconds (default 10); timeout bounds
-- the whole call. host may be a list ({"db1", "db2"}): each host in turn,
-- every address of each. nodelay is on unless set false: a stream is written in
-- whole messages, and Nagle's delay only adds latency to them.
local core = require "loom.core"
local loom = require "loom"
local server = require "loom.server"

local tcp = {}

local function check_port(port, argn, fname, allow_zero)
  if math.type(port) ~= "integer" or port < (allow_zero and 0 or 1) or port > 65535 then
    loom.error("argument", ("bad argument #%d to '%s' (port must be an integer from %d to 65535)")
      :format(argn, fname, allow_zero and 0 or 1))
  end
end

local function check_host(host, fname, list_too)
  if type(host) == "string" then return end
  if list_too and type(host) == "table" and #host > 0 then
    for _, h in ipairs(host) do
      if type(h) ~= "string" then
        loom.error("argument", ("bad argument #1 to '%s' (every host must be a string)"):format(fname))
      end
    end
    return
  end
  loom.error("argument", ("bad argument #1 to '%s' (host string%s expected, got %s)")
    :format(fname, list_too and " or list of hosts" or "", type(host)))
end

local function prepare(opts)
  return function(stream)
    stream:setoption("nodelay", opts.nodelay ~= false)
    if opts.keepalive then stream:setoption("keepalive", opts.keepalive) end
    return server.stream_options(stream, opts)
  end
end

-- TLS goes under the same streams (core/stream.h's transport) once it is
-- built; until then asking for it must not quietly give plain text.
local function refuse_tls(opts, argn, fname)
  if opts.tls ~= nil then
    loom.error("argument", ("bad argument #%d to '%s' (tls: this build has no TLS)"):format(argn, fname))
  end
end

local DEFAULT_CONNECT_TIMEOUT = 10

function tcp.connect(host, port, opts)
  check_host(host, "loom.tcp.connect", true)
  check_port(port, 2, "loom.tcp.connect")
  opts = server.check_opts(opts, 3, "loom.tcp.connect")
  refuse_tls(opts, 3, "loom.tcp.connect")
  local s = core._connect("tcp", host, port, opts.connect_timeout or DEFAULT_CONNECT_TIMEOUT, opts.timeout)
  local ok, err = pcall(prepare(opts), s)
  if not ok then
    s:close()
    error(err, 0)
  end
  return s
end

-- A name listens on its first address; a number as it is.
local function address_of(host, opts)
  if host:match("^[%d.]+$") or host:find(":", 1, true) then return host end
  return loom.dns.resolve(host, { timeout = opts.timeout })[1].address
end

function tcp.listen(host, port, handler, opts)
  check_host(host, "loom.tcp.listen")
  check_port(port, 2, "loom.tcp.listen", true)
  server.check_handler(handler, "loom.tcp.listen")
  opts = server.check_opts(opts, 4, "loom.tcp.listen")
  refuse_tls(opts, 4, "loom.tcp.listen")
  local listener = core._listen("tcp", address_of(host, opts), port, opts.backlog)
  return server.start(listener, handler, opts, prepare(opts))
end

loom.tcp = tcp
return tcp
