/* Lua io's read formats ("l", "L", "a", a count; "*l" too) answered from
 * bytes already buffered, for every object read like a Lua file (a
 * stream, a file). A read is all or nothing: its formats are answered
 * from the buffer together, or none is and the caller refills and asks
 * again; so a read that a timeout or a cancel interrupts has taken no
 * bytes, and a partial line is never handed out. */
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include "lm_io.h"

void lm_formats_check(lua_State *L, int first, int last) {
  for (int idx = first; idx <= last; idx++) {
    if (lua_type(L, idx) == LUA_TNUMBER) {
      /* As Lua's io: a float with an integer's value (2^20) is a count. */
      int exact;
      lua_Integer n = lua_tointegerx(L, idx, &exact);
      if (!exact || n < 0)
        lm_argerror(L, idx, "a byte count must be a non-negative integer");
      continue;
    }
    const char *f = lua_tostring(L, idx);
    if (f && *f == '*')
      f++;
    if (lua_type(L, idx) != LUA_TSTRING || (*f != 'l' && *f != 'L' && *f != 'a'))
      lm_argerror(L, idx, "invalid format (\"l\", \"L\", \"a\" or a byte count)");
  }
}

#define NEED_MORE SIZE_MAX

/* One format against the bytes p[*off, len): pushes its value and moves
 * *off, or returns how many bytes must be buffered to answer it. */
static size_t one_format(lua_State *L, int idx, const char *p, size_t len, size_t *off,
                         int done, size_t max, int *failed) {
  size_t at = *off, left = len - at;
  if (lua_type(L, idx) == LUA_TNUMBER) {
    size_t n = (size_t)lua_tointeger(L, idx);
    if (left >= n && (n > 0 || left > 0 || done)) {
      if (n == 0 && left == 0) {
        lua_pushnil(L); /* read(0) at the end, as a file says */
        *failed = 1;
      } else {
        lua_pushlstring(L, p + at, n);
        *off = at + n;
      }
      return 0;
    }
    if (!done)
      return at + (n > 0 ? n : 1);
    if (left == 0) {
      lua_pushnil(L);
      *failed = 1;
    } else {
      lua_pushlstring(L, p + at, left);
      *off = len;
    }
    return 0;
  }
  const char *f = lua_tostring(L, idx);
  if (*f == '*')
    f++;
  if (*f == 'a') {
    if (!done)
      return NEED_MORE;
    lua_pushlstring(L, p + at, left);
    *off = len;
    return 0;
  }
  const char *nl = left ? memchr(p + at, '\n', left) : NULL;
  size_t line = nl ? (size_t)(nl - (p + at)) : left;
  if (line > max) {
    lm_push_error(L, "io", "a line longer than %I bytes (the stream's high-water mark)",
                  (lua_Integer)max);
    lua_pushliteral(L, "EMSGSIZE");
    lua_setfield(L, -2, "code");
    lua_error(L);
  }
  if (nl == NULL && !done)
    return max == SIZE_MAX ? len + 1 : at + max + 1;
  if (nl == NULL && left == 0) {
    lua_pushnil(L);
    *failed = 1;
    return 0;
  }
  lua_pushlstring(L, p + at, line + (nl && *f == 'L'));
  *off = at + line + (nl != NULL);
  return 0;
}

int lm_formats_answer(lua_State *L, int first, int n, const char *p, size_t len, int done,
                      size_t max, size_t *used, size_t *want) {
  size_t off = 0;
  int failed = 0, pushed = 0;
  if (n > INT_MAX - LUA_MINSTACK || !lua_checkstack(L, n + LUA_MINSTACK))
    lm_error(L, "argument", "too many formats (%d)", n);
  /* As Lua's io: the first format that fails ends the read with nil. */
  for (int i = 0; i < n && !failed; i++, pushed++) {
    size_t need = one_format(L, first + i, p, len, &off, done, max, &failed);
    if (need) {
      lua_pop(L, pushed);
      *want = need;
      return -1;
    }
  }
  *used = off;
  return pushed;
}
