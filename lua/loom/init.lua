-- loom: tasks, channels and an event loop for Lua 5.4.
--
-- The C module does the work; this file is where the pure-Lua parts of the
-- API live and where the module table users get is put together.
local core = require "loom.core"

local loom = {}
for name, value in pairs(core) do loom[name] = value end

loom._VERSION = "loom scm"

return loom
