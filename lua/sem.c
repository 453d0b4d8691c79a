/* loom.semaphore(n): acquire([timeout]) returns the semaphore itself, so
 * `local s <close> = sem:acquire()` releases when the scope ends, also on
 * error and cancellation. */
#include "lm.h"

typedef struct lm_sem {
  loom_sem_t sem;
  lm_ctx *ctx;
} lm_sem;

static lm_sem *check_sem(lua_State *L) {
  return lm_check_self(L, LM_SEM_MT, "loom.semaphore");
}

static int l_semaphore(lua_State *L) {
  lm_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
  lua_Integer n = lua_isnoneornil(L, 1) ? 1 : lm_checkinteger(L, 1);
  if (n < 1)
    lm_argerror(L, 1, "a semaphore needs at least one permit");
  lm_sem *s = lua_newuserdatauv(L, sizeof *s, 0);
  s->ctx = ctx;
  loom_sem_init(&s->sem, n);
  luaL_setmetatable(L, LM_SEM_MT);
  return 1;
}

static int acquire_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  if (lm_wait_check(L, LM_WAIT_OF(kctx)) == LOOM_ETIMEDOUT)
    return lm_wait_timed_out(L, 2, "a semaphore permit");
  lua_settop(L, 1);
  return 1;
}

static int sem_acquire(lua_State *L) {
  lm_sem *s = check_sem(L);
  double timeout = lm_optseconds(L, 2);
  lua_settop(L, 2);
  if (loom_sem_try_acquire(&s->sem) == LOOM_OK) {
    lua_settop(L, 1);
    return 1;
  }
  if (timeout == 0)
    return lm_wait_timed_out(L, 2, "a semaphore permit");
  lm_wait *w = lm_wait_prepare(L, s->ctx);
  loom_sem_wait(&s->sem, &w->one);
  lm_wait_arm(w, timeout);
  return lm_wait_begin(L, w, acquire_k);
}

static int sem_try_acquire(lua_State *L) {
  lua_pushboolean(L, loom_sem_try_acquire(&check_sem(L)->sem) == LOOM_OK);
  return 1;
}

static int sem_release(lua_State *L) {
  if (loom_sem_release(&check_sem(L)->sem) != LOOM_OK)
    return lm_error(L, "usage", "semaphore released more times than acquired");
  return 0;
}

static int sem_available(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_sem(L)->sem.count);
  return 1;
}

static int sem_waiting(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_sem(L)->sem.waiters.len);
  return 1;
}

static int sem_gc(lua_State *L) {
  loom_sem_destroy(&((lm_sem *)lua_touserdata(L, 1))->sem);
  return 0;
}

static const luaL_Reg sem_methods[] = {
  {"acquire", sem_acquire},
  {"try_acquire", sem_try_acquire},
  {"release", sem_release},
  {"available", sem_available},
  {"waiting", sem_waiting},
  {NULL, NULL}
};

const luaL_Reg lm_sem_funcs[] = {{"semaphore", l_semaphore}, {NULL, NULL}};

static const luaL_Reg sem_metamethods[] = {
  {"__gc", sem_gc},
  {"__close", sem_release},
  {NULL, NULL}
};

void lm_open_sem(lua_State *L) {
  lm_new_class(L, LM_SEM_MT, sem_methods, sem_metamethods);
}
