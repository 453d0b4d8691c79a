-- loom inside a cqueues controller (lua-http, and any program on cqueues).
--
--   local adapter = require("loom.cqueues").wrap(cq)  -- a coroutine in cq steps loom
--   adapter:call(fn, ...)   -- from a cqueues coroutine: fn(...) as a loom task,
--                           -- waited for without blocking cq; its results, or its error
--   adapter:stop()          -- the stepping coroutine ends, so cq:loop() can return
--
-- M.pollable is what cqueues.poll waits on for loom: its fd is loom.fd()
-- (readable when loom's I/O or worker threads have news), its timeout
-- loom.next_timeout() (0 while tasks are ready). Work a cqueues coroutine
-- gives loom reaches neither, so call() wakes the stepper itself; a program
-- that spawns loom tasks some other way calls adapter:wake() after.
local cqueues = require "cqueues"
local condition = require "cqueues.condition"
local loom = require "loom"

local M = {}

M.pollable = {
  pollfd = function() return loom.fd() end,
  events = function() return "r" end,
  timeout = function() return loom.next_timeout() end,
}

local Adapter = {}
Adapter.__index = Adapter

function M.wrap(cq)
  local self = setmetatable({ running = true, woken = condition.new(), calls = {} }, Adapter)
  cq:wrap(function()
    while self.running do
      cqueues.poll(M.pollable, self.woken)
      if self.running then loom.step(0) end
    end
  end)
  return self
end

function Adapter:wake() self.woken:signal() end

-- The calls still waiting are woken too: with nothing stepping loom their
-- tasks could never finish, and their callers would hold cq:loop() for ever.
function Adapter:stop()
  self.running = false
  self.woken:signal()
  for done in pairs(self.calls) do done:signal() end
end

local function stopped()
  loom.error("closed", "the loom.cqueues adapter is stopped: nothing steps loom for this call")
end

-- The calling cqueues coroutine waits on a condition the task signals; cq
-- runs its other coroutines (and the stepper) meanwhile.
function Adapter:call(fn, ...)
  if not loom._is_callable(fn) then
    loom.error("argument", "bad argument #1 to 'call' (function expected, got " .. type(fn) .. ")")
  end
  if not self.running then stopped() end
  local done, result = condition.new(), nil
  local task = loom.spawn(function(...)
    result = table.pack(pcall(fn, ...))
    done:signal()
  end, ...)
  self.calls[done] = true
  self:wake()
  while not result and self.running do done:wait() end
  self.calls[done] = nil
  if not result then
    -- Cancelled, so the task ends (without running fn, if it never
    -- started) at loom's next step, whoever drives it.
    task:cancel()
    stopped()
  end
  if result[1] then return table.unpack(result, 2, result.n) end
  error(result[2], 0)
end

return M
