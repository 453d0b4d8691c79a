-- loom.process: child processes (lua/io/process.c, core/process.c).
--
--   loom.process.run(cmd, args, opts) -> {code =, signal =, stdout =, stderr =}
--   loom.process.spawn(cmd, args, opts) -> p, with p.stdin, p.stdout,
--     p.stderr (loom streams, as sockets are: read/lines/write/close), p.pid,
--     p:wait() -> code (nil if a signal ended it), signal name, p:kill(sig)
--
-- cmd is looked up in PATH unless it holds a slash; args is an array of
-- strings (numbers are turned into strings). A command that cannot be
-- started raises kind "io" with the errno name as code ("ENOENT" when it
-- does not exist). A cancelled wait (task:cancel(), loom.timeout, run's
-- timeout) stops the child: SIGTERM, then SIGKILL after kill_grace
-- seconds (default 2), and waits until it exited; on_cancel = "leave"
-- lets it run on instead. Either way no zombie is left: loom reaps every
-- child it started.
local core = require "loom.core"
local loom = require "loom"

local process = {}

local function arg_error(fname, n, msg)
  loom.error("argument", ("bad argument #%d to 'loom.process.%s' (%s)"):format(n, fname, msg))
end

local stdio_kinds = { pipe = true, inherit = true, null = true }

local function check(fname, cmd, args, opts)
  if type(cmd) ~= "string" or cmd == "" then
    arg_error(fname, 1, "command string expected, got " .. (cmd == "" and "an empty string" or type(cmd)))
  end
  -- The system takes C strings: a zero byte would cut the command, an
  -- argument or a name short without a word.
  if cmd:find("\0", 1, true) then arg_error(fname, 1, "a command cannot hold a zero byte") end
  if args ~= nil and type(args) ~= "table" then
    arg_error(fname, 2, "array of arguments expected, got " .. type(args))
  end
  if opts ~= nil and type(opts) ~= "table" then arg_error(fname, 3, "options table expected, got " .. type(opts)) end
  local argv = {}
  -- The C side's own bound, said here so the error names this function.
  if args and #args > 100000 then arg_error(fname, 2, "too many arguments (at most 100000)") end
  -- #args, not ipairs: a nil among the arguments would drop all after it.
  for i = 1, args and #args or 0 do
    local a = args[i]
    if type(a) ~= "string" and type(a) ~= "number" then
      arg_error(fname, 2, ("argument %d is a %s: strings or numbers expected"):format(i, type(a)))
    end
    a = tostring(a)
    if a:find("\0", 1, true) then arg_error(fname, 2, ("argument %d holds a zero byte"):format(i)) end
    argv[i] = a
  end
  opts = opts or {}
  local o = {}
  for _, k in ipairs({ "stdin", "stdout", "stderr" }) do
    local v = opts[k]
    if v ~= nil and fname == "spawn" and not stdio_kinds[v] then
      arg_error(fname, 3, ("%s must be \"pipe\", \"inherit\" or \"null\""):format(k))
    end
    o[k] = v
  end
  if opts.env ~= nil and type(opts.env) ~= "table" then arg_error(fname, 3, "env must be a table") end
  for k, v in pairs(opts.env or {}) do
    if type(k) ~= "string" then arg_error(fname, 3, "env names must be strings") end
    -- "A=B" = "1" would set A to "B=1"; "" would be dropped unsaid.
    if k == "" or k:find("[=\0]") then arg_error(fname, 3, ("env name %q is not a name"):format(k)) end
    if v ~= false and type(v) ~= "string" and type(v) ~= "number" then
      arg_error(fname, 3, ("env.%s must be a string, a number or false, got %s"):format(k, type(v)))
    end
    if type(v) == "string" and v:find("\0", 1, true) then
      arg_error(fname, 3, ("env.%s holds a zero byte"):format(k))
    end
  end
  if opts.cwd ~= nil and type(opts.cwd) ~= "string" then arg_error(fname, 3, "cwd must be a string") end
  if opts.cwd and opts.cwd:find("\0", 1, true) then arg_error(fname, 3, "cwd cannot hold a zero byte") end
  local grace = opts.kill_grace
  if grace ~= nil and (type(grace) ~= "number" or not (grace >= 0)) then -- luacheck: ignore 581 (NaN too)
    arg_error(fname, 3, "kill_grace must be a non-negative number of seconds")
  end
  if opts.on_cancel ~= nil and opts.on_cancel ~= "kill" and opts.on_cancel ~= "leave" then
    arg_error(fname, 3, "on_cancel must be \"kill\" or \"leave\"")
  end
  local timeout = opts.timeout
  if timeout ~= nil and (type(timeout) ~= "number" or not (timeout >= 0)) then -- luacheck: ignore 581 (NaN too)
    arg_error(fname, 3, "timeout must be a non-negative number of seconds")
  end
  o.env, o.cwd, o.kill_grace, o.on_cancel, o.clear_env = opts.env, opts.cwd, grace, opts.on_cancel, opts.clear_env
  return argv, o, opts
end

-- loom.process.spawn(cmd [, args [, opts]]): opts.stdin, stdout, stderr
-- are "pipe" (default: p.stdin etc. are pipes), "inherit" (this
-- process's) or "null"; env (a table laid over this process's
-- environment, false removes a name; clear_env = true starts from an
-- empty one), cwd, kill_grace, on_cancel. A child that writes much to a
-- pipe nobody reads stops when the pipe is full: read what you pipe, or
-- ask for "null".
function process.spawn(cmd, args, opts)
  local argv, o = check("spawn", cmd, args, opts)
  return core._process_spawn(cmd, argv, o)
end

-- Feeds the child its input; a child that exits without reading it all
-- is not an error (as with a shell pipeline).
local function feed(pipe, data)
  local ok, err = pcall(pipe.write, pipe, data)
  pipe:close()
  if not ok and not (loom.is_error(err) and (err.code == "EPIPE" or err.code == "ECANCELED")) then
    error(err, 0)
  end
end

local unbounded = 1 << 40
local close_pipes = {
  __close = function(self)
    if self.p.stdin then self.p.stdin:close() end
    self.p.stdout:close()
    self.p.stderr:close()
  end,
}

-- loom.process.run(cmd [, args [, opts]]): runs the command to its end and
-- returns {code =, signal =, stdout =, stderr =}: code the exit status
-- (nil when a signal ended it, then signal is its name, e.g. "KILL"), the
-- output as strings. opts: stdin (a string fed to the child; else it
-- reads /dev/null), env, clear_env, cwd, kill_grace, on_cancel as for
-- spawn, and timeout (seconds): past it the child is stopped and a
-- `timeout` error raised. A non-zero exit is not an error: check code.
-- The output is read to its end: a process the child left running in the
-- background with its stdout keeps run waiting (up to the timeout).
function process.run(cmd, args, opts)
  local argv, o, given = check("run", cmd, args, opts)
  local input = given.stdin
  if input ~= nil and type(input) ~= "string" then arg_error("run", 3, "stdin must be a string") end
  o.stdin = input and "pipe" or "null"
  o.stdout, o.stderr = "pipe", "pipe"
  local function body()
    local p <close> = setmetatable({ p = core._process_spawn(cmd, argv, o) }, close_pipes)
    local child = p.p
    -- Both pipes are read into their buffers, however much comes, while
    -- this waits for the exit: no task per pipe, and a cancel (a timeout)
    -- finds the wait, which stops the child.
    child.stdout:sethighwater(unbounded)
    child.stderr:sethighwater(unbounded)
    local result = {}
    if input then
      loom.group(function(g)
        g:spawn(feed, child.stdin, input)
        result.code, result.signal = child:wait()
      end)
    else
      result.code, result.signal = child:wait()
    end
    result.stdout = child.stdout:read("a")
    result.stderr = child.stderr:read("a")
    return result
  end
  if given.timeout then return loom.timeout(given.timeout, body) end
  return body()
end

loom.process = process
return process
