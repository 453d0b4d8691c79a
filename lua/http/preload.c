/* For hosts that link loom_embed: loom.http's engine linked in rather than
 * a loom/curl.so on package.cpath, so package.preload must know it. In a
 * build without loom.http (LOOM_WITH_HTTP=OFF, or no libcurl) there is
 * nothing to put there, and loom.http says so when used. */
#include <lauxlib.h>
#include "loom_lua.h"

#ifdef LOOM_HAVE_HTTP
int luaopen_loom_curl(lua_State *L);
#endif

void loom_preload_http(lua_State *L) {
#ifdef LOOM_HAVE_HTTP
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_loom_curl);
  lua_setfield(L, -2, "loom.curl");
  lua_pop(L, 1);
#else
  (void)L;
#endif
}
