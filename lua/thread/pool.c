/* loom.thread's pools, on the side of the state that owns them: the pool
 * object, and the jobs its callers wait for (worker.c runs them).
 *
 * A job stuck in a blocking C call cannot be stopped. Its caller waits
 * LM_THREAD_GRACE (20 ms) for it, then gives up on it (the request's
 * abandon): the caller's timeout or cancel is raised on time, the job goes
 * on alone on its worker, counted as `stuck` in pool:stats() until it
 * returns, and its result is freed then. A new worker takes the stuck
 * one's place (up to LOOM_WORKERS_SPARE stuck at once), so the pool keeps
 * its size; the stuck thread ends when its call returns. A queued job that
 * is cancelled is taken off the queue.
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
#include "list.h"
#include "pool.h"

#define LM_THREAD_POOL_MT "loom.thread.pool"
#define LM_THREAD_JOB_MT "loom.thread.job"
/* How long a cancelled caller waits for its job to stop before giving up
 * on it: a busy Lua loop stops in well under a millisecond, so a job still
 * running after this is in a C call, and the caller's timeout is at most
 * this late. */
#define LM_THREAD_GRACE 0.02

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
/* A function without upvalues but _ENV encodes the same every time (its
 * _ENV becomes the worker's globals whatever it is here) and behaves the
 * same whichever copy of it runs: the caller keeps its encoding (fn ->
 * bytes, weak keys) and each worker the function it decoded, so a job run
 * again and again dumps and loads no bytecode. */
static const char encoded_key = 0;

static void list_remove(tjob *j) {
  tpool *p = j->pool;
  if (p == NULL)
    return;
  LOOM_SET_REMOVE(p->jobs, j);
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
    lm_tjob_free(j);
}

/* Abandoned at the pool's end: freed where it ends. */
static void job_drop(loom_work_t *work) { lm_tjob_free(work->data); }

static int req_pending(lm_request *r) {
  thandle *h = LM_CONTAINER_OF(r, thandle, rq);
  return h->job && !h->job->finished;
}

static void req_stop(lm_request *r) {
  thandle *h = LM_CONTAINER_OF(r, thandle, rq);
  loom_work_cancel(&h->job->work);
}

/* The job did not stop within the grace: it is the pool's now, and a new
 * worker takes the place of the stuck one. */
static void req_abandon(lm_request *r) {
  thandle *h = LM_CONTAINER_OF(r, thandle, rq);
  tjob *j = h->job;
  j->rq = NULL;
  j->given_up = 1;
  h->job = NULL;
  if (j->pool == NULL || j->pool->cfg == NULL)
    return;
  /* Counted before it starts: the new thread's state may close before
   * loom_work_replace returns. */
  atomic_fetch_add(&j->pool->cfg->live, 1);
  if (!loom_work_replace(&j->work))
    atomic_fetch_sub(&j->pool->cfg->live, 1);
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
    lm_tjob_free(j); /* done ran, or it was never submitted */
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

static int decode_stream_k(lua_State *L) {
  lm_xstream *s = lua_touserdata(L, 1);
  lua_settop(L, 0);
  return lm_xcopy_decode_stream(L, s, NULL);
}

/* Results that come as a stream, decoded as the worker encodes them. A
 * worker that fails to encode them passes its error on in the stream. */
static int decode_results(lua_State *L, tjob *j) {
  lm_xstream *s = j->out_stream;
  int base = lua_gettop(L);
  lua_pushcfunction(L, decode_stream_k);
  lua_pushlightuserdata(L, s);
  if (lua_pcall(L, 1, LUA_MULTRET, 0) == LUA_OK)
    return lua_gettop(L) - base;
  if (lm_xstream_state(s) != LM_XSTREAM_FAILED || s->err == NULL)
    return lua_error(L);
  lua_settop(L, base);
  if (lm_xcopy_decode(L, s->err, s->err_len) != 2)
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
  if (j->out_stream)
    return decode_results(L, j);
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

/* The job on the pool's queue and in its set of jobs (a close ends
 * them); nonzero when the pool is closed. */
static int enqueue(tpool *p, tjob *j) {
  if (loom_workers_submit(p->workers, &p->ctx->loop, &j->work) != 0)
    return -1;
  j->pool = p;
  LOOM_SET_ADD(p->jobs, j);
  return 0;
}

/* pool:run(fn, ...); slice: pool:_slice(fn, items, first), a job of
 * map (fn over the items, in the worker). */
static int submit(lua_State *L, int slice) {
  tpool *p = check_pool(L);
  lm_checkcallable(L, 2);
  int n = lua_gettop(L) - 2;
  if (p->closed)
    return lm_error(L, "closed", "the thread pool is closed");
  int shared = fn_shareable(L, 2);
  size_t fn_len;
  const char *fn = shared ? encoded_fn(L, 2, &fn_len) : NULL;
  lm_xbuf *fb = fn ? NULL : lm_xcopy_encode(L, 2, 1, "fn");
  int streamed = lm_xstream_wanted(L, 3, n);
  lm_xbuf *ab = streamed ? NULL : lm_xcopy_encode(L, 3, n, "args");
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
  j->slice = slice;
  j->work.run = lm_tjob_run;
  j->work.done = job_done;
  j->work.data = j;
  if (streamed && (j->args_stream = lm_xstream_new()) == NULL)
    ab = lm_xcopy_encode(L, 3, n, "args"); /* no address space: in one piece */
  if (ab)
    j->args = lm_xbuf_take(ab, &j->args_len);
  if (j->args_stream) {
    /* The job goes first, and the worker decodes the arguments as they
     * are encoded here. Until the wait below nobody waits for it: done
     * frees it if the encode fails. */
    if (enqueue(p, j) != 0)
      return lm_error(L, "closed", "the thread pool is closed");
    if (lm_xcopy_pencode_stream(L, 3, n, "args", j->args_stream) != LUA_OK) {
      lm_xstream_fail(j->args_stream, NULL, 0);
      h->job = NULL;
      loom_work_cancel(&j->work);
      return lua_error(L);
    }
  }
  h->rq.ctx = p->ctx;
  lm_request_prepare(L, &h->rq, &job_ops, 0);
  j->rq = &h->rq;
  if (j->args_stream == NULL && enqueue(p, j) != 0) {
    lm_request_abort(&h->rq);
    return lm_error(L, "closed", "the thread pool is closed");
  }
  return lm_request_wait(L, &h->rq, run_k);
}

static int pool_run(lua_State *L) { return submit(L, 0); }

static int pool_slice(lua_State *L) { return submit(L, 1); }

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
  lm_tconfig_unref(p->cfg);
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

/* pool:stats(): {size, threads, queued, running, stuck, closed}. stuck:
 * jobs whose caller gave up on them (a timeout, a cancel) that still run,
 * in a blocking call; each has a thread of its own, beside the size that
 * serve (threads counts both, up to LOOM_WORKERS_SPARE stuck ones). */
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
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, p->workers ? (lua_Integer)loom_workers_size(p->workers) : 0);
  lua_setfield(L, -2, "size");
  lua_pushinteger(L, p->workers ? (lua_Integer)loom_workers_threads(p->workers) : 0);
  lua_setfield(L, -2, "threads");
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

/* Pushes a new pool of size threads (0: one per core) at nice above this
 * thread's, each state set up with the function at setup_idx (0: none). */
static tpool *new_pool(lua_State *L, lua_Integer size, int nice, int setup_idx) {
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
  p->workers = loom_workers_new((unsigned)size, nice, &lm_worker_hooks, cfg);
  if (p->workers == NULL) {
    lm_tconfig_unref(cfg);
    lm_error(L, "thread", "cannot start the worker threads");
  }
  p->cfg = cfg;
  luaL_setmetatable(L, LM_THREAD_POOL_MT);
  return p;
}

/* core._thread_pool(size, setup, nice) */
static int l_thread_pool(lua_State *L) {
  lua_Integer size = luaL_optinteger(L, 1, 0);
  if (size < 0 || size > 1024)
    return lm_argerror(L, 1, "size must be between 1 and 1024");
  int has_setup = !lua_isnoneornil(L, 2);
  if (has_setup)
    lm_checkcallable(L, 2);
  lua_Integer nice = luaL_optinteger(L, 3, LOOM_WORKERS_NICE);
  if (nice < 0 || nice > 19)
    return lm_argerror(L, 3, "nice must be between 0 and 19");
  new_pool(L, size, (int)nice, has_setup ? 2 : 0);
  return 1;
}

/* core._thread_default(): the state's default pool, one thread per core,
 * made on first use and closed with the state. */
static int l_thread_default(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &default_key) != LUA_TNIL)
    return 1;
  lua_pop(L, 1);
  new_pool(L, 0, LOOM_WORKERS_NICE, 0);
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
  {"_slice", pool_slice},
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
