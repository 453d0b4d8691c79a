/* The per-state context: one loop, the run queue and the task registry of
 * one lua_State, kept in its registry. No C global holds mutable state, so
 * several states may run loom on several threads at once. */
#include <math.h>
#include <string.h>
#include "lm.h"
#include "loom_lua.h"
#include "codec.h"
#include "lm_io.h"
#include "lm_fsproc.h"

static const char ctx_key = 0;

lm_ctx *lm_ctx_get(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &ctx_key);
  lm_ctx *ctx = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return ctx;
}

void lm_push_ctx(lua_State *L) { lua_rawgetp(L, LUA_REGISTRYINDEX, &ctx_key); }

uint32_t lm_random(lm_ctx *ctx) {
  /* xorshift64*: select only needs an unbiased-enough start offset. */
  uint64_t x = ctx->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  ctx->rng = x;
  return (uint32_t)((x * 0x2545F4914F6CDD1DULL) >> 32);
}

int lm_work_remains(lm_ctx *ctx) {
  return ctx->ready_head != NULL || ctx->live > 0 || loom_loop_alive(&ctx->loop);
}

/* Outside loom.run, no task is left that could join a failed one: report
 * the failures nobody joined now, not whenever the collector gets to them.
 * Checked before and after a step: a top-level wait is driven by steps,
 * and once it has ended it may be the join of that very task, so it is
 * left to the next step. */
static int loop_idle(lm_ctx *ctx) {
  return ctx->stepping == 0 && !ctx->running && ctx->current == NULL &&
         ctx->ready_head == NULL && ctx->live <= ctx->daemons &&
         !(ctx->driving_wait && ctx->driving_wait->done);
}

/* Returns nonzero while progress is still possible: a task is ready or the
 * loop has something that can fire. */
int lm_step(lm_ctx *ctx, lua_State *L, int64_t timeout_ms) {
  if (ctx->unjoined && loop_idle(ctx))
    lm_report_unjoined(L, ctx);
  ctx->stepping++;
  lm_run_ready(ctx, L, LM_RUN_BUDGET);
  loom_loop_poll(&ctx->loop, ctx->ready_head ? 0 : timeout_ms);
  lm_slice_start(ctx);
  lm_run_ready(ctx, L, LM_RUN_BUDGET);
  ctx->stepping--;
  if (ctx->unjoined && loop_idle(ctx))
    lm_report_unjoined(L, ctx);
  return ctx->ready_head != NULL || loom_loop_alive(&ctx->loop);
}

static lm_ctx *upctx(lua_State *L) {
  return lua_touserdata(L, lua_upvalueindex(1));
}

static void check_not_in_task(lua_State *L, lm_ctx *ctx, const char *what) {
  if (ctx->current)
    lm_error(L, "usage", "%s cannot be called from inside a task", what);
}

/* Drives the loop until the task finished and no other task is left. A main
 * task that waits on what nothing can wake gets a deadlock error at its
 * wait. When main has failed, or has finished while the others wait on what
 * nothing can wake, the others are cancelled; those that catch that and wait
 * again on nothing are left behind rather than cancelled in a busy loop. */
static void run_until_done(lm_ctx *ctx, lua_State *L, lm_task *main) {
  int cancelled_for_failure = 0;
  size_t live_when_cancelled = (size_t)-1;
  for (;;) {
    if (lm_task_finished(main) && main->state != LM_DONE && !cancelled_for_failure) {
      cancelled_for_failure = 1;
      lm_cancel_all(ctx, L, 0);
    }
    /* Run the ready tasks before blocking in the poll: when main fails
     * here, the others are cancelled now, not after their next wake-up. */
    lm_run_ready(ctx, L, LM_RUN_BUDGET);
    /* Checked before every poll: what the loop still holds open (a
     * daemon's connection, a far timer) must not keep run from returning
     * once the last task it waits for finished here. */
    if (lm_task_finished(main) && ctx->live <= ctx->daemons)
      return;
    if (lm_task_finished(main) && main->state != LM_DONE && !cancelled_for_failure)
      continue;
    if (lm_step(ctx, L, -1))
      continue;
    if (!lm_task_finished(main)) {
      if (main->state == LM_WAITING)
        lm_wait_finish(&main->wait, LM_EDEADLOCK, -1);
    } else if (ctx->live != live_when_cancelled) {
      live_when_cancelled = ctx->live;
      lm_cancel_all(ctx, L, 0);
    } else {
      return;
    }
  }
}

static int run_inside_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  return lua_gettop(L) - (int)kctx;
}

/* main's failure is the caller's to raise, so it is not reported; the
 * failures nobody joined are, before this returns: nothing can join them
 * later but the caller, who may still do so (and is not reported to
 * twice). */
void lm_run_task(lm_ctx *ctx, lua_State *L, lm_task *main) {
  ctx->running++;
  run_until_done(ctx, L, main);
  ctx->running--;
  if (main->state != LM_DONE)
    main->observed = 1;
  lm_report_unjoined(L, ctx);
}

static int l_run(lua_State *L) {
  lm_ctx *ctx = upctx(L);
  lm_checkcallable(L, 1);
  int n = lua_gettop(L);
  if (ctx->current) {
    /* Already inside the loop: run fn as a plain call. */
    lua_callk(L, n - 1, LUA_MULTRET, 0, run_inside_k);
    return run_inside_k(L, LUA_OK, 0);
  }
  lm_task *main = lm_spawn(L, ctx, 1, n);
  int main_idx = lua_gettop(L);
  lm_run_task(ctx, L, main);
  if (main->state == LM_DONE) {
    lm_push_task_results(L, main);
    return main->nresults;
  }
  /* The error as raised; the traceback stays with the task (the caller
   * may pcall run and look at nothing else). */
  lua_getiuservalue(L, main_idx, LM_TASK_ERROR);
  return lua_error(L);
}

static int64_t to_ms(double seconds) {
  if (seconds < 0)
    return -1;
  double ms = ceil(seconds * 1000.0);
  return ms > 9e15 ? (int64_t)9e15 : (int64_t)ms;
}

static int l_step(lua_State *L) {
  lm_ctx *ctx = upctx(L);
  double timeout = lm_optseconds(L, 1);
  check_not_in_task(L, ctx, "loom.step");
  lm_step(ctx, L, lua_isnoneornil(L, 1) ? 0 : to_ms(timeout));
  lua_pushboolean(L, lm_work_remains(ctx));
  return 1;
}

static int l_fd(lua_State *L) {
  lua_pushinteger(L, loom_loop_fd(&upctx(L)->loop));
  return 1;
}

static int next_timeout_ms(lm_ctx *ctx) {
  if (ctx->ready_head)
    return 0;
  int64_t ms = loom_loop_next_timeout(&ctx->loop);
  return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

static int l_next_timeout(lua_State *L) {
  int ms = next_timeout_ms(upctx(L));
  if (ms < 0)
    return 0;
  lua_pushnumber(L, ms / 1000.0);
  return 1;
}

static int sleep_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lm_wait_check(L, LM_WAIT_OF(kctx));
  return 0;
}

static int l_yield(lua_State *L);

static int l_sleep(lua_State *L) {
  lm_ctx *ctx = upctx(L);
  double s = lm_checkseconds(L, 1);
  if (s == 0)
    return l_yield(L);
  lm_wait *w = lm_wait_prepare(L, ctx);
  lm_wait_arm(w, s);
  return lm_wait_begin(L, w, sleep_k);
}

static int yield_k(lua_State *L, int status, lua_KContext kctx) {
  (void)L; (void)status; (void)kctx;
  return 0;
}

extern const char lm_wait_marker;

static int l_yield(lua_State *L) {
  lm_ctx *ctx = upctx(L);
  lm_task *t = ctx->current;
  /* A yield is a wait: a cancel (unless held off) or a loom.timeout
   * that ran out raises here, or a loop of CPU work that yields between
   * chunks could never be stopped (outside tasks as in one). */
  if (lm_wait_would_raise(ctx))
    lm_wait_prepare(L, ctx);
  if (t == NULL) {
    lm_step(ctx, L, 0);
    return 0;
  }
  if (!lua_isyieldable(L))
    return 0;
  /* With no other task ready, what other threads finished meanwhile (a
   * reader's answer) is let in first: its tasks run before this one
   * again, as they would after a poll, without the cost of one. */
  if (ctx->ready_head == NULL)
    loom_loop_run_posts(&ctx->loop);
  lm_task_ready(t);
  lua_pushlightuserdata(L, (void *)&lm_wait_marker);
  return lua_yieldk(L, 1, 0, yield_k);
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, (double)loom_now_ns() / 1e9);
  return 1;
}

/* loom.stats(): what the scheduler holds right now, for tests and tuning. */
static int l_stats(lua_State *L) {
  lm_ctx *ctx = upctx(L);
  size_t ready = 0;
  for (lm_task *t = ctx->ready_head; t; t = t->next_ready)
    ready++;
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, (lua_Integer)ctx->live);
  lua_setfield(L, -2, "tasks");
  lua_pushinteger(L, (lua_Integer)ready);
  lua_setfield(L, -2, "ready");
  lua_pushinteger(L, (lua_Integer)loom_timer_count(&ctx->loop));
  lua_setfield(L, -2, "timers");
  return 1;
}

static const luaL_Reg context_funcs[] = {
  {"run", l_run},
  {"step", l_step},
  {"fd", l_fd},
  {"next_timeout", l_next_timeout},
  {"sleep", l_sleep},
  {"yield", l_yield},
  {"now", l_now},
  {"stats", l_stats},
  {NULL, NULL}
};

static int ctx_gc(lua_State *L) {
  lm_ctx *ctx = lua_touserdata(L, 1);
  if (ctx->closed)
    return 0;
  ctx->closed = 1;
  ctx->ready_head = ctx->ready_tail = NULL;
  loom_loop_close(&ctx->loop);
  return 0;
}

static void new_ctx(lua_State *L) {
  lm_ctx *ctx = lua_newuserdatauv(L, sizeof *ctx, 0);
  memset(ctx, 0, sizeof *ctx);
  int r = loom_loop_init(&ctx->loop);
  if (r) {
    ctx->closed = 1;
    lm_error(L, "loop", "cannot start the event loop: %s", uv_strerror(r));
  }
  ctx->rng = 0x9E3779B97F4A7C15ULL ^ (uint64_t)(uintptr_t)ctx ^ loom_now_ns();
  lm_slice_start(ctx);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, ctx_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &ctx_key);
}

void lm_open_context(lua_State *L) {
  lm_push_ctx(L);
  int exists = !lua_isnil(L, -1);
  lua_pop(L, 1);
  if (!exists)
    new_ctx(L);
}

static void add_funcs(lua_State *L, const luaL_Reg *funcs) {
  lm_push_ctx(L);
  luaL_setfuncs(L, funcs, 1);
}

int luaopen_loom_core(lua_State *L) {
  lm_open_error(L);
  lm_open_wait(L);
  lm_open_task(L);
  lm_open_chan(L);
  lm_open_select(L);
  lm_open_sem(L);
  lm_open_mutex(L);
  lm_open_event(L);
  lm_open_waitgroup(L);
  lm_open_scope(L);
  lm_open_db(L);
  lm_open_listen(L);
  lm_open_thread(L);
  lm_open_xchan(L);
  lm_open_io(L);
  lm_open_http(L);
  lm_open_context(L);
  lua_newtable(L);
  add_funcs(L, context_funcs);
  add_funcs(L, lm_task_funcs);
  add_funcs(L, lm_chan_funcs);
  add_funcs(L, lm_select_funcs);
  add_funcs(L, lm_error_funcs);
  add_funcs(L, lm_sem_funcs);
  add_funcs(L, lm_mutex_funcs);
  add_funcs(L, lm_event_funcs);
  add_funcs(L, lm_waitgroup_funcs);
  add_funcs(L, lm_scope_funcs);
  add_funcs(L, lm_db_funcs);
  add_funcs(L, lm_copy_funcs);
  add_funcs(L, lm_listen_funcs);
  add_funcs(L, lm_xcopy_funcs);
  add_funcs(L, lm_thread_funcs);
  add_funcs(L, lm_xchan_funcs);
  add_funcs(L, lm_io_funcs);
  lm_open_fsproc(L);
  add_funcs(L, lm_http_funcs);
  lua_getfield(L, LUA_REGISTRYINDEX, "loom.null.value");
  lua_setfield(L, -2, "null");
  lm_db_push_modes(L);
  lua_setfield(L, -2, "_modes");
  lm_open_coro(L);
  return 1;
}

/* ---- the C embedding API ------------------------------------------------ */

int loom_step(lua_State *L, int timeout_ms) {
  lm_ctx *ctx = lm_ctx_get(L);
  if (ctx == NULL || ctx->closed || ctx->current)
    return -1;
  lm_step(ctx, L, timeout_ms);
  return lm_work_remains(ctx);
}

int loom_fd(lua_State *L) {
  lm_ctx *ctx = lm_ctx_get(L);
  return ctx && !ctx->closed ? loom_loop_fd(&ctx->loop) : -1;
}

int loom_next_timeout(lua_State *L) {
  lm_ctx *ctx = lm_ctx_get(L);
  return ctx && !ctx->closed ? next_timeout_ms(ctx) : -1;
}
