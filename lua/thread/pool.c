/* loom.thread's pools: Lua states on worker threads (core/workers.h) that
 * run copied functions (codec.h) as tasks of their own loom loop.
 *
 * A worker state is a full loom state: the standard libraries, the
 * creating state's package.path and cpath, `loom` required, and the pool's
 * setup run once in it. A job is fn(...) run as a task there (so it may
 * sleep, use channels, open a database) until that task has finished; its
 * results or its error and traceback go back encoded.
 *
 * Cancel. A queued job is taken off the queue. A running one is stopped
 * where it is: the cancelling thread installs a count hook on the job's
 * coroutine (as lua.c does from its SIGINT handler, and Lanes from another
 * thread) and wakes the worker state's loop; the hook raises a cancelled
 * error, and re-arms itself every 1000 instructions should a pcall swallow
 * it. A job waiting in its loop is woken and its tasks cancelled, landing
 * at their wait. Only the job's own coroutine gets the hook: a coroutine
 * it made, or a task it spawned, is stopped at its next wait.
 *
 * A job stuck in a blocking C call cannot be stopped. Its caller waits
 * LM_THREAD_GRACE (20 ms) for it, then gives up on it (the request's abandon): the
 * caller's timeout or cancel is raised on time, the job goes on alone on
 * its worker, counted as `stuck` in pool:stats() until it returns, and
 * its result is freed then. The other workers keep serving the queue.
 *
 * Lifetime. Jobs out (queued, running, given up) are on the pool object's
 * list, on its state's thread. Closing the pool (pool:close(), its
 * collection, the state closing) rejects new jobs, ends queued ones and
 * cancels running ones; a collected pool also abandons the running jobs,
 * so lua_close never waits on a stuck thread: each frees its job when its
 * call returns. The threads hold their own reference to the core pool and
 * close their states when they end. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <lualib.h>
#include "lm.h"
#include "workers.h"
#include "codec.h"

#define LM_THREAD_POOL_MT "loom.thread.pool"
#define LM_THREAD_JOB_MT "loom.thread.job"
/* How long a cancelled caller waits for its job to stop before giving up
 * on it: a busy Lua loop stops in well under a millisecond, so a job still
 * running after this is in a C call, and the caller's timeout is at most
 * this late. */
#define LM_THREAD_GRACE 0.02
/* Instructions between two raises of the stop hook once a pcall swallowed
 * the first. */
#define STOP_REARM 1000

typedef struct tpool tpool;
typedef struct tjob tjob;

/* What the worker states are made from: shared by every thread, read only
 * once the pool exists. */
typedef struct tconfig {
  char *path, *cpath;
  char *setup;
  size_t setup_len;
  /* Held by the pool object and by the core pool (until its destroy). */
  _Atomic int refs;
  /* Threads whose state is not yet closed: the object's collection waits
   * for them. */
  _Atomic int live;
} tconfig;

/* One worker thread's Lua state. */
typedef struct tstate {
  tconfig *cfg;
  lua_State *L;
  lm_ctx *ctx;
  uv_mutex_t lock;   /* guards co against the interrupting thread */
  lua_State *co;     /* the running job's coroutine */
  tjob *job;         /* the running job (worker thread only) */
  char *setup_err;   /* the encoded error of a failed setup */
  size_t setup_err_len;
} tstate;

struct tjob {
  loom_work_t work;
  tpool *pool;       /* NULL once the pool object is gone */
  lm_request *rq;    /* NULL once nobody waits */
  tjob *next, *prev; /* in the pool's list of jobs out */
  char *fn, *args;
  size_t fn_len, args_len;
  char *out;         /* results, or the error and its traceback */
  size_t out_len;
  int fn_shared;     /* fn has no upvalue but _ENV: a worker may reuse it */
  int ok;            /* out holds results */
  int given_up;      /* its caller gave up on it: stuck in a blocking call */
  int stopped;       /* the job was stopped by a cancel */
  int status;        /* done's status */
  int finished;      /* done ran */
};

struct tpool {
  loom_workers_t *workers;
  tconfig *cfg;
  lm_ctx *ctx;
  tjob *jobs;
  int closed;
};

/* The handle a caller waits through: owns its job until the job is done
 * or given up. */
typedef struct thandle {
  lm_request rq;
  tjob *job;
} thandle;

static const char default_key = 0;
static const char stop_key = 0;
/* A function without upvalues but _ENV encodes the same every time (its
 * _ENV becomes the worker's globals whatever it is here) and behaves the
 * same whichever copy of it runs: the caller keeps its encoding (fn ->
 * bytes, weak keys) and each worker the function it decoded (bytes ->
 * function), so a job run again and again dumps and loads no bytecode. */
static const char encoded_key = 0, decoded_key = 0;
#define DECODED_MAX 256

/* ---- on the worker thread ------------------------------------------------ */

static void job_free(tjob *j) {
  lm_xbuf_free(j->fn, j->fn_len);
  lm_xbuf_free(j->args, j->args_len);
  lm_xbuf_free(j->out, j->out_len);
  free(j);
}

/* Encodes the values on L's stack above base into *out (protected). */
static int encode_k(lua_State *L) {
  char **out = lua_touserdata(L, 1);
  size_t *len = lua_touserdata(L, 2);
  const char *what = lua_tostring(L, 3);
  int n = lua_gettop(L) - 3;
  lm_xbuf *b = lm_xcopy_encode(L, 4, n, what);
  *out = lm_xbuf_take(b, len);
  return 0;
}

/* Encodes the n values on top of L (popped); on failure, the error that
 * says why, which does cross (a loom error); 0 if even that could not. */
static int encode_top(lua_State *L, int n, const char *what, char **out, size_t *len) {
  lua_pushcfunction(L, encode_k);
  lua_pushlightuserdata(L, out);
  lua_pushlightuserdata(L, len);
  lua_pushstring(L, what);
  lua_rotate(L, -4 - n, 4);
  if (lua_pcall(L, n + 3, 0, 0) == LUA_OK)
    return 1;
  lua_pushcfunction(L, encode_k);
  lua_pushlightuserdata(L, out);
  lua_pushlightuserdata(L, len);
  lua_pushstring(L, "error");
  lua_rotate(L, -5, -1);
  lua_pushliteral(L, "");
  if (lua_pcall(L, 5, 0, 0) != LUA_OK) {
    lua_pop(L, 1);
    *out = NULL;
  }
  return 0;
}

static void stop_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, stop_hook, LUA_MASKCOUNT, STOP_REARM);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &stop_key);
  lua_error(L);
}

/* hooks->interrupt: the cancelling thread, the pool's lock held. */
static void state_interrupt(void *data) {
  tstate *s = data;
  if (s == NULL)
    return;
  uv_mutex_lock(&s->lock);
  if (s->co)
    lua_sethook(s->co, stop_hook, LUA_MASKCOUNT, 1);
  uv_mutex_unlock(&s->lock);
  loom_loop_wake(&s->ctx->loop);
}

/* The worker state's loop was woken: a cancelled job waiting in it ends. */
static void state_woken(loom_loop_t *loop) {
  tstate *s = loop->data;
  if (s && s->job && loom_work_cancelled(&s->job->work))
    lm_cancel_all(s->ctx, s->L, 1);
}

static void set_co(tstate *s, lua_State *co) {
  uv_mutex_lock(&s->lock);
  s->co = co;
  uv_mutex_unlock(&s->lock);
}

/* Pushes the job's function: the one decoded before from the same bytes,
 * if it may be shared. */
static int push_fn(lua_State *L, tjob *j) {
  if (!j->fn_shared)
    return lm_xcopy_decode(L, j->fn, j->fn_len);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &decoded_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 8);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &decoded_key);
    lua_pushinteger(L, 0);
    lua_setfield(L, -2, "n");
  }
  lua_pushlstring(L, j->fn, j->fn_len);
  if (lua_rawget(L, -2) == LUA_TFUNCTION) {
    lua_remove(L, -2);
    return 1;
  }
  lua_pop(L, 1);
  lua_getfield(L, -1, "n");
  lua_Integer count = lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (count >= DECODED_MAX) { /* many different functions: start over */
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &decoded_key);
    return push_fn(L, j);
  }
  lm_xcopy_decode(L, j->fn, j->fn_len);
  lua_pushlstring(L, j->fn, j->fn_len);
  lua_pushvalue(L, -2);
  lua_rawset(L, -4);
  lua_pushinteger(L, count + 1);
  lua_setfield(L, -3, "n");
  lua_remove(L, -2);
  return 1;
}

/* In the worker state: fn and its arguments decoded, run as a task until
 * it has finished; its outcome encoded into the job. */
static int job_main(lua_State *L) {
  tstate *s = lua_touserdata(L, 1);
  tjob *j = lua_touserdata(L, 2);
  lua_settop(L, 0);
  int n = push_fn(L, j);
  n += lm_xcopy_decode(L, j->args, j->args_len);
  lm_task *t = lm_spawn(L, s->ctx, 1, n);
  set_co(s, t->co);
  /* A cancel that came before the hook could be placed. */
  if (loom_work_cancelled(&j->work))
    lm_cancel_all(s->ctx, L, 1);
  lm_run_task(s->ctx, L, t);
  set_co(s, NULL);
  lua_sethook(t->co, NULL, 0, 0);
  int task_idx = lua_gettop(L);
  /* Encoded here, unprotected: what cannot cross raises, and job_run
   * sends that error instead. */
  if (t->state == LM_DONE) {
    int base = lua_gettop(L);
    lm_push_task_results(L, t);
    lm_xbuf *b = lm_xcopy_encode(L, base + 1, t->nresults, "results");
    j->out = lm_xbuf_take(b, &j->out_len);
    j->ok = 1;
    return 0;
  }
  if (t->state == LM_CANCELLED || loom_work_cancelled(&j->work)) {
    j->stopped = 1;
    return 0;
  }
  lua_getiuservalue(L, task_idx, LM_TASK_ERROR);
  lua_getiuservalue(L, task_idx, LM_TASK_TRACEBACK);
  if (!lua_isstring(L, -1)) {
    lua_pop(L, 1);
    lua_pushliteral(L, "");
  }
  lm_xbuf *b = lm_xcopy_encode(L, -2, 2, "error");
  j->out = lm_xbuf_take(b, &j->out_len);
  return 0;
}

/* The job's outcome when the worker itself failed (no state, a setup that
 * failed, no memory): a loom error, encoded. */
static void job_fail(tstate *s, tjob *j, const char *kind, const char *msg) {
  if (s && s->setup_err) {
    j->out = lm_xbuf_dup(s->setup_err, s->setup_err_len);
    if (j->out)
      j->out_len = s->setup_err_len;
    return;
  }
  if (s == NULL || s->L == NULL)
    return; /* out stays NULL: the caller reports the lost worker */
  lm_push_error(s->L, kind, "%s", msg);
  lua_pushliteral(s->L, "");
  encode_top(s->L, 2, "error", &j->out, &j->out_len);
}

static void job_run(loom_work_t *work, void *data) {
  tstate *s = data;
  tjob *j = work->data;
  /* Cancelled as it was taken off the queue. (A stop hook a cancel left
   * behind sat on the previous job's coroutine, cleared as that job ended:
   * this one starts clean.) */
  if (loom_work_cancelled(work)) {
    j->stopped = 1;
    return;
  }
  if (s == NULL || s->L == NULL || s->setup_err) {
    job_fail(s, j, "thread", "the worker thread has no Lua state");
    return;
  }
  lua_State *L = s->L;
  s->job = j;
  lua_pushcfunction(L, job_main);
  lua_pushlightuserdata(L, s);
  lua_pushlightuserdata(L, j);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    set_co(s, NULL);
    lm_xbuf_free(j->out, j->out_len);
    j->out = NULL;
    j->ok = 0;
    lua_pushliteral(L, "");
    encode_top(L, 2, "error", &j->out, &j->out_len);
  }
  s->job = NULL;
  lua_settop(L, 0);
}

static void set_path(lua_State *L, const char *field, const char *value) {
  if (value == NULL)
    return;
  lua_getglobal(L, "package");
  lua_pushstring(L, value);
  lua_setfield(L, -2, field);
  lua_pop(L, 1);
}

/* In the new worker state: loom required, the stop sentinel made, setup
 * run as a task. */
static int state_open(lua_State *L) {
  tconfig *cfg = lua_touserdata(L, 1);
  tstate *s = lua_touserdata(L, 2);
  luaL_openlibs(L);
  set_path(L, "path", cfg->path);
  set_path(L, "cpath", cfg->cpath);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "loom");
  lua_call(L, 1, 0);
  s->ctx = lm_ctx_get(L);
  if (s->ctx == NULL)
    return luaL_error(L, "loom did not start in the worker state");
  s->ctx->loop.data = s;
  s->ctx->loop.on_wake = state_woken;
  lm_push_error(L, "cancelled", "the job was cancelled while it ran");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &stop_key);
  if (cfg->setup == NULL)
    return 0;
  lua_settop(L, 0);
  int n = lm_xcopy_decode(L, cfg->setup, cfg->setup_len);
  lm_task *t = lm_spawn(L, s->ctx, 1, n);
  lm_run_task(s->ctx, L, t);
  if (t->state == LM_DONE)
    return 0;
  lua_getiuservalue(L, -1, LM_TASK_ERROR);
  return lua_error(L);
}

static void *state_start(loom_loop_t *loop, void *data) {
  (void)loop;
  tconfig *cfg = data;
  tstate *s = calloc(1, sizeof *s);
  if (s == NULL)
    return NULL;
  if (uv_mutex_init(&s->lock) != 0) {
    free(s);
    return NULL;
  }
  s->cfg = cfg;
  s->L = luaL_newstate();
  if (s->L == NULL)
    return s;
  lua_pushcfunction(s->L, state_open);
  lua_pushlightuserdata(s->L, cfg);
  lua_pushlightuserdata(s->L, s);
  if (lua_pcall(s->L, 2, 0, 0) != LUA_OK) {
    /* Every job of this worker fails with what setup raised. */
    lua_pushliteral(s->L, "");
    encode_top(s->L, 2, "error", &s->setup_err, &s->setup_err_len);
    if (s->setup_err == NULL || s->ctx == NULL) {
      lua_close(s->L);
      s->L = NULL;
    }
  }
  if (s->L)
    lua_settop(s->L, 0);
  return s;
}

static void state_stop(void *data) {
  tstate *s = data;
  if (s == NULL)
    return;
  if (s->L)
    lua_close(s->L);
  lm_xbuf_free(s->setup_err, s->setup_err_len);
  uv_mutex_destroy(&s->lock);
  atomic_fetch_sub(&s->cfg->live, 1);
  free(s);
}

static void config_unref(tconfig *cfg) {
  if (atomic_fetch_sub(&cfg->refs, 1) != 1)
    return;
  free(cfg->path);
  free(cfg->cpath);
  lm_xbuf_free(cfg->setup, cfg->setup_len);
  free(cfg);
}

/* hooks->destroy: every thread and job has let go of the pool. */
static void config_destroyed(void *data) { config_unref(data); }

static const loom_workers_hooks_t state_hooks = {
  state_start, state_stop, state_interrupt, config_destroyed
};

/* ---- on the origin thread ------------------------------------------------- */

static void list_remove(tjob *j) {
  tpool *p = j->pool;
  if (p == NULL)
    return;
  if (j->prev)
    j->prev->next = j->next;
  else
    p->jobs = j->next;
  if (j->next)
    j->next->prev = j->prev;
  j->next = j->prev = NULL;
  j->pool = NULL;
}

static void job_done(loom_work_t *work, int status) {
  tjob *j = work->data;
  j->status = status;
  j->finished = 1;
  list_remove(j);
  if (j->rq)
    lm_request_complete(j->rq);
  else
    job_free(j);
}

/* Abandoned at the pool's end: freed where it ends. */
static void job_drop(loom_work_t *work) { job_free(work->data); }

static int req_pending(lm_request *r) {
  thandle *h = LM_CONTAINER_OF(r, thandle, rq);
  return h->job && !h->job->finished;
}

static void req_stop(lm_request *r) {
  thandle *h = LM_CONTAINER_OF(r, thandle, rq);
  loom_work_cancel(&h->job->work);
}

/* The job did not stop within the grace: it is the pool's now. */
static void req_abandon(lm_request *r) {
  thandle *h = LM_CONTAINER_OF(r, thandle, rq);
  h->job->rq = NULL;
  h->job->given_up = 1;
  h->job = NULL;
}

static const lm_request_ops job_ops = {
  req_pending, req_stop, NULL, req_abandon, LM_THREAD_GRACE
};

static int handle_gc(lua_State *L) {
  thandle *h = lua_touserdata(L, 1);
  tjob *j = h->job;
  if (j == NULL)
    return 0;
  h->job = NULL;
  if (j->finished || loom_work_state(&j->work) == LOOM_WORK_IDLE) {
    job_free(j); /* done ran, or it was never submitted */
    return 0;
  }
  /* Dropped while out (its coroutine collected, the state closing). */
  j->rq = NULL;
  loom_work_cancel(&j->work);
  return 0;
}

static tpool *check_pool(lua_State *L) {
  return lm_check_self(L, LM_THREAD_POOL_MT, "loom.thread.pool");
}

static int raise_job_error(lua_State *L, tjob *j) {
  if (j->out == NULL)
    return lm_error(L, "thread", "the worker could not send its outcome back");
  int base = lua_gettop(L);
  int n = lm_xcopy_decode(L, j->out, j->out_len);
  if (n != 2)
    return lm_error(L, "protocol", "a worker's error came back malformed");
  lua_pushvalue(L, base + 1);
  return lm_raise_with_traceback(L, base + 2);
}

static int run_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  thandle *h = LM_CONTAINER_OF((lm_request *)kctx, thandle, rq);
  lm_request_check(L, &h->rq);
  tjob *j = h->job;
  int base = lua_gettop(L);
  switch (j->status) {
  case LOOM_ECANCELED:
    return lm_error(L, "cancelled", "the job was cancelled before it ran");
  case LOOM_ECLOSED:
    return lm_error(L, "closed", "the thread pool closed before the job ran");
  }
  if (j->stopped)
    return lm_error(L, "cancelled", "the job was cancelled while it ran");
  if (!j->ok)
    return raise_job_error(L, j);
  int n = lm_xcopy_decode(L, j->out, j->out_len);
  (void)base;
  return n;
}

static int fn_shareable(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TFUNCTION || lua_iscfunction(L, idx))
    return 0;
  const char *name;
  for (int i = 1; (name = lua_getupvalue(L, idx, i)) != NULL; i++) {
    lua_pop(L, 1);
    if (strcmp(name, "_ENV") != 0)
      return 0;
  }
  return 1;
}

/* The encoding of the shareable function at idx, made once and kept in a
 * string on the stack while the caller copies it. */
static const char *encoded_fn(lua_State *L, int idx, size_t *len) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &encoded_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &encoded_key);
  }
  lua_pushvalue(L, idx);
  if (lua_rawget(L, -2) != LUA_TSTRING) {
    lua_pop(L, 1);
    lm_xbuf *b = lm_xcopy_encode(L, idx, 1, "fn");
    lua_pushlstring(L, b->p, b->len);
    lua_remove(L, -2);
    lua_pushvalue(L, idx);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
  }
  lua_remove(L, -2);
  return lua_tolstring(L, -1, len);
}

/* pool:run(fn, ...) */
static int pool_run(lua_State *L) {
  tpool *p = check_pool(L);
  lm_checkcallable(L, 2);
  int n = lua_gettop(L) - 2;
  if (p->closed)
    return lm_error(L, "closed", "the thread pool is closed");
  int shared = fn_shareable(L, 2);
  size_t fn_len;
  const char *fn = shared ? encoded_fn(L, 2, &fn_len) : NULL;
  lm_xbuf *fb = fn ? NULL : lm_xcopy_encode(L, 2, 1, "fn");
  lm_xbuf *ab = lm_xcopy_encode(L, 3, n, "args");
  thandle *h = lua_newuserdatauv(L, sizeof *h, 1);
  memset(h, 0, sizeof *h);
  luaL_setmetatable(L, LM_THREAD_JOB_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1); /* the pool lives while its caller waits */
  tjob *j = calloc(1, sizeof *j);
  if (j == NULL)
    return lm_error(L, "memory", "cannot allocate a job");
  h->job = j;
  if (fn) {
    j->fn = malloc(fn_len);
    if (j->fn == NULL)
      return lm_error(L, "memory", "cannot allocate a job");
    memcpy(j->fn, fn, fn_len);
    j->fn_len = fn_len;
  } else {
    j->fn = lm_xbuf_take(fb, &j->fn_len);
  }
  j->fn_shared = shared;
  j->args = lm_xbuf_take(ab, &j->args_len);
  h->rq.ctx = p->ctx;
  lm_request_prepare(L, &h->rq, &job_ops, 0);
  j->work.run = job_run;
  j->work.done = job_done;
  j->work.data = j;
  j->rq = &h->rq;
  if (loom_workers_submit(p->workers, &p->ctx->loop, &j->work) != 0) {
    lm_request_abort(&h->rq);
    return lm_error(L, "closed", "the thread pool is closed");
  }
  j->pool = p;
  j->next = p->jobs;
  if (p->jobs)
    p->jobs->prev = j;
  p->jobs = j;
  return lm_request_wait(L, &h->rq, run_k);
}

/* How long a collected pool waits for its threads to end (each closing
 * its state) when none is known to be stuck: a cancelled job stops in
 * microseconds; a job stuck unnoticed in a blocking call is waited for no
 * longer than this. */
#define SHUT_WAIT_NS 500000000ull

static void pool_shut(tpool *p, int abandon) {
  if (!p->closed) {
    p->closed = 1;
    loom_workers_close(p->workers, NULL, NULL, NULL);
  }
  if (!abandon)
    return;
  /* Queued jobs ended with the close; running ones were cancelled, but may
   * be stuck: the loop must not wait for them. */
  int stuck = 0;
  tjob *next;
  for (tjob *j = p->jobs; j; j = next) {
    next = j->next;
    j->next = j->prev = NULL;
    j->pool = NULL;
    stuck |= j->given_up;
    if (j->rq == NULL)
      loom_work_abandon(&j->work, job_drop);
  }
  p->jobs = NULL;
  loom_workers_unref(p->workers);
  p->workers = NULL;
  /* Threads that can end, end before the state does: nothing of theirs is
   * left running when the process exits after lua_close. */
  uint64_t deadline = uv_hrtime() + SHUT_WAIT_NS;
  while (!stuck && atomic_load(&p->cfg->live) > 0 && uv_hrtime() < deadline)
    uv_sleep(1);
  config_unref(p->cfg);
  p->cfg = NULL;
}

/* pool:close(): no new jobs; queued ones end with a `closed` error,
 * running ones are cancelled. Returns at once. */
static int pool_close(lua_State *L) {
  tpool *p = check_pool(L);
  if (p->workers)
    pool_shut(p, 0);
  return 0;
}

static int pool_gc(lua_State *L) {
  tpool *p = lua_touserdata(L, 1);
  if (p->workers)
    pool_shut(p, 1);
  return 0;
}

/* pool:stats(): {size, queued, running, stuck}. stuck: jobs whose caller
 * gave up on them (a timeout, a cancel) that still run, in a blocking call. */
static int pool_stats(lua_State *L) {
  tpool *p = check_pool(L);
  lua_Integer queued = 0, running = 0, stuck = 0;
  for (tjob *j = p->jobs; j; j = j->next) {
    int st = loom_work_state(&j->work);
    if (st == LOOM_WORK_QUEUED)
      queued++;
    else if (st == LOOM_WORK_RUNNING && j->rq == NULL)
      stuck++;
    else if (st == LOOM_WORK_RUNNING)
      running++;
  }
  lua_createtable(L, 0, 5);
  lua_pushinteger(L, p->workers ? (lua_Integer)loom_workers_size(p->workers) : 0);
  lua_setfield(L, -2, "size");
  lua_pushinteger(L, queued);
  lua_setfield(L, -2, "queued");
  lua_pushinteger(L, running);
  lua_setfield(L, -2, "running");
  lua_pushinteger(L, stuck);
  lua_setfield(L, -2, "stuck");
  lua_pushboolean(L, p->closed);
  lua_setfield(L, -2, "closed");
  return 1;
}

static int pool_size(lua_State *L) {
  tpool *p = check_pool(L);
  lua_pushinteger(L, p->workers ? (lua_Integer)loom_workers_size(p->workers) : 0);
  return 1;
}

static char *dup_global_path(lua_State *L, const char *field) {
  char *copy = NULL;
  lua_getglobal(L, "package");
  if (lua_istable(L, -1) && lua_getfield(L, -1, field) == LUA_TSTRING) {
    size_t n;
    const char *v = lua_tolstring(L, -1, &n);
    copy = malloc(n + 1);
    if (copy)
      memcpy(copy, v, n + 1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return copy;
}

/* Pushes a new pool of size threads (0: one per core), each state set up
 * with the function at setup_idx (0: none). */
static tpool *new_pool(lua_State *L, lua_Integer size, int setup_idx) {
  lm_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
  lm_xbuf *b = setup_idx ? lm_xcopy_encode(L, setup_idx, 1, "setup") : NULL;
  tpool *p = lua_newuserdatauv(L, sizeof *p, 0);
  memset(p, 0, sizeof *p);
  tconfig *cfg = calloc(1, sizeof *cfg);
  if (cfg == NULL)
    lm_error(L, "memory", "cannot allocate a thread pool");
  atomic_init(&cfg->refs, 2);
  atomic_init(&cfg->live, size > 0 ? (int)size : (int)uv_available_parallelism());
  if (b)
    cfg->setup = lm_xbuf_take(b, &cfg->setup_len);
  cfg->path = dup_global_path(L, "path");
  cfg->cpath = dup_global_path(L, "cpath");
  p->ctx = ctx;
  p->workers = loom_workers_new((unsigned)size, &state_hooks, cfg);
  if (p->workers == NULL) {
    config_unref(cfg);
    lm_error(L, "thread", "cannot start the worker threads");
  }
  p->cfg = cfg;
  luaL_setmetatable(L, LM_THREAD_POOL_MT);
  return p;
}

/* core._thread_pool(size, setup) */
static int l_thread_pool(lua_State *L) {
  lua_Integer size = luaL_optinteger(L, 1, 0);
  if (size < 0 || size > 1024)
    return lm_argerror(L, 1, "size must be between 1 and 1024");
  int has_setup = !lua_isnoneornil(L, 2);
  if (has_setup)
    lm_checkcallable(L, 2);
  new_pool(L, size, has_setup ? 2 : 0);
  return 1;
}

/* core._thread_default(): the state's default pool, one thread per core,
 * made on first use and closed with the state. */
static int l_thread_default(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &default_key) != LUA_TNIL)
    return 1;
  lua_pop(L, 1);
  new_pool(L, 0, 0);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &default_key);
  return 1;
}

/* core._block(seconds): a blocking C call (the thread sleeps), for tests
 * of workers stuck in C that cannot start a process (ThreadSanitizer's
 * runs). */
static int l_block(lua_State *L) {
  double s = luaL_checknumber(L, 1);
  uv_sleep(s > 0 ? (unsigned)(s * 1000) : 0);
  return 0;
}

/* core._thread_methods(): the pool class's methods, for those written in
 * Lua (map). */
static int l_thread_methods(lua_State *L) {
  luaL_getmetatable(L, LM_THREAD_POOL_MT);
  lua_getfield(L, -1, "__index");
  return 1;
}

const luaL_Reg lm_thread_funcs[] = {
  {"_thread_pool", l_thread_pool},
  {"_thread_methods", l_thread_methods},
  {"_block", l_block},
  {"_thread_default", l_thread_default},
  {NULL, NULL}
};

static const luaL_Reg pool_methods[] = {
  {"run", pool_run},
  {"close", pool_close},
  {"stats", pool_stats},
  {"size", pool_size},
  {NULL, NULL}
};

static const luaL_Reg pool_metamethods[] = {{"__gc", pool_gc}, {NULL, NULL}};
static const luaL_Reg handle_metamethods[] = {{"__gc", handle_gc}, {NULL, NULL}};

void lm_open_thread(lua_State *L) {
  lm_new_class(L, LM_THREAD_POOL_MT, pool_methods, pool_metamethods);
  lm_new_class(L, LM_THREAD_JOB_MT, NULL, handle_metamethods);
}
