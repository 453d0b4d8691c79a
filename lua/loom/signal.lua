-- loom.signal: signals as loom channels (lua/io/signal.c, on libuv's
-- uv_signal_t).
--
--   local ch = loom.signal("INT" [, "TERM", ...])  -- each arrival: ch:recv() == "INT"
--   ch:close()                                     -- stops watching
--   loom.signal.shutdown_on({"INT", "TERM"}, main, ...)
--
-- While a signal is watched its default action (ending the process for
-- INT and TERM) is off; closing the channel gives it back.
local core = require "loom.core"
local loom = require "loom"

local signal = {}

local function check_names(fname, names)
  if #names == 0 then
    loom.error("argument", ("bad argument #1 to '%s' (signal name expected, e.g. \"INT\")"):format(fname))
  end
  for i, name in ipairs(names) do
    if type(name) ~= "string" and math.type(name) ~= "integer" then
      loom.error("argument", ("bad argument #%d to '%s' (signal name expected, got %s)"):format(i, fname, type(name)))
    end
    if not core._signal_catchable(name) then
      loom.error("argument", ("bad argument #%d to '%s' (%s: an unknown signal, or one that cannot be caught)")
        :format(i, fname, tostring(name)))
    end
  end
  return names
end

-- Sends name into the channel held, if it is still there; false once it
-- is gone or closed. A frame of its own: the channel never sits in the
-- pump's registers while the pump waits, where the collector would see
-- it and keep it.
local function deliver(held, name)
  local ch = held[1]
  return ch ~= nil and (pcall(ch.send, ch, name))
end

-- A watcher of names whose signals go into ch until ch is closed or
-- collected (or the watcher is closed): a daemon task pumps them, so
-- loom.run does not wait for it. The pump holds ch weakly: a channel its
-- user dropped is collected, which ends the watching and gives the
-- signals their default action back (a dropped loom.signal("INT") must
-- not leave Ctrl-C doing nothing).
local function watch(names, ch)
  local w = core._signal_watch(names, ch)
  local held = setmetatable({ ch }, { __mode = "v" })
  core._spawn_daemon(function()
    while true do
      local name = w:next()
      if name == nil or not deliver(held, name) then break end
    end
    w:close()
  end)
  return w
end

-- loom.signal(name, ...): a channel that receives the signal's name
-- ("INT", "TERM"; "SIGINT" is accepted too) each time one of them
-- arrives. Up to 16 arrivals wait in the channel for a receiver.
setmetatable(signal, { __call = function(_, ...)
  local names = check_names("loom.signal", table.pack(...))
  local ch = loom.channel(16)
  watch(names, ch)
  return ch
end })

-- loom.signal.raise(name): sends this process the signal.
function signal.raise(name)
  check_names("loom.signal.raise", { name })
  core._signal_raise(name)
end

-- Cancels task on the first of names to arrive; returns a function that
-- stops watching and one that says which signal fired (nil: none).
local function cancel_on(names, task)
  local ch = loom.channel(1)
  local w = watch(names, ch)
  local fired
  local canceller = core._spawn_daemon(function()
    fired = ch:recv()
    if fired then
      w:close()
      task:cancel("signal " .. fired)
    end
  end)
  return function()
    ch:close()
    w:close()
    canceller:cancel()
  end, function() return fired end
end

local function ended_by(fired, err)
  return fired ~= nil and loom.is_error(err, "cancelled")
end

-- loom.signal.shutdown_on(names, fn, ...): runs fn(...) and returns its
-- results; if one of the signals arrives first, fn's task is cancelled
-- (the error has reason "signal INT"), its cleanup runs (<close>
-- variables, pcall handlers, loom.shield), and shutdown_on returns nil
-- and the signal's name. Watching stops either way: a second INT during
-- the cleanup ends the process as usual.
--
-- Called outside any task it runs the loop itself with fn as the main
-- task, so a whole program can be `loom.signal.shutdown_on({"INT",
-- "TERM"}, main)`: on a signal every other task is cancelled too (as
-- loom.run does once main fails) and it returns when all have ended.
-- Inside a task fn runs in a task of its own; the tasks it starts end
-- with it if it starts them in a loom.group.
function signal.shutdown_on(names, fn, ...)
  if type(names) == "string" then names = { names } end
  if type(names) ~= "table" then
    loom.error("argument", "bad argument #1 to 'loom.signal.shutdown_on' (array of signal names expected, got "
      .. type(names) .. ")")
  end
  check_names("loom.signal.shutdown_on", names)
  if not loom._is_callable(fn) then
    loom.error("argument", "bad argument #2 to 'loom.signal.shutdown_on' (function expected, got " .. type(fn) .. ")")
  end
  if not loom.current() then
    local fired
    local res = table.pack(pcall(loom.run, function(...)
      local stop, which = cancel_on(names, loom.current())
      local r = table.pack(pcall(fn, ...))
      fired = which()
      stop()
      if not r[1] then error(r[2], 0) end
      return table.unpack(r, 2, r.n)
    end, ...))
    if res[1] then return table.unpack(res, 2, res.n) end
    if ended_by(fired, res[2]) then return nil, fired end
    error(res[2], 0)
  end
  local task = loom.spawn(fn, ...)
  local stop, which = cancel_on(names, task)
  local res = table.pack(pcall(task.join, task))
  stop()
  if res[1] then return table.unpack(res, 2, res.n) end
  if ended_by(which(), res[2]) and task:status() == "cancelled" then return nil, which() end
  -- This task was cancelled while it waited: fn goes down with it.
  task:cancel()
  error(res[2], 0)
end

loom.signal = signal
return signal
