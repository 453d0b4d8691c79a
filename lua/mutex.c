/* loom.mutex(): a semaphore of one with an owner. Only the task that locked
 * it may unlock it, and locking it again from that task is an error rather
 * than a deadlock. lock() returns the mutex, for `<close>`. */
#include "lm.h"

typedef struct lm_mutex {
  loom_sem_t sem;
  lm_ctx *ctx;
  const void *owner; /* a task, the context for code outside tasks, or NULL */
} lm_mutex;

static const void *whoami(lm_ctx *ctx) {
  return ctx->current ? (const void *)ctx->current : (const void *)ctx;
}

static lm_mutex *check_mutex(lua_State *L) {
  return lm_check_self(L, LM_MUTEX_MT, "loom.mutex");
}

static int l_mutex(lua_State *L) {
  lm_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
  lm_mutex *m = lua_newuserdatauv(L, sizeof *m, 0);
  m->ctx = ctx;
  m->owner = NULL;
  loom_sem_init(&m->sem, 1);
  luaL_setmetatable(L, LM_MUTEX_MT);
  return 1;
}

static int lock_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  if (lm_wait_check(L, LM_WAIT_OF(kctx)) == LOOM_ETIMEDOUT)
    return lm_wait_timed_out(L, 2, "a mutex");
  lua_settop(L, 1);
  return 1;
}

static int mutex_lock(lua_State *L) {
  lm_mutex *m = check_mutex(L);
  double timeout = lm_optseconds(L, 2);
  lua_settop(L, 2);
  if (m->owner && m->owner == whoami(m->ctx))
    return lm_error(L, "usage", "mutex already locked by this task");
  if (loom_sem_try_acquire(&m->sem) == LOOM_OK) {
    m->owner = whoami(m->ctx);
    lua_settop(L, 1);
    return 1;
  }
  if (timeout == 0)
    return lm_wait_timed_out(L, 2, "a mutex");
  lm_wait *w = lm_wait_prepare(L, m->ctx);
  loom_sem_wait(&m->sem, &w->one);
  lm_wait_arm(w, timeout);
  return lm_wait_begin(L, w, lock_k);
}

static int mutex_try_lock(lua_State *L) {
  lm_mutex *m = check_mutex(L);
  int ok = loom_sem_try_acquire(&m->sem) == LOOM_OK;
  if (ok)
    m->owner = whoami(m->ctx);
  lua_pushboolean(L, ok);
  return 1;
}

static int mutex_unlock(lua_State *L) {
  lm_mutex *m = check_mutex(L);
  if (m->owner == NULL)
    return lm_error(L, "usage", "unlock of a mutex that is not locked");
  if (m->owner != whoami(m->ctx))
    return lm_error(L, "usage", "unlock of a mutex locked by another task");
  /* Ownership passes with the handover, before the new owner even runs. */
  loom_waiter_t *next = m->sem.waiters.head;
  if (next) {
    lm_wait *w = next->data;
    m->owner = w->task ? (const void *)w->task : (const void *)m->ctx;
  } else {
    m->owner = NULL;
  }
  loom_sem_release(&m->sem);
  return 0;
}

static int mutex_is_locked(lua_State *L) {
  lua_pushboolean(L, check_mutex(L)->owner != NULL);
  return 1;
}

static int mutex_gc(lua_State *L) {
  loom_sem_destroy(&((lm_mutex *)lua_touserdata(L, 1))->sem);
  return 0;
}

static const luaL_Reg mutex_methods[] = {
  {"lock", mutex_lock},
  {"try_lock", mutex_try_lock},
  {"unlock", mutex_unlock},
  {"is_locked", mutex_is_locked},
  {NULL, NULL}
};

const luaL_Reg lm_mutex_funcs[] = {{"mutex", l_mutex}, {NULL, NULL}};

static const luaL_Reg mutex_meta[] = {{"__gc", mutex_gc}, {NULL, NULL}};

void lm_open_mutex(lua_State *L) {
  lm_new_class(L, LM_MUTEX_MT, mutex_methods, mutex_meta);
  luaL_getmetatable(L, LM_MUTEX_MT);
  lua_pushcfunction(L, mutex_unlock);
  lua_setfield(L, -2, "__close");
  lua_pop(L, 1);
}
