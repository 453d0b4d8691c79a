/* loom.event(): set() wakes every waiter; wait() returns at once while the
 * flag is set. */
#include "lm.h"

typedef struct lm_event {
  loom_event_t ev;
  lm_ctx *ctx;
} lm_event;

static lm_event *check_event(lua_State *L) {
  return lm_check_self(L, LM_EVENT_MT, "loom.event");
}

static int l_event(lua_State *L) {
  lm_event *e = lua_newuserdatauv(L, sizeof *e, 0);
  e->ctx = lua_touserdata(L, lua_upvalueindex(1));
  loom_event_init(&e->ev);
  luaL_setmetatable(L, LM_EVENT_MT);
  return 1;
}

static int wait_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  if (lm_wait_check(L, LM_WAIT_OF(kctx)) == LOOM_ETIMEDOUT)
    return lm_wait_timed_out(L, 2, "an event");
  return 0;
}

static int event_wait(lua_State *L) {
  lm_event *e = check_event(L);
  double timeout = lm_optseconds(L, 2);
  lua_settop(L, 2);
  if (e->ev.is_set)
    return 0;
  if (timeout == 0)
    return lm_wait_timed_out(L, 2, "an event");
  lm_wait *w = lm_wait_prepare(L, e->ctx);
  loom_event_wait(&e->ev, &w->one);
  lm_wait_arm(w, timeout);
  return lm_wait_begin(L, w, wait_k);
}

static int event_set(lua_State *L) {
  loom_event_set(&check_event(L)->ev);
  return 0;
}

static int event_clear(lua_State *L) {
  loom_event_clear(&check_event(L)->ev);
  return 0;
}

static int event_is_set(lua_State *L) {
  lua_pushboolean(L, check_event(L)->ev.is_set);
  return 1;
}

static int event_gc(lua_State *L) {
  loom_event_destroy(&((lm_event *)lua_touserdata(L, 1))->ev);
  return 0;
}

static const luaL_Reg event_methods[] = {
  {"wait", event_wait},
  {"set", event_set},
  {"clear", event_clear},
  {"is_set", event_is_set},
  {NULL, NULL}
};

const luaL_Reg lm_event_funcs[] = {{"event", l_event}, {NULL, NULL}};

static const luaL_Reg event_meta[] = {{"__gc", event_gc}, {NULL, NULL}};

void lm_open_event(lua_State *L) {
  lm_new_class(L, LM_EVENT_MT, event_methods, event_meta);
}
