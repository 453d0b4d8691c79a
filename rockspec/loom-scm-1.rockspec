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
-- loom.jobs (background jobs) also needs lua-cjson at run time (Debian:
-- lua-cjson; or `luarocks install lua-cjson`). It is not required here:
-- nothing else in loom uses it.
dependencies = {
   "lua >= 5.4, < 5.5",
}
-- Each database driver is built when pkg-config finds its client library
-- (libpq, libmariadb, sqlite3): LOOM_WITH_POSTGRES, LOOM_WITH_MYSQL and
-- LOOM_WITH_SQLITE in the environment of `luarocks make` set ON (required)
-- or OFF (left out) instead, so none of them is demanded here. loom.http
-- (on libcurl) alike, with LOOM_WITH_HTTP.
external_dependencies = {
   LIBUV = { header = "uv.h" },
   OPENSSL = { header = "openssl/ssl.h" },
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
