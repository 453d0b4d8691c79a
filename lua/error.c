/* Errors as tables with a kind: callers branch on err.kind, people read
 * tostring(err). Argument errors follow luaL_argerror's wording. */
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include "lm.h"

static void push_error_table(lua_State *L, const char *kind, int msg_idx) {
  msg_idx = lua_absindex(L, msg_idx);
  lua_createtable(L, 0, 3);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushvalue(L, msg_idx);
  lua_setfield(L, -2, "message");
  luaL_setmetatable(L, LM_ERROR_MT);
  lua_remove(L, msg_idx);
}

void lm_push_error(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  push_error_table(L, kind, -1);
}

int lm_error(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  push_error_table(L, kind, -1);
  return lua_error(L);
}

/* Finds "loom.name" for a function called without a name (through pcall,
 * say), as lauxlib does for global functions. */
static const char *loom_function_name(lua_State *L, lua_Debug *ar) {
  if (!lua_getinfo(L, "f", ar))
    return "?";
  int fn = lua_gettop(L);
  const char *name = "?";
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, "loom") == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      if (lua_rawequal(L, -1, fn) && lua_type(L, -2) == LUA_TSTRING) {
        name = lua_pushfstring(L, "loom.%s", lua_tostring(L, -2));
        lua_replace(L, fn);
        lua_settop(L, fn);
        return name;
      }
      lua_pop(L, 1);
    }
  }
  lua_settop(L, fn - 1);
  return name;
}

int lm_argerror(lua_State *L, int arg, const char *extramsg) {
  lua_Debug ar;
  if (!lua_getstack(L, 0, &ar))
    return lm_error(L, "argument", "bad argument #%d (%s)", arg, extramsg);
  lua_getinfo(L, "n", &ar);
  if (ar.namewhat && strcmp(ar.namewhat, "method") == 0) {
    arg--;
    if (arg == 0)
      return lm_error(L, "argument", "calling '%s' on bad self (%s)",
                      ar.name ? ar.name : "?", extramsg);
  }
  const char *name = ar.name ? ar.name : loom_function_name(L, &ar);
  return lm_error(L, "argument", "bad argument #%d to '%s' (%s)", arg, name, extramsg);
}

int lm_typeerror(lua_State *L, int arg, const char *tname) {
  const char *actual = luaL_typename(L, arg);
  if (luaL_getmetafield(L, arg, "__name") == LUA_TSTRING)
    actual = lua_tostring(L, -1);
  const char *msg = lua_pushfstring(L, "%s expected, got %s", tname, actual);
  return lm_argerror(L, arg, msg);
}

lua_Number lm_checknumber(lua_State *L, int arg) {
  int ok;
  lua_Number n = lua_tonumberx(L, arg, &ok);
  if (!ok)
    lm_typeerror(L, arg, "number");
  return n;
}

lua_Integer lm_checkinteger(lua_State *L, int arg) {
  int ok;
  lua_Integer n = lua_tointegerx(L, arg, &ok);
  if (!ok) {
    if (lua_isnumber(L, arg))
      lm_argerror(L, arg, "number has no integer representation");
    else
      lm_typeerror(L, arg, "integer");
  }
  return n;
}

/* A duration: a non-negative number of seconds, not NaN. */
double lm_checkseconds(lua_State *L, int arg) {
  double s = lm_checknumber(L, arg);
  if (!(s >= 0))
    lm_argerror(L, arg, "seconds must be a non-negative number");
  return s;
}

/* An optional duration: -1 when absent. */
double lm_optseconds(lua_State *L, int arg) {
  return lua_isnoneornil(L, arg) ? -1 : lm_checkseconds(L, arg);
}

void lm_checkcallable(lua_State *L, int arg) {
  if (lua_type(L, arg) == LUA_TFUNCTION)
    return;
  if (luaL_getmetafield(L, arg, "__call") != LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  lm_typeerror(L, arg, "function");
}

void *lm_checkudata(lua_State *L, int arg, const char *mt, const char *tname) {
  void *p = luaL_testudata(L, arg, mt);
  if (p == NULL)
    lm_typeerror(L, arg, tname);
  return p;
}

int lm_is_error_kind(lua_State *L, int idx, const char *kind) {
  if (lua_type(L, idx) != LUA_TTABLE)
    return 0;
  idx = lua_absindex(L, idx);
  /* loom's own errors only (as loom.is_error): a user's plain table with
   * kind = "cancelled" is a failure like any value a task raises, not a
   * cancel that goes unreported. */
  if (!lua_getmetatable(L, idx))
    return 0;
  luaL_getmetatable(L, LM_ERROR_MT);
  int ours = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  if (!ours)
    return 0;
  /* Raw: the value may be a user's table whose __index raises or yields
   * (a strict object), and it must pass through unchanged. */
  lua_pushliteral(L, "kind");
  lua_rawget(L, idx);
  int same = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), kind) == 0;
  lua_pop(L, 1);
  return same;
}

static int error_tostring(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "kind");
  lua_getfield(L, 1, "message");
  lua_getfield(L, 1, "code");
  const char *kind = luaL_optstring(L, 2, "error");
  const char *msg = lua_isnil(L, 3) ? "" : luaL_tolstring(L, 3, NULL);
  if (!lua_isnil(L, 4)) {
    const char *code = luaL_tolstring(L, 4, NULL);
    lua_pushfstring(L, "%s [%s]: %s", kind, code, msg);
  } else {
    lua_pushfstring(L, "%s: %s", kind, msg);
  }
  return 1;
}

/* loom.error(kind, message [, fields]) raises an error of that kind. */
static int l_error(lua_State *L) {
  const char *kind = luaL_checkstring(L, 1);
  const char *msg = luaL_optstring(L, 2, kind);
  lua_pushstring(L, msg);
  push_error_table(L, kind, -1);
  if (lua_type(L, 3) == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, -4);
    }
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
  }
  return lua_error(L);
}

/* loom.is_error(value [, kind]) */
static int l_is_error(lua_State *L) {
  lua_settop(L, 2); /* the metatables pushed below must not land at index 2 */
  int is = lua_type(L, 1) == LUA_TTABLE && lua_getmetatable(L, 1) &&
           (luaL_getmetatable(L, LM_ERROR_MT), lua_rawequal(L, -1, -2));
  if (is && !lua_isnoneornil(L, 2))
    is = lm_is_error_kind(L, 1, luaL_checkstring(L, 2));
  lua_pushboolean(L, is);
  return 1;
}

const luaL_Reg lm_error_funcs[] = {
  {"error", l_error},
  {"is_error", l_is_error},
  {NULL, NULL}
};

static const luaL_Reg error_metamethods[] = {{"__tostring", error_tostring}, {NULL, NULL}};

/* Not lm_new_class: its guard passes on only userdata, and errors are
 * tables. */
void lm_open_error(lua_State *L) {
  if (luaL_newmetatable(L, LM_ERROR_MT)) {
    lua_pushvalue(L, -1);
    luaL_setfuncs(L, error_metamethods, 1);
  }
  lua_pop(L, 1);
}
