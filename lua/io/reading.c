/* Lua io's read formats ("l", "L", "a", a count) over a buffer that a file
 * refills, one format after another, so a read waits as often
 * as it must and a partial line is never handed out: what a format cannot
 * answer yet stays in the buffer for the refill. */
#include <stdlib.h>
#include <string.h>
#include "lm_fsproc.h"

/* The first refill of a buffer: big enough that a read of a 64 KiB chunk
 * costs a fraction of one trip to the thread pool. */
#define RBUF_MIN 262144

size_t lm_rbuf_room(lm_rbuf *b, size_t want) {
  if (b->start == b->end)
    b->start = b->end = 0;
  if (b->cap - b->end >= want)
    return b->cap - b->end;
  size_t used = b->end - b->start;
  if (b->start > 0 && b->cap - used >= want) {
    memmove(b->p, b->p + b->start, used);
    b->start = 0;
    b->end = used;
    return b->cap - b->end;
  }
  size_t cap = b->cap ? b->cap : RBUF_MIN;
  while (cap - used < want) {
    if (cap > ((size_t)-1) / 2)
      return 0;
    cap *= 2;
  }
  char *p = malloc(cap);
  if (p == NULL)
    return 0;
  if (used)
    memcpy(p, b->p + b->start, used);
  free(b->p);
  b->p = p;
  b->cap = cap;
  b->start = 0;
  b->end = used;
  return cap - used;
}

void lm_rbuf_free(lm_rbuf *b) {
  free(b->p);
  b->p = NULL;
  b->cap = b->start = b->end = 0;
}

/* A format's code: 'l', 'L', 'a', or 'n' for a count (in *n). */
static int format_of(lua_State *L, int arg, size_t *n) {
  if (lua_type(L, arg) == LUA_TNUMBER) {
    lua_Integer k = lm_checkinteger(L, arg);
    if (k < 0)
      lm_argerror(L, arg, "a count must not be negative");
    *n = (size_t)k;
    return 'n';
  }
  const char *f = lua_tostring(L, arg);
  if (f == NULL)
    lm_typeerror(L, arg, "format ('l', 'L', 'a' or a count)");
  if (*f == '*')
    f++;
  if (*f != 'l' && *f != 'L' && *f != 'a')
    lm_argerror(L, arg, "invalid format (expected 'l', 'L', 'a' or a count)");
  return *f;
}

void lm_reading_start(lua_State *L, lm_reading *r, int first, int last) {
  size_t n;
  if (last < first) {
    lua_pushliteral(L, "l");
    last = first = lua_gettop(L);
  }
  for (int i = first; i <= last; i++)
    format_of(L, i, &n);
  r->argi = first;
  r->last = last;
  r->nres = 0;
  luaL_checkstack(L, last - first + 1 + LUA_MINSTACK, "too many formats");
}

/* One format against b: 1 answered (a value pushed), 0 needs *want more
 * bytes, -1 answered with the fail value (nil) at the end of the data. */
static int one(lua_State *L, int fmt, size_t n, lm_rbuf *b, size_t *want) {
  const char *p = b->p + b->start;
  size_t avail = b->end - b->start;
  switch (fmt) {
  case 'n':
    if (avail > 0 && (avail >= n || b->eof)) {
      /* Lua's read(0) tests for the end of the data: "" before it. */
      size_t k = avail < n ? avail : n;
      lua_pushlstring(L, p, k);
      b->start += k;
      return 1;
    }
    if (b->eof)
      return -1;
    *want = n > avail ? n - avail : 1;
    return 0;
  case 'a':
    if (!b->eof) {
      *want = 1;
      return 0;
    }
    lua_pushlstring(L, p, avail);
    b->start = b->end;
    return 1;
  default: { /* 'l' or 'L' */
    const char *nl = avail ? memchr(p, '\n', avail) : NULL;
    if (nl) {
      size_t k = (size_t)(nl - p);
      lua_pushlstring(L, p, fmt == 'L' ? k + 1 : k);
      b->start += k + 1;
      return 1;
    }
    if (!b->eof) {
      *want = 1;
      return 0;
    }
    if (avail == 0)
      return -1;
    lua_pushlstring(L, p, avail);
    b->start = b->end;
    return 1;
  }
  }
}

int lm_reading_step(lua_State *L, lm_reading *r, lm_rbuf *b, size_t *want) {
  while (r->argi <= r->last) {
    size_t n = 0;
    int fmt = format_of(L, r->argi, &n);
    int got = one(L, fmt, n, b, want);
    if (got == 0)
      return 0;
    if (got < 0) {
      /* As Lua's io: the first format that fails ends the read with nil. */
      lua_pushnil(L);
      r->nres++;
      r->argi = r->last + 1;
      return 1;
    }
    r->nres++;
    r->argi++;
  }
  return 1;
}
