/* For hosts that link loom_embed: the drivers this build has are linked
 * in, not loom/driver/<name>.so files on package.cpath, so package.preload
 * must know them. loom_drivers.h, written by CMake, lists them. */
#include <lauxlib.h>
#include "loom_lua.h"

#define LOOM_DRIVER(name) int luaopen_loom_driver_##name(lua_State *L);
/* Written into the build directory, which lint does not see. */
// cppcheck-suppress missingInclude
#include "loom_drivers.h"
#undef LOOM_DRIVER

void loom_preload_drivers(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
#define LOOM_DRIVER(name)                                                      \
  lua_pushcfunction(L, luaopen_loom_driver_##name);                            \
  lua_setfield(L, -2, "loom.driver." #name);
// cppcheck-suppress missingInclude
#include "loom_drivers.h"
#undef LOOM_DRIVER
  lua_pop(L, 1);
}
