/* require "loom.curl": loom.http's engine on libcurl (core/http/), a
 * module of its own so that only programs making HTTP requests load
 * libcurl. It gives a light userdata of the engine's vtable, which
 * core._http_start takes; the registry remembers the ones handed out,
 * and any other pointer is refused instead of being called through. */
#include <lauxlib.h>
#include "http/client.h"

int luaopen_loom_curl(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, "loom.http.engines");
  lua_pushboolean(L, 1);
  lua_rawsetp(L, -2, &loom_http_engine);
  lua_pop(L, 1);
  lua_pushlightuserdata(L, (void *)&loom_http_engine);
  return 1;
}
