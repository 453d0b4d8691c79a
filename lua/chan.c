/* Channels for Lua. The core queues opaque items; here an item is a
 * reference into a table kept as the channel's user value, so a value
 * stays reachable exactly as long as the channel holds it.
 *
 * A hand-off between two tasks skips the table (two thirds of its cost
 * went to luaL_ref and luaL_unref): a task parked in recv gets the value
 * pushed onto its own stack, where its continuation finds it on top; a
 * task parked in send on a rendezvous channel keeps the value at index 2
 * of its frame, and the receiver copies it from there. Such items are
 * negative (the parked thread, negated); refs are positive. Only tasks do
 * this: a task is pinned while it waits and its waiter is unlinked before
 * its frame can unwind, so the thread named by an item is always alive.
 * A buffered channel's senders always use the table: their items move
 * into the buffer and outlive the sender's frame. */
#include <stdint.h>
#include "lm.h"

/* The value is on top of the receiver's own stack. */
#define ON_STACK INT64_MIN

static int64_t stack_item(lua_State *L) { return -(int64_t)(intptr_t)L; }

static lua_State *item_stack(int64_t item) { return (lua_State *)(intptr_t)(-item); }

lm_chan *lm_check_chan(lua_State *L, int arg) {
  return lm_checkudata(L, arg, LM_CHAN_MT, "loom.channel");
}

static lm_chan *check_self(lua_State *L) {
  return lm_check_self(L, LM_CHAN_MT, "loom.channel");
}

int64_t lm_chan_store(lua_State *L, lm_chan *c, int chan_idx, int value_idx) {
  (void)c;
  value_idx = lua_absindex(L, value_idx);
  lua_getiuservalue(L, chan_idx, 1);
  lua_pushvalue(L, value_idx);
  int ref = luaL_ref(L, -2);
  lua_pop(L, 1);
  return ref;
}

void lm_chan_fetch(lua_State *L, int chan_idx, int64_t item) {
  if (item < 0) {
    /* A task parked in send on a rendezvous channel. */
    lua_State *from = item_stack(item);
    lua_pushvalue(from, 2);
    lua_xmove(from, L, 1);
    return;
  }
  chan_idx = lua_absindex(L, chan_idx);
  lua_getiuservalue(L, chan_idx, 1);
  lua_rawgeti(L, -1, (lua_Integer)item);
  luaL_unref(L, -2, (int)item);
  lua_remove(L, -2);
}

void lm_chan_forget(lua_State *L, int chan_idx, int64_t item) {
  if (item < 0)
    return;
  lua_getiuservalue(L, chan_idx, 1);
  luaL_unref(L, -1, (int)item);
  lua_pop(L, 1);
}

static int raise_closed(lua_State *L) {
  return lm_error(L, "closed", "send on a closed channel");
}

static void check_sendable(lua_State *L, int arg) {
  if (lua_isnoneornil(L, arg))
    lm_argerror(L, arg, "value expected, got nil (a channel cannot carry nil: "
                        "recv returns nil once the channel is closed)");
}

static int l_channel(lua_State *L) {
  lm_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
  lua_Integer cap = lua_isnoneornil(L, 1) ? 0 : lm_checkinteger(L, 1);
  if (cap < 0 || cap > (1 << 28))
    lm_argerror(L, 1, "capacity must be between 0 and 2^28");
  lm_chan *c = lua_newuserdatauv(L, sizeof *c, 1);
  c->ctx = ctx;
  c->ch.buf = NULL;
  c->ch.cap = 0;
  if (loom_chan_init(&c->ch, (size_t)cap) != 0)
    return lm_error(L, "memory", "cannot allocate a channel of capacity %d", (int)cap);
  luaL_setmetatable(L, LM_CHAN_MT);
  lua_createtable(L, (int)(cap < 64 ? cap : 64), 0);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

static int send_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lm_wait *w = LM_WAIT_OF(kctx);
  if (w->status != LOOM_OK)
    lm_chan_forget(L, 1, w->one.item);
  if (lm_wait_check(L, w) == LOOM_ECLOSED)
    return raise_closed(L);
  return 0;
}

static int chan_send(lua_State *L) {
  lm_chan *c = check_self(L);
  check_sendable(L, 2);
  if (c->ch.closed)
    return raise_closed(L);
  loom_waiter_t *r = c->ch.receivers.head;
  if (r != NULL && r->wake == lm_one_wake && r->item < 0 && r->item != ON_STACK) {
    lua_State *to = item_stack(r->item);
    if (lua_checkstack(to, 1)) {
      lua_pushvalue(L, 2);
      lua_xmove(L, to, 1);
      loom_chan_try_send(&c->ch, ON_STACK); /* to r, the first receiver */
      return 0;
    }
  }
  if (r != NULL || c->ch.len < c->ch.cap) {
    loom_chan_try_send(&c->ch, lm_chan_store(L, c, 1, 2));
    return 0;
  }
  lm_wait *w = lm_wait_prepare(L, c->ctx);
  if (c->ch.cap == 0 && w->task && lua_isyieldable(L))
    w->one.item = stack_item(L);
  else
    w->one.item = lm_chan_store(L, c, 1, 2);
  loom_chan_wait_send(&c->ch, &w->one);
  return lm_wait_begin(L, w, send_k);
}

static int chan_try_send(lua_State *L) {
  lm_chan *c = check_self(L);
  check_sendable(L, 2);
  if (c->ch.closed)
    return raise_closed(L);
  int64_t item = lm_chan_store(L, c, 1, 2);
  int ok = loom_chan_try_send(&c->ch, item) == LOOM_OK;
  if (!ok)
    lm_chan_forget(L, 1, item);
  lua_pushboolean(L, ok);
  return 1;
}

/* The outcome of a receive: (value, true) or (nil, false) once closed. */
static int received(lua_State *L, int status, int64_t item, int with_flag) {
  if (status == LOOM_OK) {
    if (item != ON_STACK)
      lm_chan_fetch(L, 1, item);
    if (!with_flag)
      return 1;
    lua_pushboolean(L, 1);
    return 2;
  }
  lua_pushnil(L);
  if (!with_flag)
    return 1;
  lua_pushboolean(L, 0);
  return 2;
}

static int recv_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lm_wait *w = LM_WAIT_OF(kctx);
  return received(L, lm_wait_check(L, w), w->one.item, 1);
}

static int iter_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lm_wait *w = LM_WAIT_OF(kctx);
  return received(L, lm_wait_check(L, w), w->one.item, 0);
}

/* Receives on the channel at index 1. */
static int chan_recv_at1(lua_State *L, int with_flag) {
  lm_chan *c = lua_touserdata(L, 1);
  int64_t item = 0;
  int r = loom_chan_try_recv(&c->ch, &item);
  if (r != LOOM_EAGAIN)
    return received(L, r, item, with_flag);
  lm_wait *w = lm_wait_prepare(L, c->ctx);
  /* Where a sender may push the value (see the top of this file). */
  w->one.item = w->task && lua_isyieldable(L) ? stack_item(L) : 0;
  loom_chan_wait_recv(&c->ch, &w->one);
  return lm_wait_begin(L, w, with_flag ? recv_k : iter_k);
}

static int chan_recv(lua_State *L) {
  check_self(L);
  lua_settop(L, 1);
  return chan_recv_at1(L, 1);
}

static int chan_try_recv(lua_State *L) {
  lm_chan *c = check_self(L);
  int64_t item = 0;
  int r = loom_chan_try_recv(&c->ch, &item);
  if (r == LOOM_OK) {
    lm_chan_fetch(L, 1, item);
    lua_pushboolean(L, 1);
    return 2;
  }
  lua_pushnil(L);
  lua_pushboolean(L, 0);
  return 2;
}

static int chan_iter_next(lua_State *L) {
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(1));
  return chan_recv_at1(L, 0);
}

static int chan_iter(lua_State *L) {
  check_self(L);
  lua_settop(L, 1);
  lua_pushcclosure(L, chan_iter_next, 1);
  return 1;
}

static int chan_close(lua_State *L) {
  lm_chan *c = check_self(L);
  lua_pushboolean(L, loom_chan_close(&c->ch) == LOOM_OK);
  return 1;
}

static int chan_is_closed(lua_State *L) {
  lua_pushboolean(L, check_self(L)->ch.closed);
  return 1;
}

static int chan_cap(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_self(L)->ch.cap);
  return 1;
}

static int chan_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)loom_chan_len(&check_self(L)->ch));
  return 1;
}

static int chan_tostring(lua_State *L) {
  lm_chan *c = check_self(L);
  lua_pushfstring(L, "loom.channel (%d/%d%s): %p", (int)c->ch.len, (int)c->ch.cap,
                  c->ch.closed ? ", closed" : "", (void *)c);
  return 1;
}

static int chan_gc(lua_State *L) {
  lm_chan *c = lua_touserdata(L, 1);
  /* Buffered values die with the user value table; only the C side needs
   * releasing, and any waiter still queued is unlinked, not woken. */
  loom_chan_destroy(&c->ch);
  return 0;
}

const luaL_Reg lm_chan_funcs[] = {
  {"channel", l_channel},
  {NULL, NULL}
};

static const luaL_Reg chan_methods[] = {
  {"send", chan_send},
  {"recv", chan_recv},
  {"try_send", chan_try_send},
  {"try_recv", chan_try_recv},
  {"iter", chan_iter},
  {"close", chan_close},
  {"is_closed", chan_is_closed},
  {"cap", chan_cap},
  {NULL, NULL}
};

static const luaL_Reg chan_metamethods[] = {
  {"__len", chan_len},
  {"__gc", chan_gc},
  /* `local ch <close> = loom.channel()` closes it when the scope ends. */
  {"__close", chan_close},
  {"__tostring", chan_tostring},
  {NULL, NULL}
};

void lm_open_chan(lua_State *L) {
  lm_new_class(L, LM_CHAN_MT, chan_methods, chan_metamethods);
}
