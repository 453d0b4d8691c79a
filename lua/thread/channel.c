/* loom.thread.channel(n): a channel between Lua states on any threads
 * (core/xchan.h), with loom.channel's methods. A value is copied (codec.h)
 * as it is sent and decoded by whoever receives it; the channel itself
 * crosses to other states by reference (an argument, an upvalue, a value
 * sent through another channel), each state holding its own handle.
 *
 * Capacity is at least 1: a rendezvous between threads would hand each
 * message to one particular receiver and tell its sender, two cross-thread
 * wake-ups per message and a message stranded in a receiver cancelled
 * meanwhile (xchan.h says more). loom.channel(0) is the rendezvous.
 *
 * Waiting never blocks the loop: a task that cannot send or receive
 * registers a waiter through its state's hub and parks; a wake-up means
 * "try again", so every wait is a loop of try, register, park. The waiter
 * lives in a userdata on the waiting coroutine's stack, unregistered
 * before its wait can end any other way (and by its __gc should that
 * coroutine be dropped). A channel sent into itself keeps itself alive. */
#include <string.h>
#include "lm.h"
#include "loom_lua.h"
#include "codec.h"

#define LM_XCHAN_MT "loom.thread.channel"
#define LM_XWAIT_MT "loom.thread.channel.wait"
#define LM_XHUB_MT "loom.thread.hub"

typedef struct lm_xchan {
  loom_xchan_t *ch;
  lm_ctx *ctx;
} lm_xchan;

/* One blocking send or receive: its waiter, and the message it owns
 * until the channel takes it (send) or it is decoded (receive). */
typedef struct xwait {
  loom_xwaiter_t w;
  lm_wait *wait;
  char *msg;
  size_t len;
} xwait;

static const char hub_key = 0;

static void free_msg(void *msg, size_t len) { lm_xbuf_free(msg, len); }

loom_xchan_t *lm_xchan_test(lua_State *L, int idx) {
  lm_xchan *c = luaL_testudata(L, idx, LM_XCHAN_MT);
  return c ? c->ch : NULL;
}

void lm_xchan_push(lua_State *L, loom_xchan_t *ch) {
  lm_ctx *ctx = lm_ctx_get(L);
  if (ctx == NULL) {
    luaL_requiref(L, "loom.core", luaopen_loom_core, 0);
    lua_pop(L, 1);
    ctx = lm_ctx_get(L);
  }
  lm_xchan *c = lua_newuserdatauv(L, sizeof *c, 0);
  c->ch = NULL;
  c->ctx = ctx;
  luaL_setmetatable(L, LM_XCHAN_MT);
  loom_xchan_ref(ch);
  c->ch = ch;
}

static lm_xchan *check_self(lua_State *L) {
  return lm_check_self(L, LM_XCHAN_MT, "loom.thread.channel");
}

/* ---- the state's hub ----------------------------------------------------- */

typedef struct hub_ud {
  loom_xhub_t *hub;
} hub_ud;

static int hub_gc(lua_State *L) {
  hub_ud *h = lua_touserdata(L, 1);
  if (h->hub)
    loom_xhub_free(h->hub);
  h->hub = NULL;
  return 0;
}

/* The hub of this state's loop, made on first need. Made before any
 * waiter: finalizers run newest first, so at lua_close every waiter is
 * unregistered before the hub goes, and the hub before the loop. */
loom_xhub_t *lm_xhub_get(lua_State *L, lm_ctx *ctx) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &hub_key) != LUA_TNIL) {
    loom_xhub_t *hub = ((hub_ud *)lua_touserdata(L, -1))->hub;
    lua_pop(L, 1);
    return hub;
  }
  lua_pop(L, 1);
  hub_ud *h = lua_newuserdatauv(L, sizeof *h, 0);
  h->hub = NULL;
  luaL_setmetatable(L, LM_XHUB_MT);
  h->hub = loom_xhub_new(&ctx->loop);
  if (h->hub == NULL)
    lm_error(L, "memory", "cannot allocate a channel hub");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &hub_key);
  return h->hub;
}

/* ---- waits ------------------------------------------------------------------ */

static void xwait_wake(loom_xwaiter_t *w, int status) {
  (void)status; /* closed or not, the waiter tries again and sees */
  xwait *x = w->data;
  lm_wait_finish(x->wait, 0, -1);
}

static int xwait_gc(lua_State *L) {
  xwait *x = lua_touserdata(L, 1);
  loom_xchan_unwait(&x->w);
  lm_xbuf_free(x->msg, x->len);
  x->msg = NULL;
  return 0;
}

static xwait *push_xwait(lua_State *L, lm_xchan *c) {
  lm_xhub_get(L, c->ctx);
  xwait *x = lua_newuserdatauv(L, sizeof *x, 0);
  memset(x, 0, sizeof *x);
  loom_xwaiter_init(&x->w, xwait_wake, x);
  luaL_setmetatable(L, LM_XWAIT_MT);
  return x;
}

/* Parks on the channel at index 1 until it may serve x; k tries again. */
static int park(lua_State *L, lm_xchan *c, xwait *x, int sending, lua_KFunction k) {
  loom_xhub_t *hub = lm_xhub_get(L, c->ctx);
  x->wait = lm_wait_prepare(L, c->ctx);
  if (sending)
    loom_xchan_wait_send(c->ch, hub, &x->w);
  else
    loom_xchan_wait_recv(c->ch, hub, &x->w);
  return lm_wait_begin_ctx(L, x->wait, k, (lua_KContext)x);
}

/* Woken, cancelled or timed out: unregistered first, then the wait's
 * outcome raised, if it is one. */
static void unpark(lua_State *L, xwait *x) {
  loom_xchan_unwait(&x->w);
  lm_wait_check(L, x->wait);
}

static int raise_closed(lua_State *L) {
  return lm_error(L, "closed", "send on a closed channel");
}

static void check_sendable(lua_State *L, int arg) {
  if (lua_isnoneornil(L, arg))
    lm_argerror(L, arg, "value expected, got nil (a channel cannot carry nil: "
                        "recv returns nil once the channel is closed)");
}

/* ---- send ----------------------------------------------------------------- */

static int send_k(lua_State *L, int status, lua_KContext kctx);

static int send_step(lua_State *L, lm_xchan *c, xwait *x) {
  int r = loom_xchan_try_send(c->ch, x->msg, x->len);
  if (r == 0) {
    x->msg = NULL;
    return 0;
  }
  if (r == LOOM_ECLOSED)
    return raise_closed(L);
  return park(L, c, x, 1, send_k);
}

static int send_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  xwait *x = (xwait *)kctx;
  unpark(L, x);
  return send_step(L, lua_touserdata(L, 1), x);
}

/* Encodes the value at 2; the buffer is owned by a userdata pushed. */
static lm_xbuf *encode_value(lua_State *L) {
  check_sendable(L, 2);
  lua_settop(L, 2);
  return lm_xcopy_encode(L, 2, 1, "value");
}

/* Room in the channel (the common case): the message goes in straight from
 * the encoder's buffer, and no waiter is made. 0, or what try_send said
 * (the message is still b's then). */
static int send_now(lm_xchan *c, lm_xbuf *b) {
  int r = loom_xchan_try_send(c->ch, b->p, b->len);
  if (r == 0) {
    size_t len;
    lm_xbuf_take(b, &len);
  }
  return r;
}

static int xchan_send(lua_State *L) {
  lm_xchan *c = check_self(L);
  if (loom_xchan_closed(c->ch))
    return raise_closed(L);
  lm_xbuf *b = encode_value(L);
  if (send_now(c, b) == 0)
    return 0;
  xwait *x = push_xwait(L, c);
  x->msg = lm_xbuf_take(b, &x->len);
  return send_step(L, c, x);
}

static int xchan_try_send(lua_State *L) {
  lm_xchan *c = check_self(L);
  lm_xbuf *b = encode_value(L);
  int r = send_now(c, b);
  if (r == LOOM_ECLOSED)
    return raise_closed(L);
  lua_pushboolean(L, r == 0);
  return 1;
}

/* ---- receive ------------------------------------------------------------- */

static int decode_msg(lua_State *L) {
  return lm_xcopy_decode(L, lua_touserdata(L, 1), (size_t)lua_tointeger(L, 2));
}

/* The message received, decoded and freed: (value, true). Decoded in a
 * protected call that frees it whatever happens, rather than owned by a
 * userdata: a receive that finds a message makes no garbage of its own. */
static int deliver(lua_State *L, void *msg, size_t len, int with_flag) {
  lua_pushcfunction(L, decode_msg);
  lua_pushlightuserdata(L, msg);
  lua_pushinteger(L, (lua_Integer)len);
  int rc = lua_pcall(L, 2, 1, 0);
  lm_xbuf_free(msg, len);
  if (rc != LUA_OK)
    return lua_error(L);
  if (!with_flag)
    return 1;
  lua_pushboolean(L, 1);
  return 2;
}

static int ended(lua_State *L, int with_flag) {
  lua_pushnil(L);
  if (!with_flag)
    return 1;
  lua_pushboolean(L, 0);
  return 2;
}

static int recv_k(lua_State *L, int status, lua_KContext kctx);
static int iter_k(lua_State *L, int status, lua_KContext kctx);

/* x: the waiter of a receive that parked before, or NULL (made if this
 * one must park). */
static int recv_step(lua_State *L, lm_xchan *c, xwait *x, int with_flag) {
  void *msg;
  size_t len;
  int r = loom_xchan_try_recv(c->ch, &msg, &len);
  if (r == 0)
    return deliver(L, msg, len, with_flag);
  if (r == LOOM_ECLOSED)
    return ended(L, with_flag);
  if (x == NULL)
    x = push_xwait(L, c);
  return park(L, c, x, 0, with_flag ? recv_k : iter_k);
}

static int recv_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  xwait *x = (xwait *)kctx;
  unpark(L, x);
  return recv_step(L, lua_touserdata(L, 1), x, 1);
}

static int iter_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  xwait *x = (xwait *)kctx;
  unpark(L, x);
  return recv_step(L, lua_touserdata(L, 1), x, 0);
}

static int xchan_recv(lua_State *L) {
  lm_xchan *c = check_self(L);
  lua_settop(L, 1);
  return recv_step(L, c, NULL, 1);
}

static int xchan_try_recv(lua_State *L) {
  lm_xchan *c = check_self(L);
  lua_settop(L, 1);
  void *msg;
  size_t len;
  if (loom_xchan_try_recv(c->ch, &msg, &len) != 0)
    return ended(L, 1);
  return deliver(L, msg, len, 1);
}

static int xchan_iter_next(lua_State *L) {
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(1));
  lm_xchan *c = lua_touserdata(L, 1);
  return recv_step(L, c, NULL, 0);
}

static int xchan_iter(lua_State *L) {
  check_self(L);
  lua_settop(L, 1);
  lua_pushcclosure(L, xchan_iter_next, 1);
  return 1;
}

/* ---- the rest -------------------------------------------------------------- */

static int xchan_close(lua_State *L) {
  lm_xchan *c = check_self(L);
  lua_pushboolean(L, loom_xchan_close(c->ch) == 0);
  return 1;
}

static int xchan_is_closed(lua_State *L) {
  lua_pushboolean(L, loom_xchan_closed(check_self(L)->ch));
  return 1;
}

static int xchan_cap(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)loom_xchan_cap(check_self(L)->ch));
  return 1;
}

static int xchan_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)loom_xchan_len(check_self(L)->ch));
  return 1;
}

static int xchan_tostring(lua_State *L) {
  lm_xchan *c = check_self(L);
  lua_pushfstring(L, "loom.thread.channel (%d/%d%s): %p", (int)loom_xchan_len(c->ch),
                  (int)loom_xchan_cap(c->ch), loom_xchan_closed(c->ch) ? ", closed" : "",
                  (void *)c->ch);
  return 1;
}

static int xchan_gc(lua_State *L) {
  lm_xchan *c = lua_touserdata(L, 1);
  if (c->ch)
    loom_xchan_unref(c->ch);
  c->ch = NULL;
  return 0;
}

/* core._thread_channel(n) */
static int l_thread_channel(lua_State *L) {
  lm_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
  lua_Integer cap = lm_checkinteger(L, 1);
  if (cap < 1 || cap > (1 << 28))
    lm_argerror(L, 1, "capacity must be between 1 and 2^28 (a thread channel "
                      "cannot be a rendezvous: use loom.channel(0) within a state)");
  lm_xchan *c = lua_newuserdatauv(L, sizeof *c, 0);
  c->ch = NULL;
  c->ctx = ctx;
  luaL_setmetatable(L, LM_XCHAN_MT);
  if (loom_xchan_new(&c->ch, (size_t)cap, free_msg) != 0)
    return lm_error(L, "memory", "cannot allocate a channel");
  return 1;
}

const luaL_Reg lm_xchan_funcs[] = {
  {"_thread_channel", l_thread_channel},
  {NULL, NULL}
};

static const luaL_Reg xchan_methods[] = {
  {"send", xchan_send},
  {"recv", xchan_recv},
  {"try_send", xchan_try_send},
  {"try_recv", xchan_try_recv},
  {"iter", xchan_iter},
  {"close", xchan_close},
  {"is_closed", xchan_is_closed},
  {"cap", xchan_cap},
  {NULL, NULL}
};

static const luaL_Reg xchan_metamethods[] = {
  {"__len", xchan_len},
  {"__gc", xchan_gc},
  {"__close", xchan_close},
  {"__tostring", xchan_tostring},
  {NULL, NULL}
};

static const luaL_Reg xwait_metamethods[] = {{"__gc", xwait_gc}, {NULL, NULL}};
static const luaL_Reg hub_metamethods[] = {{"__gc", hub_gc}, {NULL, NULL}};

void lm_open_xchan(lua_State *L) {
  lm_new_class(L, LM_XCHAN_MT, xchan_methods, xchan_metamethods);
  lm_new_class(L, LM_XWAIT_MT, NULL, xwait_metamethods);
  lm_new_class(L, LM_XHUB_MT, NULL, hub_metamethods);
}
