/* COPY text format for insert_many: rows of Lua values to tab-separated
 * lines, with backslash, tab, newline and carriage return escaped and NULL
 * as \N. Done in C because bulk loads format millions of fields. */
#include <stdlib.h>
#include <string.h>
#include "lm.h"

/* A growable byte buffer owned by a userdata, so an error halfway through
 * a row cannot leak it (luaL_Buffer would forbid the stack juggling that
 * reading rows needs). */
typedef struct outbuf {
  char *p;
  size_t len, cap;
} outbuf;

static int outbuf_gc(lua_State *L) {
  outbuf *o = lua_touserdata(L, 1);
  free(o->p);
  o->p = NULL;
  return 0;
}

static void put(lua_State *L, outbuf *o, const char *s, size_t n) {
  if (o->len + n > o->cap) {
    size_t cap = o->cap ? o->cap : 65536;
    while (cap < o->len + n)
      cap *= 2;
    char *p = realloc(o->p, cap);
    if (p == NULL)
      lm_error(L, "memory", "out of memory formatting COPY data");
    o->p = p;
    o->cap = cap;
  }
  memcpy(o->p + o->len, s, n);
  o->len += n;
}

static void add_escaped(lua_State *L, outbuf *b, const char *s, size_t len) {
  size_t start = 0;
  for (size_t i = 0; i < len; i++) {
    const char *esc = NULL;
    switch (s[i]) {
    case '\\': esc = "\\\\"; break;
    case '\t': esc = "\\t"; break;
    case '\n': esc = "\\n"; break;
    case '\r': esc = "\\r"; break;
    default: continue;
    }
    put(L, b, s + start, i - start);
    put(L, b, esc, strlen(esc));
    start = i + 1;
  }
  put(L, b, s + start, len - start);
}

/* Appends the value on top of the stack (and pops it). */
static void add_field(lua_State *L, outbuf *b, int row, int col) {
  char num[64];
  switch (lua_type(L, -1)) {
  case LUA_TNIL:
    lua_pop(L, 1);
    put(L, b, "\\N", 2);
    return;
  case LUA_TBOOLEAN: {
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    put(L, b, v ? "t" : "f", 1);
    return;
  }
  case LUA_TNUMBER: {
    size_t n;
    if (lua_isinteger(L, -1))
      n = (size_t)snprintf(num, sizeof num, LUA_INTEGER_FMT, lua_tointeger(L, -1));
    else
      n = (size_t)snprintf(num, sizeof num, "%.17g", lua_tonumber(L, -1));
    lua_pop(L, 1);
    put(L, b, num, n);
    return;
  }
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    if (memchr(s, 0, len)) {
      /* Text cannot hold NUL bytes: this is binary, for a bytea column,
       * written as bytea's hex input (its backslash escaped for COPY). */
      static const char hex[] = "0123456789abcdef";
      put(L, b, "\\\\x", 3);
      for (size_t i = 0; i < len; i++) {
        char pair[2] = {hex[(unsigned char)s[i] >> 4], hex[(unsigned char)s[i] & 15]};
        put(L, b, pair, 2);
      }
    } else {
      add_escaped(L, b, s, len);
    }
    lua_pop(L, 1);
    return;
  }
  default:
    if (luaL_testudata(L, -1, "loom.null")) {
      lua_pop(L, 1);
      put(L, b, "\\N", 2);
      return;
    }
    lm_error(L, "argument", "insert_many: row %d, column %d is a %s (expected a string, "
             "number, boolean or loom.null)", row, col, luaL_typename(L, -1));
  }
}

/* core _copy_format(rows, columns, from, to) -> text of rows from..to */
static int l_copy_format(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Integer from = luaL_checkinteger(L, 3), to = luaL_checkinteger(L, 4);
  int ncols = (int)lua_rawlen(L, 2);
  lua_settop(L, 4);
  luaL_checkstack(L, ncols + 8, "too many columns");
  int names = lua_gettop(L) + 1;
  for (int c = 1; c <= ncols; c++)
    lua_rawgeti(L, 2, c);
  outbuf *b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, outbuf_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  for (lua_Integer r = from; r <= to; r++) {
    if (lua_rawgeti(L, 1, r) != LUA_TTABLE)
      return lm_error(L, "argument", "insert_many: row %d is a %s, not a table", (int)r,
                      luaL_typename(L, -1));
    int row = lua_gettop(L);
    int positional = lua_rawlen(L, row) > 0;
    for (int c = 1; c <= ncols; c++) {
      if (c > 1)
        put(L, b, "\t", 1);
      if (positional)
        lua_rawgeti(L, row, c);
      else {
        lua_pushvalue(L, names + c - 1);
        lua_gettable(L, row);
      }
      add_field(L, b, (int)r, c);
    }
    put(L, b, "\n", 1);
    lua_settop(L, row - 1);
  }
  lua_pushlstring(L, b->p ? b->p : "", b->len);
  free(b->p);
  b->p = NULL;
  return 1;
}

const luaL_Reg lm_copy_funcs[] = {{"_copy_format", l_copy_format}, {NULL, NULL}};
