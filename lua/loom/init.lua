-- loom: tasks, channels and an event loop for Lua 5.4.
--
-- The C module (loom.core) does the scheduling, waiting and data structures;
-- the files beside this one add the parts of the API that read best in Lua:
-- structured concurrency, resilience helpers and pipelines.
local core = require "loom.core"

local loom = {}
for name, value in pairs(core) do
  if name:sub(1, 1) ~= "_" then loom[name] = value end
end
loom._VERSION = "loom scm"

-- What every Lua-written entry point takes where a function is wanted: a
-- function or a table (or userdata) whose metatable has __call, as the C
-- core's own checks accept.
function loom._is_callable(f)
  if type(f) == "function" then return true end
  local mt = getmetatable(f)
  return type(mt) == "table" and rawget(mt, "__call") ~= nil
end

require("loom.scope")(loom, core)
require("loom.sync")(loom)
require("loom.group")(loom)
require("loom.resilience")(loom)
require("loom.pipeline")(loom)

-- loom.db loads on first use: a program that never opens a database
-- loads no database code, and no driver's client library. loom.thread
-- too: a program that never offloads starts no thread. So does every
-- module below: loom.http loads libcurl on its first request, loom.jobs
-- its JSON library when a program first uses background jobs.
local on_first_use = {
  db = true, thread = true, tcp = true, unix = true, dns = true, fs = true,
  process = true, signal = true, http = true, jobs = true,
}
setmetatable(loom, { __index = function(_, name)
  if on_first_use[name] then return require("loom." .. name) end
end })

return loom
