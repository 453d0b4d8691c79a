/* loom.select{ {ch, "recv"}, {ch, "send", v}, timeout = s }: waits until one
 * case can proceed and performs exactly that one. Ready cases are tried from
 * a random start so no channel starves the others.
 *
 * A case may be a loom.channel or a thread channel (loom.thread.channel).
 * A thread channel's waiter is only told to try again (xchan.h): when one
 * ends the wait, every case is tried again, and if another thread took
 * what woke it, the select waits again until its deadline. */
#include <string.h>
#include "lm.h"
#include "codec.h"

#define CASES_IDX 2
#define LM_SELECT_MT "loom.select.cases"

/* The cases userdata: the deadline, for a select that waits again. */
typedef struct lm_select {
  double deadline; /* loom_now_ns() seconds, or < 0: none */
  int n;
  lm_case cases[];
} lm_select;

static void case_wake(loom_waiter_t *waiter, int status) {
  lm_wait *w = waiter->data;
  lm_wait_finish(w, status, (int)((lm_case *)waiter - w->cases));
}

static void case_xwake(loom_xwaiter_t *xw, int status) {
  (void)status; /* the case is tried again and sees */
  lm_case *cs = LM_CONTAINER_OF(xw, lm_case, xwaiter);
  lm_wait *w = xw->data;
  lm_wait_finish(w, 0, (int)(cs - w->cases));
}

/* A select dropped mid-wait (its coroutine collected, the state closing)
 * or done: thread channels' waiters and messages go. */
static int select_gc(lua_State *L) {
  lm_select *s = lua_touserdata(L, 1);
  for (int i = 0; i < s->n; i++) {
    loom_xchan_unwait(&s->cases[i].xwaiter);
    lm_xbuf_free(s->cases[i].msg, s->cases[i].len);
    s->cases[i].msg = NULL;
  }
  return 0;
}

static int case_error(lua_State *L, int i, const char *what) {
  const char *msg = lua_pushfstring(L, "case %d: %s", i, what);
  return lm_argerror(L, 1, msg);
}

/* Reads case i (1-based) of the table at index 1 into cases[i-1] and
 * anchors its channel in the cases userdata. Leaves a send's value on top. */
static void parse_case(lua_State *L, lm_case *cs, int i) {
  if (lua_rawgeti(L, 1, i) != LUA_TTABLE)
    case_error(L, i, "table {channel, \"recv\"} or {channel, \"send\", value} expected");
  int t = lua_gettop(L);
  lua_rawgeti(L, t, 1);
  lm_chan *c = luaL_testudata(L, -1, LM_CHAN_MT);
  loom_xchan_t *xch = c ? NULL : lm_xchan_test(L, -1);
  if (c == NULL && xch == NULL)
    case_error(L, i, "channel expected as the first element");
  lua_setiuservalue(L, CASES_IDX, i);
  lua_rawgeti(L, t, 2);
  const char *op = lua_tostring(L, -1);
  if (op && strcmp(op, "recv") == 0) {
    cs->is_send = 0;
  } else if (op && strcmp(op, "send") == 0) {
    cs->is_send = 1;
  } else {
    case_error(L, i, "operation must be \"recv\" or \"send\"");
  }
  lua_pop(L, 1);
  if (cs->is_send && lua_rawgeti(L, t, 3) == LUA_TNIL)
    case_error(L, i, "value expected (a channel cannot carry nil)");
  if (!cs->is_send)
    lua_pushnil(L);
  lua_replace(L, t);
  cs->chan = c;
  cs->xch = xch;
  loom_waiter_init(&cs->waiter, case_wake, NULL);
  loom_xwaiter_init(&cs->xwaiter, case_xwake, NULL);
  if (xch && cs->is_send) {
    lm_xbuf *b = lm_xcopy_encode(L, t, 1, "value");
    cs->msg = lm_xbuf_take(b, &cs->len);
    lua_pop(L, 1);
  }
}

static int chosen_result(lua_State *L, lm_case *cs, int i, int status, int64_t item) {
  if (cs->is_send) {
    if (status == LOOM_ECLOSED)
      return lm_error(L, "closed", "send on a closed channel (select case %d)", i + 1);
    lua_pushinteger(L, i + 1);
    lua_pushnil(L);
    lua_pushboolean(L, 1);
    return 3;
  }
  lua_pushinteger(L, i + 1);
  if (status == LOOM_OK && cs->xch) {
    lm_xcopy_decode(L, cs->msg, cs->len);
    lm_xbuf_free(cs->msg, cs->len);
    cs->msg = NULL;
  } else if (status == LOOM_OK) {
    lua_getiuservalue(L, CASES_IDX, i + 1);
    lm_chan_fetch(L, -1, item);
    lua_remove(L, -2);
  } else {
    lua_pushnil(L);
  }
  lua_pushboolean(L, status == LOOM_OK);
  return 3;
}

/* A thread channel's case, tried: LOOM_EAGAIN if it cannot proceed. */
static int try_xcase(lm_case *cs) {
  if (cs->is_send) {
    int r = loom_xchan_try_send(cs->xch, cs->msg, cs->len);
    if (r == 0)
      cs->msg = NULL;
    return r;
  }
  void *msg;
  size_t len;
  int r = loom_xchan_try_recv(cs->xch, &msg, &len);
  if (r == 0) {
    cs->msg = msg;
    cs->len = len;
  }
  return r;
}

static int select_round(lua_State *L, lm_ctx *ctx, lm_select *s);

static int select_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lm_wait *w = LM_WAIT_OF(kctx);
  lm_case *cases = w->cases;
  int n = w->ncases, chosen = w->chosen;
  /* Values offered by sends that did not happen go back to nobody. */
  for (int i = 0; i < n; i++) {
    if (cases[i].xch)
      loom_xchan_unwait(&cases[i].xwaiter);
    else if (cases[i].is_send && !(i == chosen && w->status == LOOM_OK)) {
      lua_getiuservalue(L, CASES_IDX, i + 1);
      lm_chan_forget(L, lua_gettop(L), cases[i].waiter.item);
      lua_pop(L, 1);
    }
  }
  w->cases = NULL;
  w->ncases = 0;
  int st = lm_wait_check(L, w);
  if (st == LOOM_ETIMEDOUT || chosen < 0)
    return 0;
  if (cases[chosen].xch)
    return select_round(L, w->ctx, lua_touserdata(L, CASES_IDX));
  return chosen_result(L, &cases[chosen], chosen, st, cases[chosen].waiter.item);
}

/* Tries every case once; if none can proceed, waits until one may. */
static int select_round(lua_State *L, lm_ctx *ctx, lm_select *s) {
  lm_case *cases = s->cases;
  int n = s->n;
  int values = CASES_IDX + 1;
  int start = n ? (int)(lm_random(ctx) % (uint32_t)n) : 0;
  for (int j = 0; j < n; j++) {
    int i = (start + j) % n;
    lm_case *cs = &cases[i];
    if (cs->xch) {
      int r = try_xcase(cs);
      if (r != LOOM_EAGAIN)
        return chosen_result(L, cs, i, r, 0);
      continue;
    }
    lua_getiuservalue(L, CASES_IDX, i + 1);
    int chan_idx = lua_gettop(L);
    int64_t item = 0;
    if (cs->is_send) {
      if (cs->chan->ch.closed)
        return chosen_result(L, cs, i, LOOM_ECLOSED, 0);
      item = lm_chan_store(L, cs->chan, chan_idx, values + i);
      if (loom_chan_try_send(&cs->chan->ch, item) == LOOM_OK)
        return chosen_result(L, cs, i, LOOM_OK, 0);
      lm_chan_forget(L, chan_idx, item);
    } else {
      int r = loom_chan_try_recv(&cs->chan->ch, &item);
      if (r != LOOM_EAGAIN)
        return chosen_result(L, cs, i, r, item);
    }
    lua_pop(L, 1);
  }
  double timeout = -1;
  if (s->deadline >= 0) {
    timeout = s->deadline - (double)loom_now_ns() / 1e9;
    if (timeout <= 0)
      return 0;
  }

  lm_wait *w = lm_wait_prepare(L, ctx);
  w->cases = cases;
  w->ncases = n;
  loom_xhub_t *hub = NULL;
  for (int i = 0; i < n; i++) {
    lm_case *cs = &cases[i];
    if (cs->xch) {
      if (hub == NULL)
        hub = lm_xhub_get(L, ctx);
      cs->xwaiter.data = w;
      if (cs->is_send)
        loom_xchan_wait_send(cs->xch, hub, &cs->xwaiter);
      else
        loom_xchan_wait_recv(cs->xch, hub, &cs->xwaiter);
      continue;
    }
    cs->waiter.data = w;
    if (cs->is_send) {
      lua_getiuservalue(L, CASES_IDX, i + 1);
      cs->waiter.item = lm_chan_store(L, cs->chan, lua_gettop(L), values + i);
      lua_pop(L, 1);
      loom_chan_wait_send(&cs->chan->ch, &cs->waiter);
    } else {
      loom_chan_wait_recv(&cs->chan->ch, &cs->waiter);
    }
  }
  lm_wait_arm(w, timeout);
  return lm_wait_begin(L, w, select_k);
}

static int l_select(lua_State *L) {
  lm_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
  if (lua_type(L, 1) != LUA_TTABLE)
    lm_typeerror(L, 1, "table of cases");
  lua_settop(L, 1);
  double timeout = -1;
  if (lua_getfield(L, 1, "timeout") != LUA_TNIL) {
    int ok;
    timeout = lua_tonumberx(L, -1, &ok);
    if (!ok || !(timeout >= 0))
      lm_argerror(L, 1, "timeout must be a non-negative number of seconds");
  }
  lua_pop(L, 1);
  int n = (int)lua_rawlen(L, 1);
  if (n == 0 && timeout < 0)
    lm_argerror(L, 1, "at least one case or a timeout expected");
  if (n > 0xffff)
    lm_argerror(L, 1, "too many cases");
  /* The hub outlives the cases (made first, finalized after them). */
  int threads = 0;
  for (int i = 1; i <= n && !threads; i++) {
    int is_table = lua_rawgeti(L, 1, i) == LUA_TTABLE;
    threads = is_table && lua_rawgeti(L, -1, 1) != LUA_TNIL && lm_xchan_test(L, -1);
    lua_settop(L, 1);
  }
  if (threads)
    lm_xhub_get(L, ctx);
  size_t size = sizeof(lm_select) + (n > 0 ? (size_t)n : 1u) * sizeof(lm_case);
  lm_select *s = lua_newuserdatauv(L, size, n);
  memset(s, 0, size);
  /* Only thread-channel cases hold what a collection must let go of (a
   * registered waiter, a message): a select over loom channels alone has
   * no finalizer to run. */
  if (threads)
    luaL_setmetatable(L, LM_SELECT_MT);
  /* Stack: 1 cases table, 2 cases userdata, then one value slot per case. */
  for (int i = 0; i < n; i++) {
    parse_case(L, &s->cases[i], i + 1);
    s->n = i + 1;
  }
  s->deadline = timeout < 0 ? -1 : (double)loom_now_ns() / 1e9 + timeout;
  return select_round(L, ctx, s);
}

const luaL_Reg lm_select_funcs[] = {
  {"select", l_select},
  {NULL, NULL}
};

static const luaL_Reg select_metamethods[] = {{"__gc", select_gc}, {NULL, NULL}};

void lm_open_select(lua_State *L) {
  lm_new_class(L, LM_SELECT_MT, NULL, select_metamethods);
}
