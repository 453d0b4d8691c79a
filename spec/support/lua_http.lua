-- Makes Debian's lua-http loadable under Lua 5.4. The package (0.4-1, on
-- bookworm) installs its pure-Lua files for 5.1 to 5.3 only, and some of its
-- dependencies (fifo, basexx, lpeg_patterns, compat53) for 5.1 and 5.2 only,
-- though all of it runs on 5.4 (upstream supports 5.4; its C dependencies,
-- cqueues, luaossl and lpeg, are built for 5.4). A searcher appended after
-- the standard ones takes those modules, and only those, from the 5.3 and
-- 5.1 trees: nothing 5.4 has is shadowed, and no other module is found there.
local ROOTS = "/usr/share/lua/5.3/?.lua;/usr/share/lua/5.3/?/init.lua;"
  .. "/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua"
local ONLY = { http = true, fifo = true, basexx = true, binaryheap = true, lpeg_patterns = true, compat53 = true }

local function searcher(name)
  if not ONLY[name:match("^[^.]+")] then return nil end
  local file, err = package.searchpath(name, ROOTS)
  if not file then return "\n\t" .. err end
  return assert(loadfile(file)), file
end

-- Once per process: busted's insulation reloads this file for every spec
-- file, but package.searchers stays.
if not package.searchers.loom_lua_http then
  package.searchers.loom_lua_http = true
  table.insert(package.searchers, searcher)
end

return {
  server = require "http.server",
  request = require "http.request",
  headers = require "http.headers",
}
