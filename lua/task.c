/* Tasks: a task is a coroutine plus the bookkeeping that lets the scheduler
 * park it on a wait and resume it when the wait ends. An unfinished task is
 * pinned in the registry, so dropping every reference to a waiting task
 * never frees what the loop still points at.
 *
 * Tasks have no __gc: a finalizer makes every object that has one cost a
 * call and an extra collection cycle, which was a fifth of a trivial
 * task's spawn-to-finish time. Only a failed task needs one (to report a
 * failure nobody joined); it gets a small reporter object, see
 * add_reporter. Nothing else needs a task finalized: a finished task is
 * unlinked from every queue and timer, and when the state closes all
 * finalizers (channels, the loop) run before any memory is freed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lm.h"

#define LM_REPORTER_MT "loom.task.reporter"

/* The reason slot is read only while a task is unfinished (a cancel that
 * has yet to land), so once it has failed the slot holds its reporter. */
#define LM_TASK_REPORTER LM_TASK_REASON

/* The task metatable is also registered under this address: a light
 * userdata key is found without the string compare luaL_setmetatable
 * pays on every spawn. */
static const char task_mt_key = 0;

static lm_task *check_task(lua_State *L) {
  return lm_check_self(L, LM_TASK_MT, "loom.task");
}

int lm_task_finished(const lm_task *t) { return t->state >= LM_DONE; }

void lm_task_ready(lm_task *t) {
  if (t->state == LM_READY || lm_task_finished(t))
    return;
  lm_ctx *ctx = t->ctx;
  t->state = LM_READY;
  t->next_ready = NULL;
  if (ctx->ready_tail)
    ctx->ready_tail->next_ready = t;
  else
    ctx->ready_head = t;
  ctx->ready_tail = t;
}

static void live_remove(lm_ctx *ctx, lm_task *t) {
  if (t->live_prev)
    t->live_prev->live_next = t->live_next;
  else if (ctx->live_head == t)
    ctx->live_head = t->live_next;
  if (t->live_next)
    t->live_next->live_prev = t->live_prev;
  t->live_prev = t->live_next = NULL;
}

static int task_join(lua_State *L);

/* The last error raised through lm_raise_with_traceback and where it was
 * first raised, until a task's handler takes them (or the next one
 * replaces them: an error caught on its way has no task to go to). */
static const char remote_err_key = 0, remote_tb_key = 0;

static void forget_remote(lua_State *L) {
  lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &remote_err_key);
  lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &remote_tb_key);
}

int lm_raise_with_traceback(lua_State *L, int tb_idx) {
  tb_idx = lua_absindex(L, tb_idx);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &remote_err_key);
  lua_pushvalue(L, tb_idx);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &remote_tb_key);
  return lua_error(L);
}

/* Pushes the traceback of the error at idx, raised in co: where it was
 * raised, and when a join re-raises a joined task's failure, where that
 * task failed first. */
static void push_traceback(lua_State *co, int idx) {
  luaL_traceback(co, co, NULL, 1);
  if (lua_rawgetp(co, LUA_REGISTRYINDEX, &remote_err_key) != LUA_TNIL &&
      lua_rawequal(co, -1, idx)) {
    /* Raised first on another thread: that traceback leads. */
    lua_pop(co, 1);
    lua_rawgetp(co, LUA_REGISTRYINDEX, &remote_tb_key);
    lua_pushliteral(co, "\n(re-raised from a worker thread)\n");
    lua_rotate(co, -3, -1);
    lua_concat(co, 3);
    forget_remote(co);
    return;
  }
  lua_pop(co, 1);
  lua_Debug ar;
  if (!lua_getstack(co, 1, &ar) || !lua_getinfo(co, "f", &ar))
    return;
  int by_join = lua_tocfunction(co, -1) == task_join;
  lua_pop(co, 1);
  /* join's first stack slot is the task it joined. */
  if (!by_join || lua_getlocal(co, &ar, 1) == NULL)
    return;
  lm_task *joined = luaL_testudata(co, -1, LM_TASK_MT);
  int same = 0;
  if (joined && joined->state == LM_FAILED) {
    lua_getiuservalue(co, -1, LM_TASK_ERROR);
    same = lua_rawequal(co, -1, idx);
    lua_pop(co, 1);
  }
  if (same && lua_getiuservalue(co, -1, LM_TASK_TRACEBACK) == LUA_TSTRING) {
    lua_pushliteral(co, "\n(re-raised by a join)\n");
    lua_remove(co, -3);     /* the joined task */
    lua_rotate(co, -3, -1); /* the joiner's traceback last */
    lua_concat(co, 3);
    return;
  }
  lua_pop(co, same ? 2 : 1);
}

/* Message handler of a task's body: the traceback of where it failed,
 * taken before the stack unwinds, kept beside the error (never inside: the
 * error crosses to its joiners as it was raised). A cancellation needs
 * none. Called only for an error nothing inside the task catches: the
 * whole task unwinds now, and its cleanup may wait even if it was
 * cancelled. */
static int task_trace(lua_State *co) {
  lm_ctx *ctx = lm_ctx_get(co);
  lm_task *t = ctx ? ctx->current : NULL;
  if (t)
    t->unwinding = 1;
  if (t && t->ref != LUA_NOREF && !lm_is_error_kind(co, 1, "cancelled")) {
    lua_rawgeti(co, LUA_REGISTRYINDEX, t->ref);
    push_traceback(co, 1);
    lua_setiuservalue(co, -2, LM_TASK_TRACEBACK);
    lua_pop(co, 1);
  }
  lua_settop(co, 1);
  return 1;
}

static int body_done(lua_State *co, int status, lua_KContext kctx) {
  (void)kctx;
  if (status != LUA_OK && status != LUA_YIELD)
    return lua_error(co);
  return lua_gettop(co) - 1;
}

/* What every task runs: fn(...) in a protected call inside the coroutine,
 * so an error or a cancel unwinds there, and <close> handlers and cleanup
 * may still wait (a shielded rollback, an unlock that talks to a server). */
static int task_body(lua_State *co) {
  int nargs = lua_gettop(co) - 1;
  lua_pushcfunction(co, task_trace);
  lua_insert(co, 1);
  return body_done(co, lua_pcallk(co, nargs, LUA_MULTRET, 1, 0, body_done), 0);
}

lm_task *lm_spawn(lua_State *L, lm_ctx *ctx, int first, int n) {
  lm_task *t = lua_newuserdatauv(L, sizeof *t, LM_TASK_SLOTS);
  memset(t, 0, sizeof *t);
  t->ctx = ctx;
  t->ref = LUA_NOREF;
  loom_waitq_init(&t->joiners);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &task_mt_key);
  lua_setmetatable(L, -2);
  lua_State *co = lua_newthread(L);
  lua_setiuservalue(L, -2, LM_TASK_CO);
  t->co = co;
  /* The arguments are copied on L before they move: room for them there
   * too (a C caller is owed only LUA_MINSTACK slots past its own). */
  if (!lua_checkstack(co, n + 2) || !lua_checkstack(L, n))
    lm_error(L, "argument", "too many arguments to spawn");
  lua_pushcfunction(co, task_body);
  for (int i = 0; i < n; i++)
    lua_pushvalue(L, first + i);
  lua_xmove(L, co, n);
  t->nargs = n;
  lua_pushvalue(L, -1);
  t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  t->live_next = ctx->live_head;
  if (ctx->live_head)
    ctx->live_head->live_prev = t;
  ctx->live_head = t;
  ctx->live++;
  t->state = LM_NEW;
  lm_task_ready(t);
  return t;
}

static void finish(lm_ctx *ctx, lua_State *L, lm_task *t) {
  lm_scope_release_all(t);
  live_remove(ctx, t);
  ctx->live--;
  if (t->daemon)
    ctx->daemons--;
  loom_waitq_wake_all(&t->joiners, LOOM_OK);
  if (t->counted_in) {
    if (t->state != LM_DONE)
      t->counted_in->failed++;
    loom_waitgroup_add(&t->counted_in->wg, -1);
    t->counted_in = NULL;
  }
  /* Last: once unpinned the task may be collected. */
  luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
  t->ref = LUA_NOREF;
}

static void add_reporter(lua_State *L, int task_idx);

/* The coroutine died with its error on top of its stack. */
static void record_failure(lua_State *L, lm_task *t) {
  lua_State *co = t->co;
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
  int u = lua_gettop(L);
  int cancelled = lm_is_error_kind(co, -1, "cancelled");
  lua_pushvalue(co, -1);
  lua_xmove(co, L, 1);
  lua_setiuservalue(L, u, LM_TASK_ERROR);
  /* The body's handler took the traceback where the error was raised;
   * only an error that bypassed it (out of memory) gets one here. */
  if (!cancelled && lua_getiuservalue(L, u, LM_TASK_TRACEBACK) != LUA_TSTRING) {
    luaL_traceback(L, co, NULL, 0);
    lua_setiuservalue(L, u, LM_TASK_TRACEBACK);
  }
  lua_settop(L, u);
  /* Run pending <close> handlers as the task itself (a mutex checks who
   * unlocks it); an error in one replaces the original, as it would in a
   * protected call. */
  lm_task *outer = t->ctx->current;
  t->ctx->current = t;
  int closed = lua_resetthread(co);
  t->ctx->current = outer;
  if (closed != LUA_OK) {
    lua_xmove(co, L, 1);
    cancelled = lm_is_error_kind(L, -1, "cancelled");
    lua_setiuservalue(L, u, LM_TASK_ERROR);
  }
  lua_settop(co, 0);
  t->state = cancelled ? LM_CANCELLED : LM_FAILED;
  if (!cancelled)
    add_reporter(L, u);
  lua_settop(L, u - 1);
}

void lm_push_cancelled(lua_State *L, lm_task *t, const char *fallback) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
  lua_getiuservalue(L, -1, LM_TASK_REASON);
  const char *reason = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  lm_push_error(L, "cancelled", "%s", reason ? reason : fallback);
  lua_insert(L, -2);
  lua_setfield(L, -2, "reason");
}

static void finish_unstarted(lm_ctx *ctx, lua_State *L, lm_task *t) {
  lm_push_cancelled(L, t, "task cancelled before it started");
  lua_setiuservalue(L, -2, LM_TASK_ERROR);
  lua_pop(L, 1);
  lua_settop(t->co, 0);
  t->state = LM_CANCELLED;
  finish(ctx, L, t);
}

static void resume_task(lm_ctx *ctx, lua_State *L, lm_task *t) {
  int nargs = 0;
  if (!t->started) {
    t->started = 1;
    if (t->cancelled) {
      finish_unstarted(ctx, L, t);
      return;
    }
    nargs = t->nargs;
  }
  lm_task *outer = ctx->current;
  ctx->current = t;
  t->state = LM_RUNNING;
  if (ctx->on_resume)
    ctx->on_resume(ctx, t->co);
  int nres;
  int status = lua_resume(t->co, L, nargs, &nres);
  ctx->current = outer;
  if (ctx->on_resume)
    ctx->on_resume(ctx, outer ? outer->co : NULL);
  if (status == LUA_YIELD) {
    lua_pop(t->co, nres);
    /* Still RUNNING: a bare coroutine.yield() in the task body, which the
     * scheduler treats as loom.yield(). */
    if (t->state == LM_RUNNING)
      lm_task_ready(t);
    return;
  }
  if (status == LUA_OK) {
    t->nresults = nres;
    t->state = LM_DONE;
  } else {
    record_failure(L, t);
  }
  finish(ctx, L, t);
}

/* A new slice of run-queue work begins: the loop has just been polled, and
 * read the clock as it returned. */
void lm_slice_start(lm_ctx *ctx) {
  ctx->polled_ns = ctx->checked_ns = loom_loop_poll_end_ns(&ctx->loop);
  if (ctx->check_every < 1)
    ctx->check_every = 1;
  ctx->until_check = ctx->check_every;
  ctx->slice_spent = 0;
}

/* Called after every check_every resumes: marks the slice spent once it
 * is used up. Reading the clock costs as much as a few cheap resumes, so it
 * is read once per about LM_CHECK_NS of work: the stride follows what the
 * resumes since the last reading cost. */
static void check_slice(lm_ctx *ctx) {
  uint64_t now = uv_hrtime();
  uint64_t per = (now - ctx->checked_ns) / (uint64_t)ctx->check_every;
  uint64_t every = per ? LM_CHECK_NS / per : LM_CHECK_MAX;
  ctx->check_every = every < 1 ? 1 : every > LM_CHECK_MAX ? LM_CHECK_MAX : (int)every;
  ctx->until_check = ctx->check_every;
  ctx->checked_ns = now;
  if (now - ctx->polled_ns >= LM_RUN_SLICE_NS)
    ctx->slice_spent = 1;
}

void lm_run_ready(lm_ctx *ctx, lua_State *L, int budget) {
  while (ctx->ready_head && !ctx->slice_spent && budget-- > 0) {
    lm_task *t = ctx->ready_head;
    ctx->ready_head = t->next_ready;
    if (ctx->ready_head == NULL)
      ctx->ready_tail = NULL;
    t->next_ready = NULL;
    resume_task(ctx, L, t);
    if (--ctx->until_check <= 0)
      check_slice(ctx);
  }
}

static int cancel(lm_task *t) {
  if (lm_task_finished(t))
    return 0;
  t->cancelled = 1;
  if (t->state == LM_WAITING && !t->wait.done && !t->wait.shielded && !lm_cancel_held_off(t))
    lm_wait_finish(&t->wait, LOOM_ECANCELED, -1);
  return 1;
}

void lm_cancel_all(lm_ctx *ctx, lua_State *L, int daemons_too) {
  (void)L;
  for (lm_task *t = ctx->live_head; t; t = t->live_next)
    if (daemons_too || !t->daemon)
      cancel(t);
}

void lm_push_task_results(lua_State *L, lm_task *t) {
  int n = t->nresults;
  luaL_checkstack(L, n, "too many results");
  lua_checkstack(t->co, n);
  for (int i = 0; i < n; i++)
    lua_pushvalue(t->co, -n);
  lua_xmove(t->co, L, n);
}

static int join_result(lua_State *L, lm_task *t, int task_idx) {
  if (t->state == LM_DONE) {
    lm_push_task_results(L, t);
    return t->nresults;
  }
  t->observed = 1;
  lua_getiuservalue(L, task_idx, LM_TASK_ERROR);
  return lua_error(L);
}

static int join_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lm_wait_check(L, LM_WAIT_OF(kctx));
  return join_result(L, lua_touserdata(L, 1), 1);
}

static int task_join(lua_State *L) {
  lm_task *t = check_task(L);
  lm_ctx *ctx = t->ctx;
  lua_settop(L, 1);
  if (lm_task_finished(t))
    return join_result(L, t, 1);
  if (t == ctx->current)
    return lm_error(L, "usage", "a task cannot join itself");
  lm_wait *w = lm_wait_prepare(L, ctx);
  loom_waitq_push(&t->joiners, &w->one);
  return lm_wait_begin(L, w, join_k);
}

static int await_k(lua_State *L, int status, lua_KContext kctx);

static int await_begin(lua_State *L, lm_task *t) {
  lm_wait *w = lm_wait_prepare_shielded(L, t->ctx);
  loom_waitq_push(&t->joiners, &w->one);
  return lm_wait_begin(L, w, await_k);
}

static int await_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lm_wait_check(L, LM_WAIT_OF(kctx));
  lm_task *t = lua_touserdata(L, 1);
  return lm_task_finished(t) ? 0 : await_begin(L, t);
}

/* t:_await(): waits until t has finished, and nothing else ends the wait:
 * neither a task:cancel() of the waiter nor a scope expiring around it
 * (a cancel lands at the waiter's next wait). A group uses it to let its
 * children unwind: retrying a join that keeps raising at once would spin.
 * Raises only when the wait can never end (deadlock) or cannot happen here;
 * returns nothing, the outcome is t's to report. */
static int task_await(lua_State *L) {
  lm_task *t = check_task(L);
  lua_settop(L, 1);
  if (lm_task_finished(t))
    return 0;
  if (t == t->ctx->current)
    return lm_error(L, "usage", "a task cannot wait for itself");
  return await_begin(L, t);
}

static int task_cancel(lua_State *L) {
  lm_task *t = check_task(L);
  if (!lm_task_finished(t) && !lua_isnoneornil(L, 2)) {
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, 1, LM_TASK_REASON);
  }
  lua_pushboolean(L, cancel(t));
  return 1;
}

static const char *status_name(const lm_task *t) {
  switch (t->state) {
  case LM_DONE: return "done";
  case LM_FAILED: return "failed";
  case LM_CANCELLED: return "cancelled";
  default: return t->started ? "running" : "pending";
  }
}

static int task_status(lua_State *L) {
  lua_pushstring(L, status_name(check_task(L)));
  return 1;
}

/* t:_cancel_requested(): t:cancel() reached t, whether or not t has seen
 * it yet (a group tells a child stopped on its own from one that failed). */
static int task_cancel_requested(lua_State *L) {
  lua_pushboolean(L, check_task(L)->cancelled);
  return 1;
}

static int task_tostring(lua_State *L) {
  lm_task *t = check_task(L);
  lua_pushfstring(L, "loom.task (%s): %p", status_name(t), (void *)t);
  return 1;
}

/* task:traceback(): where the task failed, or nil if it did not fail. */
static int task_traceback(lua_State *L) {
  lm_task *t = check_task(L);
  if (t->state != LM_FAILED)
    return 0;
  lua_getiuservalue(L, 1, LM_TASK_TRACEBACK);
  return 1;
}

/* A failure nobody saw, task at 1: hand it to loom.on_error's handler as
 * (err, task, traceback), or to stderr. Run protected: a __tostring or a
 * handler that raises must not take run, a step or a finalizer down. */
static int report(lua_State *L) {
  lua_settop(L, 1);
  lua_getfield(L, LUA_REGISTRYINDEX, "loom.on_error");
  lua_getiuservalue(L, 1, LM_TASK_ERROR);
  lua_getiuservalue(L, 1, LM_TASK_TRACEBACK);
  if (!lua_isnil(L, 2)) { /* on_error took it as callable */
    lua_pushvalue(L, 1);
    lua_insert(L, -2);
    if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
      fprintf(stderr, "loom: the on_error handler failed: %s\n",
              luaL_tolstring(L, -1, NULL));
      fflush(stderr);
    }
    return 0;
  }
  const char *msg = luaL_tolstring(L, 3, NULL);
  const char *tb = lua_tostring(L, 4);
  fprintf(stderr, "loom: a task failed and nobody joined it: %s%s%s\n", msg,
          tb ? "\n" : "", tb ? tb : "");
  fflush(stderr);
  return 0;
}

static void report_unobserved(lua_State *L, int task_idx) {
  lm_task *t = lua_touserdata(L, task_idx);
  t->observed = 1;
  lua_pushcfunction(L, report);
  lua_pushvalue(L, task_idx);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "loom: a task failed and nobody joined it; reporting it failed: %s\n",
            lua_tostring(L, -1) ? lua_tostring(L, -1) : "(not a string)");
    fflush(stderr);
    lua_pop(L, 1);
  }
}

/* The reporter's finalizer: its task became garbage (or the state is
 * closing) with a failure that nobody joined. The task is kept alive for
 * this call through the reporter's user value. */
static int reporter_gc(lua_State *L) {
  lua_getiuservalue(L, 1, 1);
  lm_task *t = lua_touserdata(L, -1);
  if (t && t->state == LM_FAILED && !t->observed)
    report_unobserved(L, lua_gettop(L));
  return 0;
}

/* Failed tasks not yet joined nor reported, for lm_report_unjoined: a
 * table with weak keys (task -> order of failure), so that a task nobody
 * holds is still collected and reported by its reporter. */
static const char unjoined_key = 0;

/* Gives a failed task an object with a finalizer, reachable only from the
 * task: it is collected together with the task. */
static void add_reporter(lua_State *L, int task_idx) {
  lm_task *t = lua_touserdata(L, task_idx);
  lua_newuserdatauv(L, 0, 1);
  luaL_setmetatable(L, LM_REPORTER_MT);
  lua_pushvalue(L, task_idx);
  lua_setiuservalue(L, -2, 1);
  lua_setiuservalue(L, task_idx, LM_TASK_REPORTER);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &unjoined_key);
  lua_pushvalue(L, task_idx);
  lua_pushinteger(L, (lua_Integer)++t->ctx->unjoined);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

typedef struct {
  lua_Integer order;
  int slot;
} unjoined_entry;

static int by_order(const void *a, const void *b) {
  lua_Integer x = ((const unjoined_entry *)a)->order, y = ((const unjoined_entry *)b)->order;
  return (x > y) - (x < y);
}

/* Reports, in the order they failed, the failed tasks nobody joined. Called
 * when no task is left that could still join them: as loom.run returns,
 * and when the loop goes idle outside run. */
void lm_report_unjoined(lua_State *L, lm_ctx *ctx) {
  if (ctx->unjoined == 0)
    return;
  ctx->unjoined = 0;
  int top = lua_gettop(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &unjoined_key);
  int tbl = lua_gettop(L);
  lua_newtable(L);
  int tasks = lua_gettop(L);
  size_t n = 0, cap = 0;
  unjoined_entry *e = NULL;
  lua_pushnil(L);
  while (lua_next(L, tbl)) {
    lm_task *t = lua_touserdata(L, -2);
    if (t->state == LM_FAILED && !t->observed) {
      if (n == cap) {
        cap = cap ? cap * 2 : 16;
        unjoined_entry *grown = lua_newuserdatauv(L, cap * sizeof *grown, 0);
        if (n)
          memcpy(grown, e, n * sizeof *grown);
        e = grown;
        lua_rawsetp(L, tasks, (void *)&unjoined_key); /* anchors the buffer */
      }
      e[n].order = lua_tointeger(L, -1);
      e[n].slot = (int)(n + 1);
      n++;
      lua_pushvalue(L, -2);
      lua_rawseti(L, tasks, (lua_Integer)n);
    }
    lua_pop(L, 1);
  }
  /* Everything in it is now reported or observed. */
  lua_newtable(L);
  lua_getmetatable(L, tbl);
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &unjoined_key);
  if (n > 1)
    qsort(e, n, sizeof *e, by_order);
  for (size_t i = 0; i < n; i++) {
    lua_rawgeti(L, tasks, e[i].slot);
    lm_task *t = lua_touserdata(L, -1);
    if (!t->observed)
      report_unobserved(L, lua_gettop(L));
    lua_pop(L, 1);
  }
  lua_settop(L, top);
}

static int l_spawn(lua_State *L) {
  lm_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
  lm_checkcallable(L, 1);
  lm_spawn(L, ctx, 1, lua_gettop(L));
  return 1;
}

/* core _spawn_daemon(fn, ...): a background task (a listener's dispatcher)
 * that loom.run does not wait for. */
static int l_spawn_daemon(lua_State *L) {
  lm_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
  lm_checkcallable(L, 1);
  lm_task *t = lm_spawn(L, ctx, 1, lua_gettop(L));
  t->daemon = 1;
  ctx->daemons++;
  return 1;
}

/* loom.current(): the running task, or nil outside tasks. */
static int l_current(lua_State *L) {
  lm_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
  if (ctx->current == NULL)
    return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->current->ref);
  return 1;
}

static int l_on_error(lua_State *L) {
  if (!lua_isnoneornil(L, 1))
    lm_checkcallable(L, 1);
  lua_settop(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, "loom.on_error");
  return 0;
}

const luaL_Reg lm_task_funcs[] = {
  {"spawn", l_spawn},
  {"_spawn_daemon", l_spawn_daemon},
  {"current", l_current},
  {"on_error", l_on_error},
  {NULL, NULL}
};

static const luaL_Reg task_methods[] = {
  {"join", task_join},
  {"cancel", task_cancel},
  {"status", task_status},
  {"_cancel_requested", task_cancel_requested},
  {"traceback", task_traceback},
  {"_await", task_await},
  {NULL, NULL}
};

static const luaL_Reg task_metamethods[] = {{"__tostring", task_tostring}, {NULL, NULL}};
static const luaL_Reg reporter_metamethods[] = {{"__gc", reporter_gc}, {NULL, NULL}};

void lm_open_task(lua_State *L) {
  lm_new_class(L, LM_TASK_MT, task_methods, task_metamethods);
  luaL_getmetatable(L, LM_TASK_MT);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &task_mt_key);
  lm_new_class(L, LM_REPORTER_MT, NULL, reporter_metamethods);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &unjoined_key) == LUA_TNIL) {
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &unjoined_key);
  }
  lua_pop(L, 1);
}
