/* COPY text format for insert_many: rows of Lua values to tab-separated
 * lines, with backslash, tab, newline and carriage return escaped and NULL
 * as \N. Done in C because bulk loads format millions of fields. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "lm.h"

/* A growable byte buffer owned by a userdata, so an error halfway through
 * a row cannot leak it (luaL_Buffer would forbid the stack juggling that
 * reading rows needs). The chunk is handed to conn:_copy_data as this
 * userdata, not copied into a Lua string: megabytes of COPY text would
 * otherwise count as Lua allocation and drive the garbage collector through
 * the caller's (large) rows table while it loads. */
#define LM_COPYBUF_MT "loom.copybuf"

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

static const luaL_Reg outbuf_metamethods[] = {{"__gc", outbuf_gc}, {NULL, NULL}};

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

/* s has no NUL byte before s[len], which is one (a Lua string): strcspn
 * finds the next character to escape, or stops at the end. */
static void add_escaped(lua_State *L, outbuf *b, const char *s, size_t len) {
  size_t start = 0;
  for (;;) {
    size_t k = strcspn(s + start, "\\\t\n\r");
    if (start + k >= len)
      break;
    put(L, b, s + start, k);
    char c = s[start + k];
    char esc[2] = {'\\', c == '\t' ? 't' : c == '\n' ? 'n' : c == '\r' ? 'r' : '\\'};
    put(L, b, esc, 2);
    start += k + 1;
  }
  put(L, b, s + start, len - start);
}

/* Decimal digits of an integer into buf (at least 21 bytes); returns the length. */
static size_t format_int(char *buf, lua_Integer v) {
  char tmp[24];
  size_t n = 0, k = 0;
  lua_Unsigned u = v < 0 ? 0 - (lua_Unsigned)v : (lua_Unsigned)v;
  do {
    tmp[n++] = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (v < 0)
    buf[k++] = '-';
  while (n)
    buf[k++] = tmp[--n];
  return k;
}

/* A float as the shortest of up to 6 decimals that reads back as exactly
 * the same double (m / 10^d with m < 2^53: both exact, so the division is
 * the correctly rounded value the server's parser gives too); otherwise
 * all 17 significant digits. printf is the slow part of bulk loads. */
static size_t format_float(char *buf, double f) {
  static const double pow10[] = {1, 10, 100, 1000, 10000, 100000, 1000000};
  if (f == f && f > -1e15 && f < 1e15) {
    for (int d = 0; d <= 6; d++) {
      double m = f * pow10[d];
      if (m >= 9007199254740992.0 || m <= -9007199254740992.0)
        break;
      if (m != (double)(int64_t)m || m / pow10[d] != f)
        continue;
      int64_t i = (int64_t)m;
      if (i == 0 && 1 / f < 0)
        break; /* -0 */
      char digits[24];
      size_t n = format_int(digits, i < 0 ? -i : i), k = 0;
      if (i < 0)
        buf[k++] = '-';
      if (d == 0) {
        memcpy(buf + k, digits, n);
        return k + n;
      }
      if (n <= (size_t)d) { /* 0.000ddd */
        buf[k++] = '0';
        buf[k++] = '.';
        for (size_t z = n; z < (size_t)d; z++)
          buf[k++] = '0';
        memcpy(buf + k, digits, n);
        return k + n;
      }
      memcpy(buf + k, digits, n - (size_t)d);
      k += n - (size_t)d;
      buf[k++] = '.';
      memcpy(buf + k, digits + n - d, (size_t)d);
      return k + (size_t)d;
    }
  }
  /* printf's "nan" (or "-nan", from the sign bit of 0/0) and "inf" are
   * not what the server reads: spell them as exec's parameters do. */
  if (f != f)
    return (size_t)snprintf(buf, 64, "NaN");
  if (f > 1.7976931348623157e308)
    return (size_t)snprintf(buf, 64, "Infinity");
  if (f < -1.7976931348623157e308)
    return (size_t)snprintf(buf, 64, "-Infinity");
  return (size_t)snprintf(buf, 64, "%.17g", f);
}

/* Appends the value on top of the stack (and pops it). */
static void add_field(lua_State *L, outbuf *b, int row, int col) {
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
    char num[64];
    size_t n;
    if (lua_isinteger(L, -1))
      n = format_int(num, lua_tointeger(L, -1));
    else
      n = format_float(num, lua_tonumber(L, -1));
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

/* core _copy_format(rows, columns, from, to) -> the text of rows from..to,
 * as a chunk for conn:_copy_data */
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
  lm_new_class(L, LM_COPYBUF_MT, NULL, outbuf_metamethods);
  luaL_setmetatable(L, LM_COPYBUF_MT);
  int buf = lua_gettop(L);
  if (to >= from && to - from < 10000000) {
    /* Most rows fit in 16 bytes a field: one allocation, no regrowth. */
    b->cap = (size_t)(to - from + 1) * (size_t)(ncols > 0 ? ncols : 1) * 16 + 256;
    b->p = malloc(b->cap);
    if (b->p == NULL)
      b->cap = 0;
  }
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
  lua_settop(L, buf);
  return 1;
}

const char *lm_copy_chunk(lua_State *L, int idx, size_t *len) {
  if (lua_type(L, idx) == LUA_TSTRING)
    return lua_tolstring(L, idx, len);
  outbuf *o = luaL_testudata(L, idx, LM_COPYBUF_MT);
  if (o == NULL)
    return NULL;
  *len = o->len;
  return o->p ? o->p : "";
}

void lm_copy_chunk_free(lua_State *L, int idx) {
  outbuf *o = luaL_testudata(L, idx, LM_COPYBUF_MT);
  if (o) {
    free(o->p);
    o->p = NULL;
    o->len = o->cap = 0;
  }
}

const luaL_Reg lm_copy_funcs[] = {{"_copy_format", l_copy_format}, {NULL, NULL}};
