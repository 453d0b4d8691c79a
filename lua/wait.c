/* Waiting. A blocking-looking call sets up an lm_wait (queued waiters, a
 * timer) and hands it to lm_wait_begin. Inside a task that yields to the
 * scheduler with a marker; a wake-up only records the outcome and queues the
 * task, and the scheduler later resumes it into the call's continuation.
 * Outside any task the caller drives the loop itself until the wait ends. */
#include <math.h>
#include "lm.h"

/* The first value a loom wait yields. Coroutine resumers that know loom
 * (coro.c) recognise it and pass the wait on instead of returning it. */
const char lm_wait_marker = 0;

static void timer_expired(loom_timer_t *timer) {
  lm_wait_finish(timer->data, LOOM_ETIMEDOUT, -1);
}

void lm_one_wake(loom_waiter_t *waiter, int status) {
  lm_wait_finish(waiter->data, status, -1);
}

static int wait_gc(lua_State *L) {
  lm_wait_abort(lua_touserdata(L, 1));
  return 0;
}

static int raise_cancelled(lua_State *L, lm_task *t) {
  lm_push_cancelled(L, t, "task cancelled");
  return lua_error(L);
}

static lm_wait *prepare(lua_State *L, lm_ctx *ctx, int shielded) {
  lm_task *t = ctx->current;
  lm_wait *w;
  if (ctx->closed)
    lm_error(L, "closed", "the loom context is closed");
  /* A cancel is level-triggered: once cancelled, a task's every wait
   * raises, so catching one error cannot shrug it off (as an expired scope
   * does). A cancel that arrived while the task was not waiting lands at
   * its next wait. */
  if (t && !shielded && t->cancelled && !lm_cancel_held_off(t))
    raise_cancelled(L, t);
  lm_scope *expired = shielded ? NULL : lm_scope_expired(t ? t->scopes : ctx->outside_scopes);
  if (expired)
    lm_scope_raise(L, expired);
  if (t) {
    w = &t->wait;
  } else {
    /* Anchored on the waiting coroutine's stack until the call returns; its
     * __gc unlinks it should that coroutine be dropped mid-wait. */
    w = lua_newuserdatauv(L, sizeof *w, 0);
    luaL_setmetatable(L, LM_WAIT_MT);
  }
  w->ctx = ctx;
  w->task = t;
  w->status = 0;
  w->done = 0;
  w->chosen = -1;
  loom_timer_init(&w->timer, timer_expired, w);
  loom_waiter_init(&w->one, lm_one_wake, w);
  w->cases = NULL;
  w->ncases = 0;
  w->shielded = shielded;
  return w;
}

lm_wait *lm_wait_prepare(lua_State *L, lm_ctx *ctx) { return prepare(L, ctx, 0); }

/* The checks prepare makes before an unshielded wait, without raising. */
int lm_wait_would_raise(lm_ctx *ctx) {
  lm_task *t = ctx->current;
  if (ctx->closed)
    return 1;
  if (t && t->cancelled && !lm_cancel_held_off(t))
    return 1;
  return lm_scope_expired(t ? t->scopes : ctx->outside_scopes) != NULL;
}

/* For cleanup that must finish (draining a cancelled query): neither a
 * task:cancel() nor an expiring timeout ends this wait. */
lm_wait *lm_wait_prepare_shielded(lua_State *L, lm_ctx *ctx) { return prepare(L, ctx, 1); }

void lm_wait_arm_timer(lm_ctx *ctx, loom_timer_t *timer, double seconds) {
  if (seconds < 0)
    return;
  double ns = seconds * 1e9;
  uint64_t delay = ns > 9e18 ? (uint64_t)9e18 : (uint64_t)ns;
  loom_timer_start(&ctx->loop, timer, delay);
}

void lm_wait_arm(lm_wait *w, double seconds) {
  lm_wait_arm_timer(w->ctx, &w->timer, seconds);
}

static void unlink_all(lm_wait *w) {
  loom_waiter_unlink(&w->one);
  for (int i = 0; i < w->ncases; i++)
    loom_waiter_unlink(&w->cases[i].waiter);
  if (!w->ctx->closed)
    loom_timer_stop(&w->ctx->loop, &w->timer);
}

void lm_wait_finish(lm_wait *w, int status, int chosen) {
  if (w->done)
    return;
  unlink_all(w);
  w->status = status;
  w->chosen = chosen;
  w->done = 1;
  /* A wait can end before its task parks (a driver completing at once):
   * then lm_wait_begin sees done and carries on without yielding. */
  if (w->task && w->task->state == LM_WAITING)
    lm_task_ready(w->task);
}

/* Drops a wait that will never be resumed: nothing may point at it after. */
void lm_wait_abort(lm_wait *w) {
  if (w->ctx == NULL || w->done)
    return;
  unlink_all(w);
  w->done = 1;
  w->status = LOOM_ECANCELED;
}

/* Called in continuations: raises for outcomes every wait shares and
 * returns the status otherwise. */
int lm_wait_check(lua_State *L, lm_wait *w) {
  switch (w->status) {
  case LOOM_ECANCELED:
    if (w->task)
      return raise_cancelled(L, w->task);
    return lm_error(L, "cancelled", "wait cancelled");
  case LM_EDEADLINE: {
    lm_ctx *ctx = w->ctx;
    lm_scope *s = lm_scope_expired(w->task ? w->task->scopes : ctx->outside_scopes);
    if (s)
      return lm_scope_raise(L, s);
    return lm_error(L, "timeout", "timed out");
  }
  case LM_EDEADLOCK:
    return lm_error(L, "deadlock",
                    "this wait can never end: no task, timer or I/O is left to wake it");
  default:
    return w->status;
  }
}

/* Raises kind "timeout" for a wait whose own deadline (the number at
 * timeout_idx) passed. */
int lm_wait_timed_out(lua_State *L, int timeout_idx, const char *what) {
  lm_push_error(L, "timeout", "timed out after %f s waiting for %s",
                lua_tonumber(L, timeout_idx), what);
  return lua_error(L);
}

void lm_drive(lm_ctx *ctx, lua_State *L, lm_wait *w) {
  lm_wait *outer = ctx->driving_wait;
  ctx->driving_wait = w;
  while (!w->done) {
    /* The ready tasks first: one of them may end this wait, and then the
     * poll must not block on what the loop holds open for someone else (a
     * daemon's connection, a far timer). */
    lm_run_ready(ctx, L, LM_RUN_BUDGET);
    /* The tasks just run and the step below may end w (cppcheck cannot
     * see through them). */
    // cppcheck-suppress knownConditionTrueFalse
    if (w->done)
      break;
    int progress = lm_step(ctx, L, -1);
    // cppcheck-suppress knownConditionTrueFalse
    if (!w->done && !progress)
      lm_wait_finish(w, LM_EDEADLOCK, -1);
  }
  ctx->driving_wait = outer;
}

int lm_wait_begin(lua_State *L, lm_wait *w, lua_KFunction k) {
  return lm_wait_begin_ctx(L, w, k, (lua_KContext)w);
}

int lm_wait_begin_ctx(lua_State *L, lm_wait *w, lua_KFunction k, lua_KContext kctx) {
  if (w->done)
    return k(L, LUA_OK, kctx);
  if (w->task) {
    if (!lua_isyieldable(L)) {
      lm_wait_abort(w);
      return lm_error(L, "usage",
                      "cannot wait here: a C function without continuation "
                      "(a metamethod, a sort comparator, a C library callback) "
                      "is on the stack");
    }
    w->task->state = LM_WAITING;
    lua_pushlightuserdata(L, (void *)&lm_wait_marker);
    return lua_yieldk(L, 1, kctx, k);
  }
  if (lua_isyieldable(L)) {
    /* A coroutine outside any task: its resumer (coro.c) drives the loop. */
    lua_pushlightuserdata(L, (void *)&lm_wait_marker);
    lua_pushlightuserdata(L, w);
    return lua_yieldk(L, 2, kctx, k);
  }
  lm_drive(w->ctx, L, w);
  return k(L, LUA_YIELD, kctx);
}

static const luaL_Reg wait_metamethods[] = {{"__gc", wait_gc}, {NULL, NULL}};

void lm_open_wait(lua_State *L) {
  lm_new_class(L, LM_WAIT_MT, NULL, wait_metamethods);
}
