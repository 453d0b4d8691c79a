/* loom.select{ {ch, "recv"}, {ch, "send", v}, timeout = s }: waits until one
 * case can proceed and performs exactly that one. Ready cases are tried from
 * a random start so no channel starves the others. */
#include <string.h>
#include "lm.h"

#define CASES_IDX 2

static void case_wake(loom_waiter_t *waiter, int status) {
  lm_wait *w = waiter->data;
  lm_wait_finish(w, status, (int)((lm_case *)waiter - w->cases));
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
  if (c == NULL)
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
  loom_waiter_init(&cs->waiter, case_wake, NULL);
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
  if (status == LOOM_OK) {
    lua_getiuservalue(L, CASES_IDX, i + 1);
    lm_chan_fetch(L, -1, item);
    lua_remove(L, -2);
  } else {
    lua_pushnil(L);
  }
  lua_pushboolean(L, status == LOOM_OK);
  return 3;
}

static int select_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lm_wait *w = LM_WAIT_OF(kctx);
  lm_case *cases = w->cases;
  int n = w->ncases, chosen = w->chosen;
  /* Values offered by sends that did not happen go back to nobody. */
  for (int i = 0; i < n; i++) {
    if (cases[i].is_send && !(i == chosen && w->status == LOOM_OK)) {
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
  return chosen_result(L, &cases[chosen], chosen, st, cases[chosen].waiter.item);
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
  lm_case *cases = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *cases, n);
  /* Stack: 1 cases table, 2 cases userdata, then one value slot per case. */
  for (int i = 0; i < n; i++)
    parse_case(L, &cases[i], i + 1);
  int values = CASES_IDX + 1;

  int start = n ? (int)(lm_random(ctx) % (uint32_t)n) : 0;
  for (int j = 0; j < n; j++) {
    int i = (start + j) % n;
    lm_case *cs = &cases[i];
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
  if (timeout == 0)
    return 0;

  lm_wait *w = lm_wait_prepare(L, ctx);
  w->cases = cases;
  w->ncases = n;
  for (int i = 0; i < n; i++) {
    lm_case *cs = &cases[i];
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

const luaL_Reg lm_select_funcs[] = {
  {"select", l_select},
  {NULL, NULL}
};
