/* Metatables for loom's object types, all made one way: the methods in
 * __index and the metamethods (__gc, __close, __tostring...) a class lists,
 * each function holding the metatable as upvalue 1. With it lm_check_self
 * is a pointer compare, where luaL_testudata looks the metatable up by
 * name (a string hash and compare) on every send, receive or query. */
#include "lm.h"

void lm_new_class(lua_State *L, const char *name, const luaL_Reg *methods,
                  const luaL_Reg *metamethods) {
  if (luaL_newmetatable(L, name)) {
    if (methods) {
      lua_newtable(L);
      lua_pushvalue(L, -2);
      luaL_setfuncs(L, methods, 1);
      lua_setfield(L, -2, "__index");
    }
    if (metamethods) {
      lua_pushvalue(L, -1);
      luaL_setfuncs(L, metamethods, 1);
    }
  }
  lua_pop(L, 1);
}

void lm_class_add(lua_State *L, const char *name, const luaL_Reg *methods) {
  luaL_getmetatable(L, name);
  lua_getfield(L, -1, "__index");
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, methods, 1);
  lua_pop(L, 2);
}

void *lm_check_self(lua_State *L, const char *mt, const char *tname) {
  void *p = lua_touserdata(L, 1);
  if (p != NULL && lua_getmetatable(L, 1)) {
    int same = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
    if (same)
      return p;
  }
  return lm_checkudata(L, 1, mt, tname);
}
