/* Metatables for loom's object types (userdata; loom.error's tables have
 * their own, lua/error.c), all made one way: the methods in
 * __index and the metamethods (__gc, __close, __tostring...) a class lists,
 * each function holding the metatable as upvalue 1. With it lm_check_self
 * is a pointer compare, where luaL_testudata looks the metatable up by
 * name (a string hash and compare) on every send, receive or query. */
#include <string.h>
#include "lm.h"

static int guard_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  (void)kctx;
  return lua_gettop(L);
}

/* __gc, __close, __tostring and an __index function run for whatever
 * carries the metatable: getmetatable(obj) gives it to any script, and
 * setmetatable({}, it) makes a table that the collector, a <close>,
 * tostring or an indexing then hands to a function written for the
 * class's userdata. The guard (upvalue 1 the metatable, 2 the
 * metamethod) passes only the class's own objects on: another gets no
 * result, or from tostring "<name> (not one)". A continuation, because a
 * __close may wait (a stream's flush). Methods and the other metamethods
 * check their self themselves (lm_check_self). */
static int is_own(lua_State *L) {
  int own = lua_type(L, 1) == LUA_TUSERDATA && lua_getmetatable(L, 1);
  if (own) {
    own = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
  }
  return own;
}

static int pass_on(lua_State *L) {
  int n = lua_gettop(L);
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_insert(L, 1);
  lua_callk(L, n, LUA_MULTRET, 0, guard_k);
  return lua_gettop(L);
}

static int guard(lua_State *L) {
  return is_own(L) ? pass_on(L) : 0;
}

static int guard_tostring(lua_State *L) {
  if (is_own(L))
    return pass_on(L);
  lua_getfield(L, lua_upvalueindex(1), "__name");
  lua_pushfstring(L, "%s (not one)", lua_tostring(L, -1));
  return 1;
}

static void set_metamethods(lua_State *L, const luaL_Reg *m) {
  for (; m->name; m++) {
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, m->func, 1);
    int tostr = strcmp(m->name, "__tostring") == 0;
    if (tostr || strcmp(m->name, "__gc") == 0 || strcmp(m->name, "__close") == 0 ||
        strcmp(m->name, "__index") == 0) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_pushcclosure(L, tostr ? guard_tostring : guard, 2);
    }
    lua_setfield(L, -2, m->name);
  }
}

void lm_new_class(lua_State *L, const char *name, const luaL_Reg *methods,
                  const luaL_Reg *metamethods) {
  if (luaL_newmetatable(L, name)) {
    if (methods) {
      lua_newtable(L);
      lua_pushvalue(L, -2);
      luaL_setfuncs(L, methods, 1);
      lua_setfield(L, -2, "__index");
    }
    if (metamethods)
      set_metamethods(L, metamethods);
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
