-- loom beside a program whose loop is luv's (uv.run()): luvit, Neovim, any
-- script built on luv. Nothing here loads luv itself; the program passes the
-- module it uses, so loom runs on that program's loop and no other.
--
--   local adapter = require("loom.luv").start(uv)   -- then uv.run() as usual
--   adapter:stop()                                   -- loom is stepped no more
--
-- Three luv handles step loom: a poll on loom.fd() (loom's I/O and worker
-- threads), a timer from loom.next_timeout() re-armed after every step
-- (loom's timers, and 0 while tasks are ready), and a check handle that
-- notices, after each turn of luv's loop, work a luv callback gave loom (a
-- task spawned, a channel sent to): such work reaches neither the fd nor the
-- timer. While loom is idle the poll and the check are unreferenced, so
-- uv.run() returns once the program's own handles are done and loom is too.
-- Work given to loom outside uv.run() and outside luv's callbacks (after a
-- uv.run() returned) needs a new start() to be seen.
local loom = require "loom"

local M = {}

-- The adapter running on each luv module (one loop each), weakly.
local running = setmetatable({}, { __mode = "k" })

local Adapter = {}
Adapter.__index = Adapter

function M.start(uv)
  if type(uv) ~= "table" or type(uv.new_poll) ~= "function" then
    loom.error("argument", "bad argument #1 to 'loom.luv.start' (the luv module expected, got "
      .. type(uv) .. ")")
  end
  -- libuv lets one poll handle watch an fd: a second adapter's is refused
  -- (asked first: luv leaks the handle whose init failed).
  if running[uv] then
    loom.error("usage", "loom.luv.start: another adapter steps loom on this loop already; stop it first")
  end
  local poll, err = uv.new_poll(loom.fd())
  if not poll then
    loom.error("usage", "loom.luv.start: cannot watch loom's descriptor (" .. tostring(err) .. ")")
  end
  local self = setmetatable({
    poll = poll,
    timer = uv.new_timer(),
    check = uv.new_check(),
    running = true,
    uv = uv,
  }, Adapter)
  running[uv] = self
  local function step() self:_step() end
  self.poll:start("r", step)
  self.check:start(function()
    if loom.next_timeout() == 0 then self:_step() end
  end)
  self.check:unref()
  -- The first step comes at uv.run()'s first turn, so that it sees the
  -- tasks the program spawns between start() and uv.run(): those reach
  -- neither the fd nor next_timeout() yet, and with no other handle of
  -- the program's to turn the loop, luv would block on the fd for ever.
  self.poll:ref()
  self.timer:start(0, 0, step)
  return self
end

function Adapter:_step()
  if not self.running then return end
  self:_arm(loom.step(0))
end

-- While loom has work its poll keeps uv.run() going; idle, it only watches.
function Adapter:_arm(busy)
  self.timer:stop()
  if busy then
    self.poll:ref()
    local nt = loom.next_timeout()
    if nt then self.timer:start(math.ceil(nt * 1000), 0, function() self:_step() end) end
  else
    self.poll:unref()
  end
end

-- Stops stepping loom and closes the three handles (luv frees them on its
-- next turn); loom's tasks stay where they are, for loom.run or another host.
function Adapter:stop()
  if not self.running then return end
  self.running = false
  if running[self.uv] == self then running[self.uv] = nil end
  for _, h in ipairs { self.poll, self.timer, self.check } do
    if not h:is_closing() then h:close() end
  end
end

return M
