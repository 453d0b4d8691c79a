-- Makes the checkout's loom loadable: Lua files from lua/, the C module from
-- the build directory named by LOOM_BUILD_DIR (default: build).
local build = os.getenv("LOOM_BUILD_DIR") or "build"
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = build .. "/?.so;" .. package.cpath
