/* Values between Lua and the database layer: loom.null, a cell or a
 * result pushed as Lua values, a Lua value read as a parameter. */
#include <string.h>
#include "lm_db.h"

void lm_db_push_null(lua_State *L) { lua_getfield(L, LUA_REGISTRYINDEX, "loom.null.value"); }

int lm_db_is_null(lua_State *L, int idx) {
  return lua_type(L, idx) == LUA_TUSERDATA && luaL_testudata(L, idx, LM_NULL_MT) != NULL;
}

static int null_tostring(lua_State *L) {
  lua_pushliteral(L, "loom.null");
  return 1;
}

void lm_db_push_value(lua_State *L, loom_value_t *v);

static void push_array(lua_State *L, loom_value_t *cell) {
  loom_db_array_iter_t it;
  loom_value_t elem;
  luaL_checkstack(L, 4, "array nested too deep"); /* a level of nesting each */
  loom_db_array_begin(&it, cell);
  lua_newtable(L);
  int n = 0, r;
  while ((r = loom_db_array_next(&it, &elem)) > 0) {
    lm_db_push_value(L, &elem);
    lua_rawseti(L, -2, ++n);
  }
  loom_db_array_done(&it);
  if (r < 0) {
    lua_pop(L, 1);
    lua_pushlstring(L, cell->u.s.p, cell->u.s.len);
  }
}

void lm_db_push_value(lua_State *L, loom_value_t *v) {
  switch (v->type) {
  case LOOM_VNULL: lm_db_push_null(L); break;
  case LOOM_VINT: lua_pushinteger(L, v->u.i); break;
  case LOOM_VFLOAT: lua_pushnumber(L, v->u.f); break;
  case LOOM_VBOOL: lua_pushboolean(L, v->u.b); break;
  case LOOM_VARRAY: push_array(L, v); break;
  default: lua_pushlstring(L, v->u.s.p, v->u.s.len); break;
  }
}

/* Pushes an array of rows keyed by column name, then (with_info) an info
 * table with `columns` and `affected`. */
static void push_result_ex(lua_State *L, loom_db_result_t *r, int with_info) {
  int nc = r->ncols, nr = r->nrows;
  luaL_checkstack(L, nc + 8, "too many columns");
  int names = lua_gettop(L) + 1;
  for (int c = 0; c < nc; c++)
    lua_pushstring(L, r->ops->column_name(r, c));
  lua_createtable(L, nr, 0);
  for (int i = 0; i < nr; i++) {
    lua_createtable(L, 0, nc);
    for (int c = 0; c < nc; c++) {
      loom_value_t v;
      r->ops->cell(r, i, c, &v);
      lua_pushvalue(L, names + c);
      lm_db_push_value(L, &v);
      lua_rawset(L, -3);
    }
    lua_rawseti(L, -2, i + 1);
  }
  if (!with_info) {
    lua_replace(L, names); /* the rows where the names began */
    lua_settop(L, names);
    return;
  }
  lua_createtable(L, 0, 2);
  lua_createtable(L, nc, 0);
  for (int c = 0; c < nc; c++) {
    lua_pushvalue(L, names + c);
    lua_rawseti(L, -2, c + 1);
  }
  lua_setfield(L, -2, "columns");
  if (r->affected >= 0) {
    lua_pushinteger(L, r->affected);
    lua_setfield(L, -2, "affected");
  }
  if (r->last_insert_id) {
    lua_pushinteger(L, r->last_insert_id);
    lua_setfield(L, -2, "last_insert_id");
  }
  /* Drop the names below the two results. */
  lua_rotate(L, names, 2);
  lua_settop(L, names + 1);
}

void lm_db_push_result(lua_State *L, loom_db_result_t *r) { push_result_ex(L, r, 1); }

/* Just the rows: what a batch item and a streamed row need. */
void lm_db_push_rows(lua_State *L, loom_db_result_t *r) { push_result_ex(L, r, 0); }

/* The value at idx as a parameter; -1 for a type no database takes. */
int lm_db_to_value(lua_State *L, int idx, loom_value_t *v) {
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    v->type = LOOM_VNULL;
    return 0;
  case LUA_TBOOLEAN:
    v->type = LOOM_VBOOL;
    v->u.b = lua_toboolean(L, idx);
    return 0;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      v->type = LOOM_VINT;
      v->u.i = lua_tointeger(L, idx);
    } else {
      v->type = LOOM_VFLOAT;
      v->u.f = lua_tonumber(L, idx);
    }
    return 0;
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    /* Text cannot carry NUL bytes; such a string is binary data. */
    v->type = memchr(s, 0, len) ? LOOM_VBLOB : LOOM_VTEXT;
    v->u.s.p = s;
    v->u.s.len = len;
    return 0;
  }
  default:
    if (lm_db_is_null(L, idx)) {
      v->type = LOOM_VNULL;
      return 0;
    }
    return -1;
  }
}

static const luaL_Reg null_metamethods[] = {{"__tostring", null_tostring}, {NULL, NULL}};

/* loom.null: one value, kept in the registry. */
void lm_db_open_null(lua_State *L) {
  lm_new_class(L, LM_NULL_MT, NULL, null_metamethods);
  lua_getfield(L, LUA_REGISTRYINDEX, "loom.null.value");
  if (lua_isnil(L, -1)) {
    lua_newuserdatauv(L, 0, 0);
    luaL_setmetatable(L, LM_NULL_MT);
    lua_setfield(L, LUA_REGISTRYINDEX, "loom.null.value");
  }
  lua_pop(L, 1);
}
