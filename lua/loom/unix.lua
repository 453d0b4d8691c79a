-- loom.unix: Unix domain sockets, the same streams and servers as loom.tcp.
--
--   local s = loom.unix.connect(path, {timeout =, high_water =, ...})
--   local srv = loom.unix.listen(path, function(stream) ... end, opts)
--
-- A module of its own rather than loom.tcp taking {path = ...}: a path is
-- not a host and port, none of TCP's options (nodelay, keepalive) apply,
-- and the call then says which kind of socket it opens. srv:close()
-- removes the socket file the server made.
local core = require "loom.core"
local loom = require "loom"
local server = require "loom.server"

local unix = {}

local function check_path(path, fname)
  if type(path) ~= "string" or path == "" then
    loom.error("argument", ("bad argument #1 to '%s' (socket path expected, got %s)"):format(fname, type(path)))
  end
  -- The system would read the path up to the NUL: another socket file.
  if path:find("\0", 1, true) then
    loom.error("argument", ("bad argument #1 to '%s' (a socket path has no NUL byte)"):format(fname))
  end
end

function unix.connect(path, opts)
  check_path(path, "loom.unix.connect")
  opts = server.check_opts(opts, 2, "loom.unix.connect")
  local s = core._connect("unix", path, nil, opts.connect_timeout, opts.timeout)
  return server.stream_options(s, opts)
end

function unix.listen(path, handler, opts)
  check_path(path, "loom.unix.listen")
  server.check_handler(handler, "loom.unix.listen")
  opts = server.check_opts(opts, 3, "loom.unix.listen")
  local listener = core._listen("unix", path, nil, opts.backlog)
  return server.start(listener, handler, opts, function(stream)
    return server.stream_options(stream, opts)
  end)
end

loom.unix = unix
return unix
