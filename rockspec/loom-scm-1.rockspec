rockspec_format = "3.0"
package = "loom"
version = "scm-1"
source = {
   url = "git+file:///dev/null", -- built from a checkout: luarocks make
}
description = {
   summary = "Tasks, channels, structured concurrency and async databases for Lua 5.4",
   detailed = [[
loom gives Lua 5.4 scripts an event loop (libuv), tasks, channels, select,
structured concurrency, sync primitives, pipelines and asynchronous
PostgreSQL, MySQL/MariaDB and SQLite drivers with a connection pool. Calls
that wait read like calls that block and yield to the loop instead.
]],
   license = "MIT",
}
dependencies = {
   "lua >= 5.4, < 5.5",
}
external_dependencies = {
   LIBUV = { header = "uv.h" },
   LIBPQ = { header = "postgresql/libpq-fe.h" },
   SQLITE = { header = "sqlite3.h" },
   MARIADB = { header = "mariadb/mysql.h" },
}
build = {
   type = "cmake",
   variables = {
      CMAKE_BUILD_TYPE = "Release",
      LOOM_LUA_CMOD_DIR = "$(LIBDIR)",
      LOOM_LUA_LMOD_DIR = "$(LUADIR)",
      LOOM_BUILD_TESTS = "OFF",
   },
}
