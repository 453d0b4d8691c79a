/* A database driver as Lua sees it. require "loom.driver.<name>" gives a
 * light userdata of the driver's vtable, which core._db_open and
 * core._listener take. A light userdata can point anywhere, so the
 * registry keeps the ones a driver module handed out, and any other value
 * is refused instead of being called through.
 *
 * Header-only: a driver module is a library of its own, which cannot call
 * into loom/core.so. */
#ifndef LM_DRIVER_H
#define LM_DRIVER_H

#include <lauxlib.h>
#include "db.h"

#define LM_DRIVERS "loom.drivers"

/* The body of luaopen_loom_driver_<name>. */
static inline int lm_driver_module(lua_State *L, const loom_db_driver_t *drv) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LM_DRIVERS);
  lua_pushboolean(L, 1);
  lua_rawsetp(L, -2, drv);
  lua_pop(L, 1);
  lua_pushlightuserdata(L, (void *)drv);
  return 1;
}

/* The driver at arg, or NULL when arg is not one a driver module gave. */
static inline const loom_db_driver_t *lm_to_driver(lua_State *L, int arg) {
  const loom_db_driver_t *drv = lua_touserdata(L, arg);
  if (!lua_islightuserdata(L, arg) || drv == NULL)
    return NULL;
  int known = 0;
  if (lua_getfield(L, LUA_REGISTRYINDEX, LM_DRIVERS) == LUA_TTABLE) {
    known = lua_rawgetp(L, -1, drv) == LUA_TBOOLEAN;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return known ? drv : NULL;
}

#endif
