-- loom.tcp: TCP streams (lua/io/stream.c) and servers (lua/loom/server.lua).
--
--   local s = loom.tcp.connect(host, port, {timeout =, connect_timeout =,
--                              nodelay =, keepalive =, high_water =,
--                              read_timeout =, write_timeout =})
--   local srv = loom.tcp.listen(host, port, function(stream) ... end,
--                               {backlog =, on_error =, nodelay =, ...})
--   srv.port, srv.address, srv:close(deadline)
--
-- TLS (lua/io/tls.c on core/tls.c, OpenSSL): connect's tls = true, or
-- {ca =, verify =, servername =, alpn = {...}, cert =, key =}, verifies
-- the server's certificate and name (servername, default host) unless
-- verify is false; listen's tls = {cert =, key =, alpn =, ca =, verify =}
-- (verify: ask for a client certificate). The handshake is over when
-- connect returns, or before the handler runs, within handshake_timeout
-- seconds (default 10); a failed one raises kind `tls` with OpenSSL's
-- reason (a server's goes to on_error, and no handler runs). s:alpn() is
-- the protocol ALPN settled on, s:servername() (on a server) the name the
-- client asked for by SNI.
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

-- As lua/io/connect.c takes them.
local MAX_HOSTS = 16

-- A NUL byte would end the name where the system reads it: the call would
-- reach another host than the one given.
local function check_host(host, fname, list_too)
  local function check_one(h)
    if h == "" or h:find("\0", 1, true) then
      loom.error("argument", ("bad argument #1 to '%s' (a host name is not empty and has no NUL byte)"):format(fname))
    end
  end
  if type(host) == "string" then return check_one(host) end
  if list_too and type(host) == "table" and #host > 0 then
    if #host > MAX_HOSTS then
      loom.error("argument", ("bad argument #1 to '%s' (a list of 1 to %d hosts expected)"):format(fname, MAX_HOSTS))
    end
    for i = 1, #host do -- not ipairs: a hole must not end the check early
      local h = host[i]
      if type(h) ~= "string" then
        loom.error("argument", ("bad argument #1 to '%s' (every host must be a string)"):format(fname))
      end
      check_one(h)
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

local DEFAULT_CONNECT_TIMEOUT = 10
local DEFAULT_HANDSHAKE_TIMEOUT = 10

-- The context for connect's tls option (before connecting: a CA that does
-- not load fails at once) and the name the certificate must have.
local function client_tls(host, opts)
  if not opts.tls then return nil end
  local tls, servername = core._tls_context(opts.tls, false, 3, "loom.tcp.connect")
  servername = servername or (type(host) == "string" and host or nil)
  if not servername then
    loom.error("argument", "bad argument #3 to 'loom.tcp.connect' (tls.servername is needed with a list of hosts)")
  end
  return tls, servername
end

function tcp.connect(host, port, opts)
  check_host(host, "loom.tcp.connect", true)
  check_port(port, 2, "loom.tcp.connect")
  opts = server.check_opts(opts, 3, "loom.tcp.connect")
  local tls, servername = client_tls(host, opts)
  local started = loom.now()
  local s = core._connect("tcp", host, port, opts.connect_timeout or DEFAULT_CONNECT_TIMEOUT, opts.timeout)
  local ok, err = pcall(prepare(opts), s)
  if ok and tls then
    -- timeout bounds the whole call: the handshake gets what the connect
    -- left of it, when that is less than its own bound.
    local handshake = opts.handshake_timeout or DEFAULT_HANDSHAKE_TIMEOUT
    if opts.timeout then handshake = math.min(handshake, math.max(0, opts.timeout - (loom.now() - started))) end
    ok, err = pcall(core._starttls, s, tls, servername, handshake,
      ("TLS handshake with %s port %d"):format(servername, port))
  end
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
  if opts.tls then
    -- One context for every connection; each handshake in its handler's
    -- task, so a slow client holds up no other.
    -- A failed handshake is the client's failure, not the handler's: it
    -- goes to on_error when there is one, and is dropped otherwise (a
    -- scanner or a client that distrusts us must not fill stderr).
    local tls = core._tls_context(opts.tls, true, 4, "loom.tcp.listen")
    local serve, timeout = handler, opts.handshake_timeout or DEFAULT_HANDSHAKE_TIMEOUT
    handler = function(stream)
      local ok, err = pcall(core._starttls, stream, tls, nil, timeout)
      if ok then return serve(stream) end
      if loom.is_error(err, "cancelled") then error(err, 0) end
      if opts.on_error then opts.on_error(err, nil) end
    end
  end
  local listener = core._listen("tcp", address_of(host, opts), port, opts.backlog)
  return server.start(listener, handler, opts, prepare(opts))
end

loom.tcp = tcp
return tcp
