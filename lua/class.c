/* Metatables for loom's object types: methods in __index, the same
 * release function serving __gc and __close where an object has one. */
#include "lm.h"

void lm_new_class(lua_State *L, const char *name, const luaL_Reg *methods,
                  lua_CFunction gc) {
  if (luaL_newmetatable(L, name)) {
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    if (gc) {
      lua_pushcfunction(L, gc);
      lua_setfield(L, -2, "__gc");
    }
  }
  lua_pop(L, 1);
}
