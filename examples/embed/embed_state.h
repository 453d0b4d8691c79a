/* What each example host does to a fresh lua_State before it runs loom: the
 * standard libraries, loom's C module, the database drivers and loom.http's
 * engine linked in, in package.preload, and the source tree's lua/ (LOOM_LUA_DIR, which the
 * CMakeLists defines) first on package.path. */
#ifndef EMBED_STATE_H
#define EMBED_STATE_H

#include <lauxlib.h>
#include <lualib.h>
#include "loom_lua.h"

static inline void embed_open_loom(lua_State *L) {
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_loom_core);
  lua_setfield(L, -2, "loom.core");
  lua_pop(L, 1);
  loom_preload_drivers(L);
  loom_preload_http(L);
  lua_getglobal(L, "package");
  lua_pushstring(L, LOOM_LUA_DIR "/?.lua;" LOOM_LUA_DIR "/?/init.lua;");
  lua_getfield(L, -2, "path");
  lua_concat(L, 2);
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
}

#endif
