/* loom.waitgroup(): add(n) before starting work, done() when a piece ends,
 * wait() until the count is back at zero. */
#include "lm.h"

static lm_waitgroup *check_wg(lua_State *L) {
  return lm_check_self(L, LM_WAITGROUP_MT, "loom.waitgroup");
}

static int l_waitgroup(lua_State *L) {
  lm_waitgroup *g = lua_newuserdatauv(L, sizeof *g, 0);
  g->ctx = lua_touserdata(L, lua_upvalueindex(1));
  g->failed = 0;
  loom_waitgroup_init(&g->wg);
  luaL_setmetatable(L, LM_WAITGROUP_MT);
  return 1;
}

static int add(lua_State *L, lm_waitgroup *g, lua_Integer delta) {
  if (loom_waitgroup_add(&g->wg, delta) != LOOM_OK) {
    if (delta > 0)
      return lm_argerror(L, 2, "count would overflow the waitgroup counter");
    return lm_error(L, "usage", "waitgroup counter would go below zero");
  }
  return 0;
}

static int wg_add(lua_State *L) {
  lm_waitgroup *g = check_wg(L);
  return add(L, g, lua_isnoneornil(L, 2) ? 1 : lm_checkinteger(L, 2));
}

static int wg_done(lua_State *L) { return add(L, check_wg(L), -1); }

static int wait_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  if (lm_wait_check(L, LM_WAIT_OF(kctx)) == LOOM_ETIMEDOUT)
    return lm_wait_timed_out(L, 2, "a waitgroup");
  return 0;
}

static int wg_wait(lua_State *L) {
  lm_waitgroup *g = check_wg(L);
  double timeout = lm_optseconds(L, 2);
  lua_settop(L, 2);
  if (g->wg.count == 0)
    return 0;
  if (timeout == 0)
    return lm_wait_timed_out(L, 2, "a waitgroup");
  lm_wait *w = lm_wait_prepare(L, g->ctx);
  loom_waitgroup_wait(&g->wg, &w->one);
  lm_wait_arm(w, timeout);
  return lm_wait_begin(L, w, wait_k);
}

/* wg:_spawn(fn, ...) -> task: a task counted in wg from now until it ends,
 * however it ends (returned, failed, or cancelled before it started, when
 * it never runs a line to say so). A group waits for its children this
 * way: one wait for all of them instead of a join each. */
static int wg_spawn(lua_State *L) {
  lm_waitgroup *g = check_wg(L);
  lm_checkcallable(L, 2);
  /* Counted once it exists: lm_spawn may raise (too many arguments). */
  lm_task *t = lm_spawn(L, g->ctx, 2, lua_gettop(L) - 1);
  if (loom_waitgroup_add(&g->wg, 1) != LOOM_OK)
    return lm_error(L, "usage", "too many tasks counted in one waitgroup");
  t->counted_in = g;
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, LM_TASK_COUNTED_IN);
  return 1;
}

/* wg:_leave(task): task, spawned by wg:_spawn, is no longer counted (it
 * may then wait for the others: a server closed from its own handler). */
static int wg_leave(lua_State *L) {
  lm_waitgroup *g = check_wg(L);
  lm_task *t = lm_checkudata(L, 2, LM_TASK_MT, "loom.task");
  if (t->counted_in == g) {
    t->counted_in = NULL;
    loom_waitgroup_add(&g->wg, -1);
    lua_pushnil(L);
    lua_setiuservalue(L, 2, LM_TASK_COUNTED_IN);
  }
  return 0;
}

/* wg:_failed() -> how many of wg:_spawn's tasks ended without returning. */
static int wg_failed(lua_State *L) {
  lua_pushinteger(L, check_wg(L)->failed);
  return 1;
}

static int wg_count(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_wg(L)->wg.count);
  return 1;
}

static int wg_gc(lua_State *L) {
  loom_waitgroup_destroy(&((lm_waitgroup *)lua_touserdata(L, 1))->wg);
  return 0;
}

static const luaL_Reg wg_methods[] = {
  {"add", wg_add},
  {"done", wg_done},
  {"wait", wg_wait},
  {"count", wg_count},
  {"_spawn", wg_spawn},
  {"_leave", wg_leave},
  {"_failed", wg_failed},
  {NULL, NULL}
};

const luaL_Reg lm_waitgroup_funcs[] = {{"waitgroup", l_waitgroup}, {NULL, NULL}};

static const luaL_Reg wg_meta[] = {{"__gc", wg_gc}, {NULL, NULL}};

void lm_open_waitgroup(lua_State *L) {
  lm_new_class(L, LM_WAITGROUP_MT, wg_methods, wg_meta);
}
