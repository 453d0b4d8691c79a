-- luacheck over everything Lua in the repository (scripts/lint.sh runs it).
-- loom is Lua 5.4 only: <close>, integer division, math.type.
std = "lua54"
-- The code keeps to short lines; 120 leaves room for a SQL statement or an
-- error message on one line without letting lines run on.
max_line_length = 120
-- The busted specs run with busted's globals (describe, it, assert, ...);
-- nothing else in the tree defines or reads a global of its own.
files["spec"] = { std = "+busted" }
-- Build trees hold luarocks' copies of lua/.
exclude_files = { "build", "build-*", "build.luarocks", "lua_modules" }
