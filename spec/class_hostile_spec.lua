-- Every loom class's metatable is one getmetatable away from any script.
-- Given to a table, it must not turn the collector, a <close>, tostring or
-- an indexing into a crash: those reach functions written for the class's
-- userdata (lua/class.c guards them). Run in a child: a crash there fails
-- this spec instead of ending the test run. #subprocess
local run_child = require("spec.support.child").run

describe("a table given a loom class's metatable", function()
  it("is collected, closed, printed and indexed without harm, for every class", function()
    local ok, out = run_child([[
      local loom = require "loom"
      -- Load every module that makes classes.
      local _ = loom.db, loom.thread, loom.tcp, loom.unix, loom.dns, loom.fs, loom.process, loom.signal
      local reg = debug.getregistry()
      local names = {}
      for k, v in pairs(reg) do
        -- loom.error's objects are tables: its metatable is for them.
        if type(k) == "string" and type(v) == "table" and rawget(v, "__name") == k and k:find("^loom")
          and k ~= "loom.error" then
          names[#names + 1] = k
        end
      end
      table.sort(names)
      local printed = 0
      for _, name in ipairs(names) do
        local mt = reg[name]
        local t = setmetatable({}, mt)
        if rawget(mt, "__tostring") then
          assert(tostring(t) == name .. " (not one)", tostring(t))
          printed = printed + 1
        end
        pcall(function() return #t end)
        pcall(function() return t.pid, t.stdout, t.x end)
        pcall(function() local c <close> = setmetatable({}, mt) end)
        t = nil
        collectgarbage()
        collectgarbage()
      end
      print(("classes %d printed %d"):format(#names, printed))
    ]], 60)
    assert.is_true(ok, out)
    local classes, printed = out:match("classes (%d+) printed (%d+)")
    -- Channels, tasks, streams, files, processes, pools, connections...:
    -- fewer would mean the registry walk missed them.
    assert.truthy(tonumber(classes) and tonumber(classes) >= 30, out)
    assert.truthy(tonumber(printed) >= 5, out)
  end)
end)
