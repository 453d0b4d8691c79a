-- What loom.tcp.listen and loom.unix.listen share: the server object, its
-- accept loop, and a task per connection.
--
-- A handler runs as a task of its own, counted until it ends, its stream
-- closed however it ends. A handler that fails never stops the server: its
-- failure goes to opts.on_error(err, traceback), or without one it fails
-- its task, which loom reports as it reports every failed task nobody
-- joined (stderr, or loom.on_error's handler). srv:close(deadline) stops
-- accepting, waits for the handlers, and cancels those still running at
-- the deadline.
local loom = require "loom"

local M = {}

local Server = {}
Server.__index = Server

-- Closes the connection's stream and forgets its task, however the
-- handler ended.
local Conn = {}
Conn.__index = Conn
Conn.__close = function(conn)
  conn.srv._live[conn.task] = nil
  pcall(conn.stream.close, conn.stream)
end

local function serve(srv, handler, stream)
  local _ <close> = setmetatable({ srv = srv, stream = stream, task = loom.current() }, Conn)
  local on_error = srv._on_error
  if not on_error then return handler(stream) end
  local traceback
  local ok, err = xpcall(handler, function(e)
    traceback = debug.traceback(nil, 2)
    return e
  end, stream)
  if not ok and not (srv.closed and loom.is_error(err, "cancelled")) then
    on_error(err, traceback)
  end
end

local function report(srv, err)
  if srv._on_error then
    srv._on_error(err, nil)
  else
    io.stderr:write(("loom: server on %s: %s\n"):format(srv.path or ("port " .. tostring(srv.port)), tostring(err)))
  end
end

local function accept_loop(srv, handler, prepare)
  local listener = srv._listener
  while true do
    local ok, stream = pcall(listener.accept, listener)
    if not ok then
      if srv.closed or loom.is_error(stream, "cancelled") then return end
      -- Out of descriptors, say: the connection waits in the backlog.
      report(srv, stream)
      loom.sleep(0.05)
    elseif stream == nil then
      return
    else
      local prepared, err = pcall(prepare, stream)
      if prepared then
        local t = srv._counted:_spawn(serve, srv, handler, stream)
        srv._live[t] = true
      else
        pcall(stream.close, stream)
        report(srv, err)
      end
    end
  end
end

-- listener: a core listener; prepare(stream) applies the options to each
-- connection before its handler runs.
function M.start(listener, handler, opts, prepare)
  local name = listener:sockname()
  local srv = setmetatable({
    _listener = listener,
    _counted = loom.waitgroup(),
    _live = setmetatable({}, { __mode = "k" }),
    _on_error = opts.on_error,
    closed = false,
    address = name.address,
    port = name.port,
    path = name.path,
  }, Server)
  srv._accepting = loom.spawn(accept_loop, srv, handler, prepare)
  return srv
end

-- srv:sockname() -> {address=, port=, family=} or {path=, family="unix"}
function Server:sockname()
  return self._listener:sockname()
end

-- srv:connections() -> how many handlers run now
function Server:connections()
  return self._counted:count()
end

-- srv:close([deadline]): stops accepting, then waits for the handlers
-- running, at most deadline seconds (nil: as long as they take); those
-- still running then are cancelled and waited for.
function Server:close(deadline)
  -- deadline ~= deadline: NaN, which no comparison refuses.
  if deadline ~= nil and (type(deadline) ~= "number" or deadline < 0 or deadline ~= deadline) then
    loom.error("argument", "bad argument #1 to 'close' (deadline must be a non-negative number of seconds)")
  end
  if not self.closed then
    self.closed = true
    self._listener:close()
  end
  local counted = self._counted
  -- From one of its own handlers (a "shutdown" command): that handler
  -- cannot wait for itself to end; it waits for the others.
  local me = loom.current()
  if me and self._live[me] then counted:_leave(me) end
  local ok, err = pcall(counted.wait, counted, deadline)
  if not ok then
    for t in pairs(self._live) do
      if t ~= me then t:cancel("the server closed") end
    end
    counted:wait()
    if not loom.is_error(err, "timeout") or deadline == nil then error(err, 0) end
  end
  self._accepting:join()
end

Server.__close = function(srv) srv:close(0) end

function M.check_handler(handler, fname)
  if not loom._is_callable(handler) then
    loom.error("argument", ("bad argument to '%s' (handler function expected, got %s)"):format(fname, type(handler)))
  end
end

-- Every option is checked before anything is done, in the caller's name:
-- a bad one found only after connecting would open (and drop) a
-- connection the peer sees, and the hidden functions behind the caller
-- would name themselves and their own argument numbers.
-- The longest idle time before keepalive probes Linux takes (TCP_KEEPIDLE).
M.KEEPALIVE_MAX = 32767

local SECONDS = { "timeout", "connect_timeout", "handshake_timeout", "read_timeout", "write_timeout" }

local function is_seconds(v)
  return type(v) == "number" and v >= 0 -- NaN fails the comparison
end

function M.check_opts(opts, argn, fname)
  if opts ~= nil and type(opts) ~= "table" then
    loom.error("argument", ("bad argument #%d to '%s' (options table expected, got %s)")
      :format(argn, fname, type(opts)))
  end
  opts = opts or {}
  local function bad(msg)
    loom.error("argument", ("bad argument #%d to '%s' (%s)"):format(argn, fname, msg))
  end
  if opts.on_error ~= nil and not loom._is_callable(opts.on_error) then bad("on_error must be a function") end
  for _, name in ipairs(SECONDS) do
    if opts[name] ~= nil and not is_seconds(opts[name]) then
      bad(name .. " must be a non-negative number of seconds")
    end
  end
  local hw = opts.high_water
  if hw ~= nil and (math.type(hw) ~= "integer" or hw < 1) then
    bad("high_water must be a positive integer")
  end
  local backlog = opts.backlog
  if backlog ~= nil and (math.type(backlog) ~= "integer" or backlog < 0 or backlog > 0x7fffffff) then
    bad("backlog must be a non-negative integer")
  end
  if opts.nodelay ~= nil and type(opts.nodelay) ~= "boolean" then bad("nodelay must be a boolean") end
  local ka = opts.keepalive
  if ka ~= nil and type(ka) ~= "boolean" and not (is_seconds(ka) and ka <= M.KEEPALIVE_MAX) then
    bad(("keepalive must be a boolean or seconds up to %d"):format(M.KEEPALIVE_MAX))
  end
  return opts
end

-- The options every stream takes: high_water, read_timeout, write_timeout.
function M.stream_options(stream, opts)
  if opts.high_water then stream:sethighwater(opts.high_water) end
  if opts.read_timeout or opts.write_timeout then
    stream:settimeouts(opts.read_timeout, opts.write_timeout)
  end
  return stream
end

return M
