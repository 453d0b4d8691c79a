/* The value codec of loom.thread (codec.h says what crosses and why).
 *
 * A message is a uint32 count of values, then each value: one tag byte,
 * then its payload. Numbers and lengths are memcpy'd in host byte order:
 * both ends are threads of one process. Tables are a header (array length,
 * number of other pairs) followed by the array items and the pairs; a Lua
 * function is its lua_dump bytecode followed by its upvalues. Tables and
 * Lua functions are numbered in the order they are first met; meeting one
 * again emits a back reference to that number and sets the SHARED bit in
 * the first occurrence's tag, so the receiver keeps a reference only to
 * objects that are referred to again (most are not). An upvalue met again
 * (closures sharing a variable) is a reference to the first function and
 * upvalue that had it, joined by the receiver.
 *
 * The receiver checks the framing of everything it reads (a truncated or
 * garbled buffer is a `protocol` error); the bytecode inside a function is
 * handed to lua_load as it is, trusted as the encoder's own output.
 *
 * A thread channel (loom.thread.channel) crosses by reference: its address
 * in the value, and after the last value a trailer, the addresses of the
 * channels the message holds a reference to and their count (uint32, the
 * last 4 bytes of every message). The message owns those references until
 * lm_xbuf_free, so a message dropped unread (a job never run, a channel
 * freed with messages in it) lets go of its channels too; the receiver
 * takes a reference of its own for each channel it decodes.
 *
 * A large message may be a stream (xstream.h): the same bytes, published
 * as they are written, so the receiver decodes while the sender encodes.
 * Two things the sender patches in place must then not lie in bytes
 * already published: a table's pair count (the tables that hold most of
 * the message count their pairs first; a small one holds publishing back
 * while it is encoded), and the SHARED bit (not set at all: the receiver
 * of a stream keeps every table and function). */
#include <ctype.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <lualib.h>
#include "lm.h"
#include "loom_lua.h"
#include "codec.h"
#include "xstream.h"

enum {
  T_NIL, T_FALSE, T_TRUE, T_INT8, T_INT32, T_INT64, T_FLOAT, T_SSTR, T_STR,
  T_TABLE, T_FUNC, T_REF, T_CFUNC, T_MODULE, T_NULL, T_META, T_KSTR, T_KREF,
  T_XCHAN, T_UPREF
};
#define T_SHARED 0x80

#define XBUF_MT "loom.xbuf"
#define TEXT_OF(x) #x
#define NUMBER_TEXT(x) TEXT_OF(x)
#define DEPTH_TEXT NUMBER_TEXT(LM_XCOPY_MAX_DEPTH)
#define NULL_KEY "loom.null.value"
/* A module name standing for the receiver's globals (LUA_RIDX_GLOBALS),
 * whatever its package.loaded._G holds. */
#define GLOBALS_NAME "_G"

static const char cindex_key = 'c';

/* A table or Lua function met while encoding: 16 bytes, as the hash is
 * probed once per table and its cache misses are most of the cost. */
typedef struct seen {
  const void *key;
  uint32_t seq;    /* its number, or the module's in `modules` */
  uint32_t module; /* 1: a module's table, sent by name; UPVALUE + n: the
                      key is an upvalue (lua_upvalueid), the n-th of
                      function number seq */
} seen;
#define UPVALUE 1

typedef struct module_name {
  const char *name;
  size_t len;
} module_name;

/* The userdata behind an lm_xbuf: the buffer first, so an lm_xbuf * is
 * also its address. The encoder's tables live here too, so an error
 * halfway leaks none of them. */
typedef struct xbuf_ud {
  lm_xbuf b;
  seen *seen;
  size_t seen_n;
  int seen_bits;     /* the hash has 1 << seen_bits slots */
  size_t *pos;       /* by number: offset of the object's tag byte */
  size_t pos_cap;
  module_name *modules;
  size_t nmodules, modules_cap;
  loom_xchan_t **chans;  /* channels met, one reference each */
  size_t nchans, chans_cap;
  int complete;          /* b holds a whole message, trailer included */
  /* Encoding into a stream (b.p is its pages, not malloc'd): the
   * encoder's reference. */
  lm_xstream *stream;
} xbuf_ud;

/* Frees the encoder's tables; the buffer too unless keep_buffer. */
static void xbuf_release(xbuf_ud *u, int keep_buffer) {
  free(u->seen);
  free(u->pos);
  free(u->modules);
  u->seen = NULL;
  u->pos = NULL;
  u->modules = NULL;
  u->seen_n = u->pos_cap = u->nmodules = u->modules_cap = 0;
  u->seen_bits = 0;
  if (keep_buffer)
    return;
  if (u->stream) {
    /* Failing the stream is its owner's to do (with an error it may
     * want to pass on): lm_xcopy_encode_stream. */
    lm_xstream_unref(u->stream);
    u->stream = NULL;
    u->b.p = NULL;
  }
  if (u->complete)
    lm_xbuf_free(u->b.p, u->b.len);
  else
    free(u->b.p);
  for (size_t i = 0; i < u->nchans; i++)
    loom_xchan_unref(u->chans[i]);
  free(u->chans);
  u->chans = NULL;
  u->nchans = u->chans_cap = 0;
  u->b.p = NULL;
  u->b.len = u->b.cap = 0;
}

/* The trailer of a whole message: how many channels it refers to, and
 * where their addresses start (NULL for a buffer too short to be one). */
static const char *trailer(const char *p, size_t len, uint32_t *n) {
  *n = 0;
  if (p == NULL || len < 8)
    return NULL;
  uint32_t c;
  memcpy(&c, p + len - 4, 4);
  if ((uint64_t)c * sizeof(void *) > len - 8)
    return NULL;
  *n = c;
  return p + len - 4 - (size_t)c * sizeof(void *);
}

/* Calls each(ch) for every channel a whole message refers to. */
static void each_chan(const char *p, size_t len, void (*each)(loom_xchan_t *ch)) {
  uint32_t n;
  const char *t = trailer(p, len, &n);
  for (uint32_t i = 0; t && i < n; i++) {
    loom_xchan_t *ch;
    memcpy(&ch, t + i * sizeof ch, sizeof ch);
    each(ch);
  }
}

char *lm_xbuf_dup(const char *p, size_t len) {
  char *copy = malloc(len);
  if (copy == NULL)
    return NULL;
  memcpy(copy, p, len);
  each_chan(copy, len, loom_xchan_ref);
  return copy;
}

void lm_xbuf_free(char *p, size_t len) {
  each_chan(p, len, loom_xchan_unref);
  free(p);
}

void lm_xbuf_release_chans(const char *p, size_t len) { each_chan(p, len, loom_xchan_unref); }

static int xbuf_gc(lua_State *L) {
  xbuf_ud *u = luaL_testudata(L, 1, XBUF_MT);
  if (u)
    xbuf_release(u, 0);
  return 0;
}

static xbuf_ud *xbuf_push(lua_State *L) {
  xbuf_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
  memset(u, 0, sizeof *u);
  if (luaL_newmetatable(L, XBUF_MT)) {
    lua_pushcfunction(L, xbuf_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return u;
}

char *lm_xbuf_take(lm_xbuf *b, size_t *len) {
  char *p = b->p;
  *len = b->len;
  b->p = NULL;
  b->len = b->cap = 0;
  return p;
}

/* ---- encoding ------------------------------------------------------------ */

#define KEY_SLOTS 256
#define KEYS_MAX 128
/* Lua interns strings up to this length (LUAI_MAXSHORTLEN). */
#define SHORT_STRING 40

/* How the encoder got from one level to the next: what an error's path
 * shows. */
enum { SEG_ARG, SEG_INDEX, SEG_FIELD, SEG_KEY, SEG_UPVALUE };
typedef struct seg {
  int kind;
  int key;          /* SEG_FIELD: stack index of the key */
  lua_Integer i;    /* SEG_ARG, SEG_INDEX, SEG_UPVALUE */
  const char *name; /* SEG_UPVALUE */
} seg;

typedef struct enc {
  lua_State *L;
  xbuf_ud *u;
  const char *what;
  uint32_t nobj;
  int seeded;       /* the module tables are in the seen-hash */
  int index_fresh;  /* the C function index was rebuilt during this encode */
  int depth;
  /* Short strings met so far (keys mostly: "id", "name" in every record):
   * the receiver keeps them, and a repeat is two bytes it need not intern
   * again. Keyed by the interned string's address. */
  int nkeys;
  const void *keys[KEY_SLOTS];
  unsigned char key_no[KEY_SLOTS];
  /* Streaming: where the bytes still to be patched begin (the header of
   * the outermost table whose pair count is written once its pairs are;
   * NO_HOLD: none), and the length at which to publish next. */
  size_t hold, next_publish;
  seg path[LM_XCOPY_MAX_DEPTH + 1];
} enc;

#define NO_HOLD SIZE_MAX
/* A streaming encoder publishes about this often: often enough that the
 * receiver starts early, rarely enough that the wake-ups cost nothing. */
#define PUBLISH_STEP (32 * 1024)

static int is_identifier(const char *s, size_t n) {
  if (n == 0 || !(s[0] == '_' || isalpha((unsigned char)s[0])))
    return 0;
  for (size_t i = 1; i < n; i++)
    if (!(s[i] == '_' || isalnum((unsigned char)s[i])))
      return 0;
  return 1;
}

static void push_seg(lua_State *L, const enc *e, int d) {
  const seg *s = &e->path[d];
  switch (s->kind) {
  case SEG_ARG:
    /* %I is lua_pushfstring's own lua_Integer conversion. */
    // cppcheck-suppress invalidLengthModifierError
    lua_pushfstring(L, "%s[%I]", e->what, s->i);
    return;
  case SEG_INDEX:
    // cppcheck-suppress invalidLengthModifierError
    lua_pushfstring(L, "[%I]", s->i);
    return;
  case SEG_KEY:
    lua_pushliteral(L, "(key)");
    return;
  case SEG_UPVALUE:
    if (s->name && *s->name)
      lua_pushfstring(L, "(upvalue %s)", s->name);
    else
      // cppcheck-suppress invalidLengthModifierError
      lua_pushfstring(L, "(upvalue %I)", s->i);
    return;
  }
  int k = s->key;
  size_t n;
  switch (lua_type(L, k)) {
  case LUA_TSTRING: {
    const char *str = lua_tolstring(L, k, &n);
    if (is_identifier(str, n))
      lua_pushfstring(L, ".%s", str);
    else
      lua_pushfstring(L, "[\"%s\"]", str);
    return;
  }
  case LUA_TNUMBER:
    if (lua_isinteger(L, k))
      lua_pushfstring(L, "[%I]", lua_tointeger(L, k));
    else
      lua_pushfstring(L, "[%f]", lua_tonumber(L, k));
    return;
  case LUA_TBOOLEAN:
    lua_pushstring(L, lua_toboolean(L, k) ? "[true]" : "[false]");
    return;
  default:
    lua_pushfstring(L, "[%s]", luaL_typename(L, k));
  }
}

/* Raises the argument error for the value at the current depth. The buffer
 * is freed now rather than at the next collection: it may be large. */
static int enc_fail(enc *e, const char *what_fails) {
  lua_State *L = e->L;
  xbuf_release(e->u, 0);
  luaL_checkstack(L, 24, NULL);
  int first = lua_gettop(L) + 1;
  int last = e->depth;
  /* A path 200 levels deep reads best with its middle left out. */
  for (int d = 0; d <= last; d++) {
    if (last > 16 && d == 6) {
      lua_pushliteral(L, "...");
      d = last - 8;
    }
    push_seg(L, e, d);
  }
  lua_concat(L, lua_gettop(L) - first + 1);
  return lm_error(L, "argument", "cannot copy %s at %s", what_fails, lua_tostring(L, -1));
}

static int enc_oom(enc *e) {
  xbuf_release(e->u, 0);
  return lm_error(e->L, "memory", "out of memory copying %s", e->what);
}

static int grow(lm_xbuf *b, size_t n) {
  xbuf_ud *u = (xbuf_ud *)b;
  if (u->stream) {
    if (n > SIZE_MAX - b->len || lm_xstream_grow(u->stream, b->len + n))
      return -1;
    b->cap = u->stream->mapped;
    return 0;
  }
  size_t cap = b->cap ? b->cap : 256;
  while (cap - b->len < n) {
    if (cap > SIZE_MAX / 2)
      return -1;
    cap *= 2;
  }
  char *p = realloc(b->p, cap);
  if (p == NULL)
    return -1;
  b->p = p;
  b->cap = cap;
  return 0;
}

static inline char *reserve(enc *e, size_t n) {
  lm_xbuf *b = &e->u->b;
  if (b->cap - b->len < n && grow(b, n))
    enc_oom(e);
  char *p = b->p + b->len;
  b->len += n;
  return p;
}

static inline void put_byte(enc *e, int c) { *reserve(e, 1) = (char)c; }

static void put_tagged(enc *e, int tag, const void *v, size_t n) {
  char *p = reserve(e, 1 + n);
  p[0] = (char)tag;
  memcpy(p + 1, v, n);
}

static void put_name(enc *e, int tag, const char *s, size_t n) {
  uint32_t n32 = (uint32_t)n;
  char *p = reserve(e, 5 + n);
  p[0] = (char)tag;
  memcpy(p + 1, &n32, 4);
  memcpy(p + 5, s, n);
}

/* ---- the seen-hash: open addressing on lua_topointer ---------------------- */

/* Tables made one after another lie one after another in memory: keeping
 * the address order in the slot order (rather than scattering it) makes
 * encoding a large structure walk the hash almost sequentially, which
 * halved the time of copying 100k records. The high bits are folded in so
 * that addresses a multiple of the hash size apart still spread. */
static inline size_t seen_slot(const void *key, int bits) {
  uintptr_t k = (uintptr_t)key >> 4;
  return (size_t)((k ^ (k >> bits)) & (((size_t)1 << bits) - 1));
}

/* Rehashing is a third of the cost of tracking 200k tables, so the hash
 * grows fourfold, and sizes itself up front for a large array (of records,
 * most likely): calloc'd slots cost nothing until touched. */
static void seen_grow(enc *e, size_t want) {
  xbuf_ud *u = e->u;
  int bits = u->seen_bits ? u->seen_bits + 2 : 6;
  while (((size_t)1 << bits) < want)
    bits++;
  size_t cap = (size_t)1 << bits;
  seen *t = calloc(cap, sizeof *t);
  if (t == NULL)
    enc_oom(e);
  if (u->seen) {
    for (size_t i = 0, old = (size_t)1 << u->seen_bits; i < old; i++) {
      if (u->seen[i].key == NULL)
        continue;
      size_t j = seen_slot(u->seen[i].key, bits);
      while (t[j].key)
        j = (j + 1) & (cap - 1);
      t[j] = u->seen[i];
    }
    free(u->seen);
  }
  u->seen = t;
  u->seen_bits = bits;
}

/* The slot of key: its entry, or the empty slot where it goes (the caller
 * fills it in before the hash can grow again). */
static seen *seen_find(enc *e, const void *key) {
  xbuf_ud *u = e->u;
  if (2 * (u->seen_n + 1) > ((size_t)1 << u->seen_bits) || u->seen == NULL)
    seen_grow(e, 0);
  size_t mask = ((size_t)1 << u->seen_bits) - 1;
  size_t j = seen_slot(key, u->seen_bits);
  while (u->seen[j].key && u->seen[j].key != key)
    j = (j + 1) & mask;
  return &u->seen[j];
}

static void seen_module(enc *e, const void *key, const char *name, size_t len) {
  xbuf_ud *u = e->u;
  seen *s = seen_find(e, key);
  if (s->key && u->modules[s->seq].len <= len)
    return; /* the shortest name wins */
  if (s->key == NULL) {
    if (u->nmodules == u->modules_cap) {
      size_t cap = u->modules_cap ? 2 * u->modules_cap : 32;
      module_name *m = realloc(u->modules, cap * sizeof *m);
      if (m == NULL)
        enc_oom(e);
      u->modules = m;
      u->modules_cap = cap;
    }
    u->seen_n++;
    s->key = key;
    s->module = 1;
    s->seq = (uint32_t)u->nmodules++;
  }
  u->modules[s->seq].name = name;
  u->modules[s->seq].len = len;
}

/* Module tables cross by name: the first table or function of a message
 * puts every table of package.loaded into the seen-hash under its name.
 * The names point into package.loaded's keys, alive for the encode. */
static void seed_modules(enc *e) {
  lua_State *L = e->L;
  e->seeded = 1;
  luaL_checkstack(L, 4, NULL);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  seen_module(e, lua_topointer(L, -1), GLOBALS_NAME, sizeof GLOBALS_NAME - 1);
  lua_pop(L, 1);
  if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) != LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    size_t len;
    if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TTABLE) {
      const char *name = lua_tolstring(L, -2, &len);
      if (memchr(name, '\0', len) == NULL)
        seen_module(e, lua_topointer(L, -1), name, len);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* ---- the C function index -------------------------------------------------- */

/* registry[&cindex_key]: C function -> "module\0field", the shortest name
 * any table of package.loaded gives it. Built on first need and rebuilt
 * once per encode that meets a function it does not know (a module loaded
 * since). */
static void build_cindex(lua_State *L) {
  luaL_checkstack(L, 8, NULL);
  lua_createtable(L, 0, 256);
  int index = lua_gettop(L);
  if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      size_t mlen = 0;
      const char *m = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &mlen) : NULL;
      if (m && lua_type(L, -1) == LUA_TTABLE && memchr(m, '\0', mlen) == NULL) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
          if (lua_type(L, -2) == LUA_TSTRING && lua_iscfunction(L, -1)) {
            lua_pushvalue(L, -1);
            lua_rawget(L, index);
            size_t old = lua_isstring(L, -1) ? lua_rawlen(L, -1) : SIZE_MAX;
            lua_pop(L, 1);
            size_t klen = lua_rawlen(L, -2);
            if (mlen + 1 + klen < old) {
              lua_pushvalue(L, -1);
              lua_pushvalue(L, -5);
              lua_pushlstring(L, "", 1);
              lua_pushvalue(L, -5);
              lua_concat(L, 3);
              lua_rawset(L, index);
            }
          }
          lua_pop(L, 1);
        }
      }
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &cindex_key);
}

static void enc_value(enc *e, int idx);

static void enc_cfunction(enc *e, int idx) {
  lua_State *L = e->L;
  luaL_checkstack(L, 4, NULL);
  for (;;) {
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &cindex_key) == LUA_TTABLE) {
      lua_pushvalue(L, idx);
      if (lua_rawget(L, -2) == LUA_TSTRING) {
        size_t n;
        const char *name = lua_tolstring(L, -1, &n);
        put_name(e, T_CFUNC, name, n);
        lua_pop(L, 2);
        return;
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (e->index_fresh)
      break;
    e->index_fresh = 1;
    build_cindex(L);
  }
  if (lua_getupvalue(L, idx, 1)) {
    lua_pop(L, 1);
    enc_fail(e, "a C closure with upvalues");
  }
  enc_fail(e, "a C function that no loaded module names");
}

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
  lm_xbuf *b = ud;
  if (b->cap - b->len < n && grow(b, n))
    return 1;
  memcpy(b->p + b->len, p, n);
  b->len += n;
  return 0;
}

/* A table or Lua function met before goes as a back reference (or by its
 * module name): returns NULL. A new one is numbered: returns its entry. */
static seen *enc_seen(enc *e, int idx) {
  if (!e->seeded)
    seed_modules(e);
  const void *key = lua_topointer(e->L, idx);
  xbuf_ud *u = e->u;
  seen *s = seen_find(e, key);
  if (s->key) {
    if (s->module) {
      put_name(e, T_MODULE, u->modules[s->seq].name, u->modules[s->seq].len);
    } else {
      put_tagged(e, T_REF, &s->seq, 4);
      /* A stream's receiver may have read that tag already: it keeps
       * every table instead. */
      if (!u->stream)
        u->b.p[u->pos[s->seq]] |= (char)T_SHARED;
    }
    return NULL;
  }
  if (e->depth >= LM_XCOPY_MAX_DEPTH)
    enc_fail(e, "a value nested more than " DEPTH_TEXT " levels deep");
  if (!lua_checkstack(e->L, 8))
    enc_fail(e, "a value nested too deep for the Lua stack");
  if (e->nobj == u->pos_cap) {
    size_t cap = u->pos_cap ? 2 * u->pos_cap : 64;
    size_t *pos = realloc(u->pos, cap * sizeof *pos);
    if (pos == NULL || e->nobj == UINT32_MAX)
      enc_oom(e);
    u->pos = pos;
    u->pos_cap = cap;
  }
  s->key = key;
  s->module = 0;
  s->seq = e->nobj++;
  u->pos[s->seq] = u->b.len;
  u->seen_n++;
  return s;
}

/* A class with a finalizer is one of userdata (a channel's, a file's):
 * its __gc would take a table for its object, and crash or worse. */
static int has_finalizer(lua_State *L, int mt) {
  lua_pushliteral(L, "__gc");
  int yes = lua_rawget(L, mt) != LUA_TNIL;
  lua_pop(L, 1);
  return yes;
}

/* A metatable made by luaL_newmetatable (its __name is the registry key
 * that holds it) is a class both states register the same way, such as
 * loom.error: it goes by that name. Any other refuses the table, and so
 * does a class of userdata. */
static void enc_metatable(enc *e, int idx, seen *s) {
  lua_State *L = e->L;
  if (!lua_getmetatable(L, idx))
    return;
  if (has_finalizer(L, lua_gettop(L)))
    enc_fail(e, "a table with a userdata class's metatable");
  if (lua_getfield(L, -1, "__name") == LUA_TSTRING) {
    size_t n;
    const char *name = lua_tolstring(L, -1, &n);
    lua_pushvalue(L, -1);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_rawequal(L, -1, -3)) {
      put_name(e, T_META, name, n);
      e->u->pos[s->seq] = e->u->b.len;
      lua_pop(L, 3);
      return;
    }
  }
  enc_fail(e, "a table with a metatable");
}

/* Resumes lua_next after the pair on top (popped): 0 at the end. The
 * array items 1..n were sent already, and integer keys 1..n that live in
 * the hash part are skipped. */
static int next_pair(lua_State *L, int idx, lua_Unsigned n) {
  while (lua_next(L, idx)) {
    if (lua_isinteger(L, -2)) {
      lua_Integer i = lua_tointeger(L, -2);
      if (i >= 1 && (lua_Unsigned)i <= n) {
        lua_pop(L, 1);
        continue;
      }
    }
    return 1;
  }
  return 0;
}

/* Pushes the key lua_next resumes from to walk the pairs past the array
 * items 1..n: at the border, so the array part is not walked again. */
static void push_pairs_start(lua_State *L, lua_Unsigned n) {
  if (n)
    lua_pushinteger(L, (lua_Integer)n);
  else
    lua_pushnil(L);
}

static uint32_t count_pairs(enc *e, int idx, lua_Unsigned n) {
  lua_State *L = e->L;
  uint32_t count = 0;
  push_pairs_start(L, n);
  while (next_pair(L, idx, n)) {
    lua_pop(L, 1);
    if (count == UINT32_MAX)
      enc_fail(e, "a table this large");
    count++;
  }
  return count;
}

/* Streaming: lets the receiver read up to the first byte still to be
 * patched. */
static inline void maybe_publish(enc *e) {
  xbuf_ud *u = e->u;
  if (u->stream == NULL || u->b.len < e->next_publish)
    return;
  lm_xstream_publish(u->stream, e->hold < u->b.len ? e->hold : u->b.len);
  e->next_publish = u->b.len + PUBLISH_STEP;
}

static void enc_table(enc *e, int idx) {
  lua_State *L = e->L;
  seen *entry = enc_seen(e, idx);
  if (entry == NULL)
    return;
  enc_metatable(e, idx, entry);
  lua_Unsigned n = lua_rawlen(L, idx);
  if (n > UINT32_MAX)
    enc_fail(e, "a table this large");
  uint32_t narr = (uint32_t)n, nhash = 0;
  if (n >= 1024 && 2 * (e->u->seen_n + n) > ((size_t)1 << e->u->seen_bits))
    seen_grow(e, 4 * (e->u->seen_n + n));
  /* A table's pair count is in its header, written once its pairs are,
   * and nothing from the header on can be published until then. In a
   * stream, the tables whose content is most of the message (the values
   * themselves, their children, large arrays) count their pairs first
   * instead, so the receiver can start on their items at once; small
   * ones (a record) hold the stream back only while they are encoded. */
  int counted = e->u->stream && (e->depth <= 1 || n >= 1024);
  uint32_t expected = counted ? count_pairs(e, idx, n) : 0;
  char *h = reserve(e, 9);
  size_t hpos = (size_t)(h - e->u->b.p);
  h[0] = T_TABLE;
  memcpy(h + 1, &narr, 4);
  memcpy(h + 5, &expected, 4);
  size_t held = e->hold;
  if (!counted && held == NO_HOLD)
    e->hold = hpos;
  seg *s = &e->path[++e->depth];
  s->kind = SEG_INDEX;
  for (lua_Unsigned i = 1; i <= n; i++) {
    s->i = (lua_Integer)i;
    lua_rawgeti(L, idx, (lua_Integer)i);
    enc_value(e, lua_gettop(L));
    lua_pop(L, 1);
    maybe_publish(e);
  }
  push_pairs_start(L, n);
  while (next_pair(L, idx, n)) {
    int k = lua_gettop(L) - 1;
    s->kind = SEG_KEY;
    enc_value(e, k);
    s->kind = SEG_FIELD;
    s->key = k;
    enc_value(e, k + 1);
    lua_pop(L, 1);
    if (nhash == UINT32_MAX)
      enc_fail(e, "a table this large");
    nhash++;
    maybe_publish(e);
  }
  e->depth--;
  /* Counted: nothing runs Lua code during an encode, so the table cannot
   * have changed since; checked all the same, as it is cheap. */
  if (counted && nhash != expected)
    enc_fail(e, "a table that changed while it was copied");
  if (!counted)
    memcpy(e->u->b.p + hpos + 5, &nhash, 4);
  e->hold = held;
}

/* The i-th upvalue of function number seq (at idx), its value on top. A
 * variable that closures share (a counter two local functions update)
 * stays shared: met again, it goes as a reference to the first function
 * and upvalue that had it, which the receiver joins (lua_upvaluejoin).
 * Its first place is recorded before its value is encoded, so a closure
 * inside that value joins it too: the receiver sets the value into the
 * joined upvalue afterwards. */
static void enc_upvalue(enc *e, int idx, uint32_t seq, int i) {
  xbuf_ud *u = e->u;
  seen *up = seen_find(e, lua_upvalueid(e->L, idx, i));
  if (up->key == NULL) {
    up->key = lua_upvalueid(e->L, idx, i);
    up->seq = seq;
    up->module = UPVALUE + (uint32_t)i;
    u->seen_n++;
    enc_value(e, lua_gettop(e->L));
    return;
  }
  char *p = reserve(e, 6);
  p[0] = T_UPREF;
  memcpy(p + 1, &up->seq, 4);
  p[5] = (char)(unsigned char)(up->module - UPVALUE);
  /* The receiver must keep the function it joins to. */
  if (!u->stream)
    u->b.p[u->pos[up->seq]] |= (char)T_SHARED;
}

static void enc_function(enc *e, int idx) {
  lua_State *L = e->L;
  if (lua_iscfunction(L, idx)) {
    enc_cfunction(e, idx);
    return;
  }
  seen *entry = enc_seen(e, idx);
  if (entry == NULL)
    return;
  uint32_t seq = entry->seq;
  lm_xbuf *b = &e->u->b;
  put_byte(e, T_FUNC);
  size_t lenpos = b->len;
  reserve(e, 8);
  lua_pushvalue(L, idx);
  int r = lua_dump(L, dump_writer, b, 0);
  lua_pop(L, 1);
  if (r)
    enc_oom(e);
  uint64_t len = b->len - lenpos - 8;
  memcpy(b->p + lenpos, &len, 8);
  lua_Debug ar;
  lua_pushvalue(L, idx);
  lua_getinfo(L, ">u", &ar);
  put_byte(e, ar.nups);
  seg *s = &e->path[++e->depth];
  s->kind = SEG_UPVALUE;
  for (int i = 1; i <= ar.nups; i++) {
    s->i = i;
    s->name = lua_getupvalue(L, idx, i);
    /* A function runs in the globals of the state that calls it, whatever
     * environment it had in the sender (the sender's _G, or a sandbox
     * such as a test runner's). */
    if (s->name && strcmp(s->name, "_ENV") == 0 && lua_type(L, -1) == LUA_TTABLE)
      put_name(e, T_MODULE, GLOBALS_NAME, sizeof GLOBALS_NAME - 1);
    else
      enc_upvalue(e, idx, seq, i);
    lua_pop(L, 1);
  }
  e->depth--;
}

static void enc_short_string(enc *e, const char *s, size_t n) {
  if (e->nkeys == 0)
    memset(e->keys, 0, sizeof e->keys);
  size_t j = ((uintptr_t)s >> 4) & (KEY_SLOTS - 1);
  while (e->keys[j] && e->keys[j] != s)
    j = (j + 1) & (KEY_SLOTS - 1);
  if (e->keys[j]) {
    char *p = reserve(e, 2);
    p[0] = T_KREF;
    p[1] = (char)e->key_no[j];
    return;
  }
  int tag = T_SSTR;
  if (e->nkeys < KEYS_MAX) {
    e->keys[j] = s;
    e->key_no[j] = (unsigned char)e->nkeys++;
    tag = T_KSTR;
  }
  char *p = reserve(e, 2 + n);
  p[0] = (char)tag;
  p[1] = (char)(unsigned char)n;
  memcpy(p + 2, s, n);
}

static int is_null(lua_State *L, int idx) {
  lua_getfield(L, LUA_REGISTRYINDEX, NULL_KEY);
  int yes = lua_rawequal(L, idx, -1);
  lua_pop(L, 1);
  return yes;
}

/* A channel goes as its address, kept alive by a reference the message
 * holds (listed in the trailer). */
static void enc_xchan(enc *e, loom_xchan_t *ch) {
  xbuf_ud *u = e->u;
  if (u->nchans == u->chans_cap) {
    size_t cap = u->chans_cap ? u->chans_cap * 2 : 4;
    loom_xchan_t **grown = realloc(u->chans, cap * sizeof *grown);
    if (grown == NULL)
      enc_oom(e);
    u->chans = grown;
    u->chans_cap = cap;
  }
  loom_xchan_ref(ch);
  u->chans[u->nchans++] = ch;
  put_tagged(e, T_XCHAN, &ch, sizeof ch);
}

static void enc_value(enc *e, int idx) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    put_byte(e, T_NIL);
    return;
  case LUA_TBOOLEAN:
    put_byte(e, lua_toboolean(L, idx) ? T_TRUE : T_FALSE);
    return;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      int64_t i = lua_tointeger(L, idx);
      if (i >= INT8_MIN && i <= INT8_MAX) {
        char *p = reserve(e, 2);
        p[0] = T_INT8;
        p[1] = (char)(int8_t)i;
      } else if (i >= INT32_MIN && i <= INT32_MAX) {
        int32_t i32 = (int32_t)i;
        put_tagged(e, T_INT32, &i32, 4);
      } else {
        put_tagged(e, T_INT64, &i, 8);
      }
    } else {
      double d = lua_tonumber(L, idx);
      put_tagged(e, T_FLOAT, &d, 8);
    }
    return;
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    if (n <= SHORT_STRING) {
      enc_short_string(e, s, n);
    } else if (n < 256) {
      char *p = reserve(e, 2 + n);
      p[0] = T_SSTR;
      p[1] = (char)(unsigned char)n;
      memcpy(p + 2, s, n);
    } else {
      uint64_t n64 = n;
      char *p = reserve(e, 9 + n);
      p[0] = T_STR;
      memcpy(p + 1, &n64, 8);
      memcpy(p + 9, s, n);
    }
    return;
  }
  case LUA_TTABLE:
    enc_table(e, idx);
    return;
  case LUA_TFUNCTION:
    enc_function(e, idx);
    return;
  case LUA_TUSERDATA: {
    if (is_null(L, idx)) {
      put_byte(e, T_NULL);
      return;
    }
    loom_xchan_t *ch = lm_xchan_test(L, idx);
    if (ch) {
      enc_xchan(e, ch);
      return;
    }
    enc_fail(e, "userdata");
    return;
  }
  case LUA_TLIGHTUSERDATA:
    enc_fail(e, "light userdata");
    return;
  case LUA_TTHREAD:
    enc_fail(e, "a thread (coroutine)");
    return;
  default:
    enc_fail(e, luaL_typename(L, idx));
  }
}

static lm_xbuf *encode(lua_State *L, int idx, int n, const char *what, lm_xstream *stream) {
  idx = lua_absindex(L, idx);
  enc e;
  e.L = L;
  e.what = what ? what : "values";
  e.nobj = 0;
  e.seeded = e.index_fresh = e.depth = e.nkeys = 0;
  e.hold = NO_HOLD;
  e.next_publish = PUBLISH_STEP / 4; /* the first bytes early: the receiver waits */
  e.u = xbuf_push(L);
  if (stream) {
    lm_xstream_ref(stream);
    e.u->stream = stream;
    e.u->b.p = stream->base;
  }
  luaL_checkstack(L, 8, NULL);
  uint32_t n32 = (uint32_t)n;
  memcpy(reserve(&e, 4), &n32, 4);
  e.path[0].kind = SEG_ARG;
  for (int i = 0; i < n; i++) {
    e.path[0].i = i + 1;
    enc_value(&e, idx + i);
  }
  xbuf_ud *u = e.u;
  uint32_t nch = (uint32_t)u->nchans;
  size_t addrs = nch * sizeof *u->chans;
  char *t = reserve(&e, addrs + 4);
  if (nch)
    memcpy(t, u->chans, addrs);
  memcpy(t + addrs, &nch, 4);
  /* The references are the message's now. */
  u->nchans = 0;
  if (stream) {
    lm_xstream_done(stream, u->b.len);
    xbuf_release(u, 0);
    return NULL;
  }
  u->complete = 1;
  /* The tables are needed no longer; the buffer waits for lm_xbuf_take. */
  xbuf_release(u, 1);
  return &u->b;
}

lm_xbuf *lm_xcopy_encode(lua_State *L, int idx, int n, const char *what) {
  return encode(L, idx, n, what, NULL);
}

void lm_xcopy_encode_stream(lua_State *L, int idx, int n, const char *what, lm_xstream *s) {
  encode(L, idx, n, what, s);
}

static int encode_stream_k(lua_State *L) {
  lm_xstream *s = lua_touserdata(L, 1);
  const char *what = lua_tostring(L, 2);
  lm_xcopy_encode_stream(L, 3, lua_gettop(L) - 2, what, s);
  return 0;
}

int lm_xcopy_pencode_stream(lua_State *L, int idx, int n, const char *what, lm_xstream *s) {
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, n + 4, NULL);
  lua_pushcfunction(L, encode_stream_k);
  lua_pushlightuserdata(L, s);
  lua_pushstring(L, what);
  for (int i = 0; i < n; i++)
    lua_pushvalue(L, idx + i);
  return lua_pcall(L, n + 2, 0, 0);
}

int lm_xstream_wanted(lua_State *L, int idx, int n) {
  /* With one core there is nothing to overlap, and taking turns on it
   * cost a third more than copying in one piece (100k records there and
   * back, taskset -c 0: 250 ms against 190 ms). */
  static _Atomic int cores;
  if (atomic_load_explicit(&cores, memory_order_relaxed) == 0)
    atomic_store_explicit(&cores, (int)uv_available_parallelism(), memory_order_relaxed);
  if (atomic_load_explicit(&cores, memory_order_relaxed) < 2)
    return 0;
  idx = lua_absindex(L, idx);
  for (int i = 0; i < n; i++)
    if (lua_type(L, idx + i) == LUA_TTABLE && lua_rawlen(L, idx + i) >= LM_XSTREAM_ITEMS)
      return 1;
  return 0;
}

/* ---- decoding ------------------------------------------------------------ */

typedef struct dec {
  lua_State *L;
  const char *start, *p, *end;
  const char *chans; /* the trailer's channel addresses */
  uint32_t nchans;
  uint32_t nobj;
  int refs; /* stack slot of the table of shared objects (nil until one) */
  int keys; /* stack slot of the table of remembered strings (nil until one) */
  int nkeys;
  int depth;
  lm_xstream *stream;        /* decoding as the bytes come (NULL: all here) */
  const _Atomic int *cancel; /* stops the decode once set (NULL: none) */
  unsigned tick;
} dec;

static int dec_fail(dec *d, const char *why) {
  return lm_error(d->L, "protocol", "malformed value buffer at byte %I: %s",
                  (lua_Integer)(d->p - d->start), why);
}

/* In a stream: waits for n more bytes. */
static void need_more(dec *d, size_t n) {
  size_t at = (size_t)(d->p - d->start);
  if (d->stream && n <= SIZE_MAX - at) {
    size_t got = lm_xstream_wait(d->stream, at + n);
    d->end = d->start + got;
    if (got >= at + n)
      return;
    if (lm_xstream_state(d->stream) == LM_XSTREAM_FAILED)
      lm_error(d->L, "thread", "the sender of a value stopped halfway through it");
  }
  dec_fail(d, "truncated");
}

static inline void need(dec *d, size_t n) {
  if ((size_t)(d->end - d->p) < n)
    need_more(d, n);
}

static uint32_t get_u32(dec *d) {
  uint32_t v;
  need(d, 4);
  memcpy(&v, d->p, 4);
  d->p += 4;
  return v;
}

static uint64_t get_u64(dec *d) {
  uint64_t v;
  need(d, 8);
  memcpy(&v, d->p, 8);
  d->p += 8;
  return v;
}

static void dec_value(dec *d);

/* Numbers the table or function on top; keeps it if the sender marked it
 * as referred to again. */
static void dec_number(dec *d, int shared) {
  lua_State *L = d->L;
  uint32_t seq = d->nobj++;
  /* A stream's sender cannot mark what it refers to again (the receiver
   * may have read the tag): every object is kept. */
  if (!shared && d->stream == NULL)
    return;
  if (lua_isnil(L, d->refs)) {
    lua_newtable(L);
    lua_replace(L, d->refs);
  }
  lua_pushvalue(L, -1);
  lua_rawseti(L, d->refs, (lua_Integer)seq + 1);
}

static void dec_enter(dec *d) {
  if (d->depth >= LM_XCOPY_MAX_DEPTH)
    dec_fail(d, "nested too deep");
  if (!lua_checkstack(d->L, 8))
    dec_fail(d, "nested too deep for the Lua stack");
  d->depth++;
}

static void dec_table(dec *d, int shared) {
  lua_State *L = d->L;
  uint32_t narr = get_u32(d), nhash = get_u32(d);
  /* Every value takes a byte at least: a count the rest cannot hold is
   * garbage, and must not size a huge table (a stream's rest is not here
   * yet: its sender is this process's own encoder). */
  if (d->stream == NULL && narr + 2 * (uint64_t)nhash > (uint64_t)(d->end - d->p))
    dec_fail(d, "truncated");
  if (d->cancel && (++d->tick & 1023) == 0 &&
      atomic_load_explicit(d->cancel, memory_order_relaxed))
    lm_error(d->L, "cancelled", "the job was cancelled while its arguments were copied");
  if (narr > INT32_MAX || nhash > INT32_MAX)
    dec_fail(d, "a table too large");
  dec_enter(d);
  lua_createtable(L, (int)narr, (int)nhash);
  dec_number(d, shared);
  int t = lua_gettop(L);
  for (uint32_t i = 1; i <= narr; i++) {
    dec_value(d);
    lua_rawseti(L, t, i);
  }
  for (uint32_t i = 0; i < nhash; i++) {
    const char *at = d->p;
    dec_value(d);
    if (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1))) {
      d->p = at;
      dec_fail(d, "a nil or NaN key");
    }
    dec_value(d);
    lua_rawset(L, t);
  }
  d->depth--;
}

typedef struct chunk {
  const char *p;
  size_t n;
} chunk;

static const char *chunk_reader(lua_State *L, void *ud, size_t *size) {
  chunk *c = ud;
  *size = c->n;
  c->n = 0;
  return *size ? c->p : NULL;
}

/* The i-th upvalue of the function at f is the one of a function decoded
 * before: joined to it (enc_upvalue). */
static void dec_upref(dec *d, int f, int i) {
  lua_State *L = d->L;
  d->p++;
  uint32_t seq = get_u32(d);
  need(d, 1);
  int n = (unsigned char)*d->p;
  if (seq >= d->nobj || lua_isnil(L, d->refs) ||
      lua_rawgeti(L, d->refs, (lua_Integer)seq + 1) != LUA_TFUNCTION ||
      lua_iscfunction(L, -1) || lua_getupvalue(L, -1, n) == NULL)
    dec_fail(d, "a reference to no upvalue");
  d->p++;
  lua_pop(L, 1);
  lua_upvaluejoin(L, f, i, -1, n);
  lua_pop(L, 1);
}

static void dec_function(dec *d, int shared) {
  lua_State *L = d->L;
  uint64_t len = get_u64(d);
  need(d, len);
  chunk c = {d->p, (size_t)len};
  dec_enter(d);
  if (lua_load(L, chunk_reader, &c, "=(copied function)", "b") != LUA_OK)
    lm_error(L, "protocol", "malformed value buffer at byte %I: %s",
             (lua_Integer)(d->p - d->start), lua_tostring(L, -1));
  d->p += len;
  dec_number(d, shared);
  need(d, 1);
  int nups = (unsigned char)*d->p++;
  int f = lua_gettop(L);
  for (int i = 1; i <= nups; i++) {
    if (lua_getupvalue(L, f, i) == NULL)
      dec_fail(d, "more upvalues than the function has");
    lua_pop(L, 1);
    need(d, 1);
    if ((unsigned char)*d->p == T_UPREF) {
      dec_upref(d, f, i);
      continue;
    }
    dec_value(d);
    lua_setupvalue(L, f, i);
  }
  d->depth--;
}

/* Pushes package.loaded[name] of the receiver, requiring it if need be;
 * `what` (at index what) names what is looked up, for the error. */
static void push_module(lua_State *L, const char *name, size_t len, int what) {
  if (len == sizeof GLOBALS_NAME - 1 && memcmp(name, GLOBALS_NAME, len) == 0) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    return;
  }
  luaL_checkstack(L, 4, NULL);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushlstring(L, name, len);
  if (lua_istable(L, -2) && lua_rawget(L, -2) == LUA_TTABLE) {
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 2);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  if (lua_getfield(L, -1, "require") != LUA_TFUNCTION)
    lm_error(L, "argument", "cannot find %s in the receiving state: it has no require",
             lua_tostring(L, what));
  lua_remove(L, -2);
  lua_pushlstring(L, name, len);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK)
    lm_error(L, "argument", "cannot find %s in the receiving state: %s", lua_tostring(L, what),
             lua_isstring(L, -1) ? lua_tostring(L, -1) : luaL_typename(L, -1));
  if (!lua_istable(L, -1))
    lm_error(L, "argument", "cannot find %s in the receiving state: require gave a %s",
             lua_tostring(L, what), luaL_typename(L, -1));
}

static void dec_named(dec *d, int tag) {
  lua_State *L = d->L;
  uint32_t len = get_u32(d);
  need(d, len);
  const char *name = d->p;
  d->p += len;
  size_t mlen = len;
  if (tag == T_CFUNC) {
    const char *zero = memchr(name, '\0', len);
    if (zero == NULL)
      dec_fail(d, "a C function name without its module");
    mlen = (size_t)(zero - name);
  }
  luaL_checkstack(L, 6, NULL);
  lua_pushlstring(L, name, mlen);
  if (tag == T_MODULE) {
    lua_pushfstring(L, "module '%s'", lua_tostring(L, -1));
    push_module(L, name, mlen, lua_gettop(L));
    lua_replace(L, -3);
    lua_pop(L, 1);
    return;
  }
  lua_pushfstring(L, "C function '%s.", lua_tostring(L, -1));
  lua_pushlstring(L, name + mlen + 1, len - mlen - 1);
  lua_pushliteral(L, "'");
  lua_concat(L, 3);
  int what = lua_gettop(L);
  push_module(L, name, mlen, what);
  lua_pushlstring(L, name + mlen + 1, len - mlen - 1);
  if (lua_rawget(L, -2) != LUA_TFUNCTION)
    lm_error(L, "argument", "cannot find %s in the receiving state", lua_tostring(L, what));
  lua_replace(L, what - 1);
  lua_settop(L, what - 1);
}

static void dec_meta(dec *d) {
  lua_State *L = d->L;
  uint32_t len = get_u32(d);
  need(d, len);
  lua_pushlstring(L, d->p, len);
  d->p += len;
  need(d, 1);
  if (((unsigned char)*d->p & ~T_SHARED) != T_TABLE)
    dec_fail(d, "a metatable for something else than a table");
  dec_value(d);
  /* loom's own classes (loom.error) are there once loom.core is. */
  if (luaL_getmetatable(L, lua_tostring(L, -2)) != LUA_TTABLE) {
    lua_pop(L, 1);
    luaL_requiref(L, "loom.core", luaopen_loom_core, 0);
    lua_pop(L, 1);
    luaL_getmetatable(L, lua_tostring(L, -2));
  }
  if (!lua_istable(L, -1))
    lm_error(L, "argument", "cannot find the metatable '%s' in the receiving state",
             lua_tostring(L, -3));
  if (has_finalizer(L, lua_gettop(L)))
    lm_error(L, "argument",
             "cannot give a table the metatable '%s': a class of userdata "
             "in the receiving state",
             lua_tostring(L, -3));
  lua_setmetatable(L, -2);
  lua_remove(L, -2);
}

static void push_null(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, NULL_KEY) != LUA_TNIL)
    return;
  lua_pop(L, 1);
  luaL_requiref(L, "loom.core", luaopen_loom_core, 0);
  lua_pop(L, 1);
  lua_getfield(L, LUA_REGISTRYINDEX, NULL_KEY);
}

/* A channel the message holds a reference to: its address must be one
 * its trailer lists. */
static void dec_xchan(dec *d) {
  loom_xchan_t *ch;
  need(d, sizeof ch);
  memcpy(&ch, d->p, sizeof ch);
  d->p += sizeof ch;
  /* A stream's trailer comes last; its sender holds the reference until
   * then, and the stream from then on. */
  if (d->stream) {
    lm_xchan_push(d->L, ch);
    return;
  }
  for (uint32_t i = 0; i < d->nchans; i++) {
    loom_xchan_t *listed;
    memcpy(&listed, d->chans + i * sizeof listed, sizeof listed);
    if (listed == ch) {
      lm_xchan_push(d->L, ch);
      return;
    }
  }
  dec_fail(d, "a channel the message does not hold");
}

static void dec_value(dec *d) {
  lua_State *L = d->L;
  need(d, 1);
  int tag = (unsigned char)*d->p++;
  int shared = tag & T_SHARED;
  tag &= ~T_SHARED;
  if (shared && tag != T_TABLE && tag != T_FUNC)
    dec_fail(d, "unknown tag");
  switch (tag) {
  case T_NIL:
    lua_pushnil(L);
    return;
  case T_FALSE:
  case T_TRUE:
    lua_pushboolean(L, tag == T_TRUE);
    return;
  case T_INT8:
    need(d, 1);
    lua_pushinteger(L, (int8_t)*d->p++);
    return;
  case T_INT32:
    lua_pushinteger(L, (int32_t)get_u32(d));
    return;
  case T_INT64:
    lua_pushinteger(L, (lua_Integer)get_u64(d));
    return;
  case T_FLOAT: {
    double v;
    need(d, 8);
    memcpy(&v, d->p, 8);
    d->p += 8;
    lua_pushnumber(L, v);
    return;
  }
  case T_SSTR:
  case T_KSTR: {
    need(d, 1);
    size_t n = (unsigned char)*d->p++;
    need(d, n);
    lua_pushlstring(L, d->p, n);
    d->p += n;
    if (tag == T_KSTR) {
      if (d->nkeys == 0) {
        lua_createtable(L, KEYS_MAX, 0);
        lua_replace(L, d->keys);
      }
      lua_pushvalue(L, -1);
      lua_rawseti(L, d->keys, ++d->nkeys);
    }
    return;
  }
  case T_KREF:
    need(d, 1);
    if ((unsigned char)*d->p >= d->nkeys)
      dec_fail(d, "a reference to no string");
    lua_rawgeti(L, d->keys, (unsigned char)*d->p++ + 1);
    return;
  case T_STR: {
    uint64_t n = get_u64(d);
    need(d, n);
    lua_pushlstring(L, d->p, (size_t)n);
    d->p += n;
    return;
  }
  case T_TABLE:
    dec_table(d, shared);
    return;
  case T_FUNC:
    dec_function(d, shared);
    return;
  case T_REF: {
    uint32_t seq = get_u32(d);
    if (seq >= d->nobj || lua_isnil(L, d->refs) ||
        lua_rawgeti(L, d->refs, (lua_Integer)seq + 1) == LUA_TNIL)
      dec_fail(d, "a reference to nothing");
    return;
  }
  case T_CFUNC:
  case T_MODULE:
    dec_named(d, tag);
    return;
  case T_NULL:
    push_null(L);
    return;
  case T_META:
    dec_meta(d);
    return;
  case T_XCHAN:
    dec_xchan(d);
    return;
  default:
    d->p--;
    dec_fail(d, "unknown tag");
  }
}

static int decode(const dec *d);

int lm_xcopy_decode(lua_State *L, const char *p, size_t len) {
  uint32_t nch;
  const char *chans = trailer(p, len, &nch);
  dec d = {L, p, p, chans ? chans : p + len, chans, nch, 0, 0, 0, 0, 0, NULL, NULL, 0};
  if (chans == NULL)
    dec_fail(&d, "no trailer");
  return decode(&d);
}

int lm_xcopy_decode_stream(lua_State *L, lm_xstream *s, const _Atomic int *cancel) {
  const char *p = s->base;
  dec d = {L, p, p, p + lm_xstream_wait(s, 0), NULL, 0, 0, 0, 0, 0, 0, s, cancel, 0};
  return decode(&d);
}

static int decode(const dec *d_) {
  dec d = *d_;
  lua_State *L = d.L;
  uint32_t n = get_u32(&d);
  if (d.stream == NULL && n > (size_t)(d.end - d.start) - 4)
    dec_fail(&d, "truncated");
  if (n > 1000000 || !lua_checkstack(L, (int)n + 8))
    lm_error(L, "argument", "too many values to copy (%I)", (lua_Integer)n);
  lua_pushnil(L);
  d.refs = lua_gettop(L);
  lua_pushnil(L);
  d.keys = lua_gettop(L);
  for (uint32_t i = 0; i < n; i++)
    dec_value(&d);
  if (d.stream) {
    /* The trailer says where the values end, once the stream is whole. */
    size_t len = lm_xstream_wait(d.stream, SIZE_MAX);
    if (lm_xstream_state(d.stream) != LM_XSTREAM_DONE)
      lm_error(L, "thread", "the sender of a value stopped halfway through it");
    uint32_t nch;
    d.end = trailer(d.start, len, &nch);
    if (d.end == NULL)
      dec_fail(&d, "no trailer");
  }
  if (d.p != d.end)
    dec_fail(&d, "bytes after the last value");
  lua_rotate(L, d.refs, -2);
  lua_pop(L, 2);
  return (int)n;
}

/* ---- test hooks: a second state in the same thread ---------------------- */

#define PEER_MT "loom.xcopy.peer"

/* The second state belongs to a userdata of the caller's, so an error in
 * the caller cannot leak it. */
typedef struct peer {
  lua_State *L;
} peer;

static int peer_gc(lua_State *L) {
  peer *pp = luaL_testudata(L, 1, PEER_MT);
  if (pp && pp->L) {
    lua_close(pp->L);
    pp->L = NULL;
  }
  return 0;
}

static void copy_path(lua_State *from, lua_State *to, const char *field) {
  lua_getglobal(from, "package");
  lua_getglobal(to, "package");
  if (lua_istable(from, -1) && lua_getfield(from, -1, field) == LUA_TSTRING) {
    lua_pushstring(to, lua_tostring(from, -1));
    lua_setfield(to, -2, field);
  }
  lua_settop(from, lua_gettop(from) - (lua_istable(from, -1) ? 1 : 2));
  lua_pop(to, 1);
}

static lua_State *peer_new(lua_State *L) {
  peer *pp = lua_newuserdatauv(L, sizeof *pp, 0);
  pp->L = NULL;
  if (luaL_newmetatable(L, PEER_MT)) {
    lua_pushcfunction(L, peer_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  pp->L = luaL_newstate();
  if (pp->L == NULL)
    lm_error(L, "memory", "cannot create a Lua state");
  luaL_openlibs(pp->L);
  copy_path(L, pp->L, "path");
  copy_path(L, pp->L, "cpath");
  return pp->L;
}

typedef struct job {
  const char *in;
  size_t inlen;
  int call;
  char *out;
  size_t outlen;
} job;

/* In the second state: decodes, calls the first value with the others if
 * asked to, encodes what is left. */
static int peer_run(lua_State *L) {
  job *j = lua_touserdata(L, 1);
  int base = lua_gettop(L);
  int n = lm_xcopy_decode(L, j->in, j->inlen);
  if (j->call) {
    lua_call(L, n - 1, LUA_MULTRET);
    n = lua_gettop(L) - base;
  }
  lm_xbuf *b = lm_xcopy_encode(L, base + 1, n, j->call ? "results" : "values");
  j->out = lm_xbuf_take(b, &j->outlen);
  return 0;
}

/* In the second state: encodes the error value at 2, or its text when
 * the value itself cannot cross. */
static int peer_error(lua_State *L) {
  job *j = lua_touserdata(L, 1);
  if (lua_toboolean(L, 3)) {
    if (lua_type(L, 2) == LUA_TSTRING || lua_type(L, 2) == LUA_TNUMBER)
      lua_pushvalue(L, 2);
    else
      lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 2));
    lua_replace(L, 2);
  }
  lm_xbuf *b = lm_xcopy_encode(L, 2, 1, "error");
  j->out = lm_xbuf_take(b, &j->outlen);
  return 0;
}

/* Copies the arguments into a second state and back (call: calls the
 * first with the others there, and copies the results back); an error in
 * the second state is raised here as a copy of its value. The second state
 * is a new one, closed before the copy back is decoded, or the one kept
 * by a copier from core._xpeer (upvalue 1). */
static int xcopy_through(lua_State *L, int call, int kept) {
  int n = lua_gettop(L);
  if (call)
    lm_checkcallable(L, 1);
  peer *pp;
  if (kept) {
    pp = lua_touserdata(L, lua_upvalueindex(1));
    lua_pushvalue(L, lua_upvalueindex(1));
  } else {
    peer_new(L);
    pp = lua_touserdata(L, -1);
  }
  lua_State *P = pp->L;
  int peer_idx = lua_gettop(L);
  lm_xbuf *in = lm_xcopy_encode(L, 1, n, "args");
  job j = {in->p, in->len, call, NULL, 0};
  lua_pushcfunction(P, peer_run);
  lua_pushlightuserdata(P, &j);
  int failed = lua_pcall(P, 1, 0, 0) != LUA_OK;
  for (int as_text = 0; failed && j.out == NULL && as_text < 2; as_text++) {
    int err = lua_gettop(P) - as_text;
    lua_pushcfunction(P, peer_error);
    lua_pushlightuserdata(P, &j);
    lua_pushvalue(P, err);
    lua_pushboolean(P, as_text);
    lua_pcall(P, 3, 0, 0);
  }
  lua_settop(P, 0);
  if (j.out == NULL)
    return lm_error(L, "memory", "cannot copy the values back");
  xbuf_ud *back = xbuf_push(L);
  back->b.p = j.out;
  back->b.len = back->b.cap = j.outlen;
  back->complete = 1;
  if (!kept) {
    lua_pushcfunction(L, peer_gc);
    lua_pushvalue(L, peer_idx);
    lua_call(L, 1, 0);
  }
  int got = lm_xcopy_decode(L, back->b.p, back->b.len);
  if (failed)
    return lua_error(L);
  return got;
}

static int xcopy(lua_State *L) { return xcopy_through(L, 0, 0); }

static int xcall(lua_State *L) { return xcopy_through(L, 1, 0); }

static int xpeer_copy(lua_State *L) { return xcopy_through(L, 0, 1); }

/* A copier through one second state kept for its lifetime, as a worker's
 * is: what the benchmark times, without making and closing a state. */
static int xpeer(lua_State *L) {
  peer_new(L);
  lua_pushcclosure(L, xpeer_copy, 1);
  return 1;
}

static int xcopy_encode_raw(lua_State *L) {
  int n = lua_gettop(L);
  lm_xbuf *b = lm_xcopy_encode(L, 1, n, "args");
  lua_pushlstring(L, b->p, b->len);
  return 1;
}

static int xcopy_decode_raw(lua_State *L) {
  size_t len;
  const char *p = luaL_checklstring(L, 1, &len);
  return lm_xcopy_decode(L, p, len);
}

const luaL_Reg lm_xcopy_funcs[] = {
    {"_xcopy", xcopy},
    {"_xcall", xcall},
    {"_xpeer", xpeer},
    {"_xcopy_encode_raw", xcopy_encode_raw},
    {"_xcopy_decode_raw", xcopy_decode_raw},
    {NULL, NULL},
};
