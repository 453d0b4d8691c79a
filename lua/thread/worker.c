/* The worker side of loom.thread's pools (pool.h): the Lua state each
 * worker thread makes, and the jobs it runs in it.
 *
 * A worker state is a full loom state: the standard libraries, the
 * creating state's package.path and cpath, `loom` required, and the pool's
 * setup run once in it as a task. A job is fn(...) run as a task there (so
 * it may sleep, use channels, open a database) until that task and every
 * task it spawned have finished; its results, or its error and traceback,
 * go back encoded.
 *
 * Cancel. A running job is stopped where it is: the cancelling thread
 * installs a count hook on the job's coroutine (as lua.c does from its
 * SIGINT handler, and Lanes from another thread) and wakes the worker
 * state's loop; the hook raises a cancelled error, and re-arms itself
 * every STOP_REARM instructions should a pcall swallow it. The hook goes
 * on the coroutine of whichever task of the job runs at that moment (the
 * scheduler tells the state, on_resume), and on every task resumed after;
 * a job waiting in its loop is woken and its tasks cancelled, landing at
 * their wait. A plain coroutine the job made (coroutine.wrap) is out of
 * the hook's reach while it runs: it stops once it yields back. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <lualib.h>
#include "pool.h"

/* Instructions between two raises of the stop hook once a pcall swallowed
 * the first. */
#define STOP_REARM 1000

/* One worker thread's Lua state. */
typedef struct tstate {
  tconfig *cfg;
  lua_State *L;
  lm_ctx *ctx;
  uv_mutex_t lock;   /* guards co against the interrupting thread */
  lua_State *co;     /* the coroutine of the job's task running now */
  tjob *job;         /* the running job (worker thread only) */
  char *setup_err;   /* the encoded error of a failed setup */
  size_t setup_err_len;
  int job_kb;        /* the state's memory as the last job began, in KB */
  /* Results still to be streamed (after_job does), held in the registry
   * at pending_key; the worker's reference to the stream. */
  lm_xstream *pending;
  int pending_n;
} tstate;

static const char stop_key = 0;
static const char pending_key = 0;
/* A map's job (tjob.slice): fn(item, index) over a slice of the list, in
 * the worker, where fn is decoded once per worker like any job's fn that
 * may be shared, instead of once per slice as an argument. Lua, so that fn
 * may wait (a C loop could not yield across its calls). */
static const char slice_key = 0;
static const char slice_code[] =
    "local fn, items, first = ...\n"
    "local out = { n = items.n }\n"
    "for i = 1, items.n do out[i] = fn(items[i], first + i - 1) end\n"
    "return out\n";
/* The functions a worker decoded from jobs that may share them (bytes ->
 * function, see tjob.fn_shared), until there are this many. */
static const char decoded_key = 0;
#define DECODED_MAX 256

void lm_tjob_free(tjob *j) {
  lm_xbuf_free(j->fn, j->fn_len);
  lm_xbuf_free(j->args, j->args_len);
  lm_xbuf_free(j->out, j->out_len);
  lm_xstream_unref(j->args_stream);
  lm_xstream_unref(j->out_stream);
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

static int tostring_k(lua_State *L) {
  luaL_tolstring(L, 1, NULL);
  return 1;
}

/* Encodes what a job or setup raised (the value, then its traceback, on
 * top of L; popped). A value that cannot cross (a table with a metatable,
 * userdata) comes back as the argument error that says so, with the
 * value's text in its message and the worker's traceback kept: the caller
 * still learns what failed, and where. */
static void encode_raised(lua_State *L, char **out, size_t *len) {
  if (!lua_isstring(L, -1)) {
    lua_pop(L, 1);
    lua_pushliteral(L, "");
  }
  int raised = lua_gettop(L) - 1;
  lua_pushcfunction(L, encode_k);
  lua_pushlightuserdata(L, out);
  lua_pushlightuserdata(L, len);
  lua_pushliteral(L, "error");
  lua_pushvalue(L, raised);
  lua_pushvalue(L, raised + 1);
  if (lua_pcall(L, 5, 0, 0) != LUA_OK) {
    /* Why it cannot cross (a loom error naming the path), and the value's
     * own text (its __tostring may fail: then its type). */
    int why = lua_gettop(L);
    if (lua_type(L, why) != LUA_TTABLE ||
        lua_getfield(L, why, "message") != LUA_TSTRING) {
      lua_settop(L, why);
      lua_pushliteral(L, "cannot copy the error");
    }
    lua_pushcfunction(L, tostring_k);
    lua_pushvalue(L, raised);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_isstring(L, -1)) {
      lua_pop(L, 1);
      lua_pushfstring(L, "(error object is a %s value)",
                      luaL_typename(L, raised));
    }
    lm_push_error(L, "argument", "%s (what was raised: %s)",
                  lua_tostring(L, -2), lua_tostring(L, -1));
    lua_pushvalue(L, raised + 1);
    encode_top(L, 2, "error", out, len);
  }
  lua_settop(L, raised - 1);
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

/* ctx->on_resume: a task of the job runs on co (NULL: none does). A task
 * resumed once the job is cancelled starts with the hook set, here on its
 * own thread. */
static void state_resumed(lm_ctx *ctx, lua_State *co) {
  tstate *s = ctx->resume_data;
  uv_mutex_lock(&s->lock);
  s->co = co;
  uv_mutex_unlock(&s->lock);
  if (co && s->job && loom_work_cancelled(&s->job->work))
    lua_sethook(co, stop_hook, LUA_MASKCOUNT, 1);
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
  if (j->slice)
    lua_rawgetp(L, LUA_REGISTRYINDEX, &slice_key);
  int n = push_fn(L, j) + j->slice;
  if (j->args_stream)
    n += lm_xcopy_decode_stream(L, j->args_stream, &j->work.cancelled);
  else
    n += lm_xcopy_decode(L, j->args, j->args_len);
  lm_task *t = lm_spawn(L, s->ctx, 1, n);
  /* A cancel that came before the job's first task ran. */
  if (loom_work_cancelled(&j->work))
    lm_cancel_all(s->ctx, L, 1);
  lm_run_task(s->ctx, L, t);
  lua_sethook(t->co, NULL, 0, 0);
  int task_idx = lua_gettop(L);
  /* Encoded here, unprotected: what cannot cross raises, and job_run
   * sends that error instead. */
  if (t->state == LM_DONE) {
    int base = lua_gettop(L);
    lm_push_task_results(L, t);
    lm_xstream *st;
    /* Large results go as a stream that after_job writes once done has
     * gone back, so the caller decodes while this thread encodes. */
    if (lm_xstream_wanted(L, base + 1, t->nresults) && (st = lm_xstream_new()) != NULL) {
      lua_createtable(L, t->nresults, 0);
      for (int i = 1; i <= t->nresults; i++) {
        lua_pushvalue(L, base + i);
        lua_rawseti(L, -2, i);
      }
      lua_rawsetp(L, LUA_REGISTRYINDEX, &pending_key);
      s->pending = st;
      s->pending_n = t->nresults;
      lm_xstream_ref(st);
      j->out_stream = st;
      j->ok = 1;
      return 0;
    }
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
  encode_raised(L, &j->out, &j->out_len);
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

static int send_k(lua_State *L) {
  tstate *s = lua_touserdata(L, 1);
  int n = s->pending_n;
  luaL_checkstack(L, n + 8, NULL);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &pending_key);
  int t = lua_gettop(L);
  for (int i = 1; i <= n; i++)
    lua_rawgeti(L, t, i);
  lm_xcopy_encode_stream(L, t + 1, n, "results", s->pending);
  return 0;
}

/* Lets go of the pending results and the worker's reference to their
 * stream. */
static void forget_pending(tstate *s) {
  lm_xstream_unref(s->pending);
  s->pending = NULL;
  lua_pushnil(s->L);
  lua_rawsetp(s->L, LUA_REGISTRYINDEX, &pending_key);
}

/* Streams the pending results (after_job): a value that cannot cross ends
 * the stream with the error that says so, for the caller to raise. */
static void send_pending(tstate *s) {
  lua_State *L = s->L;
  lua_settop(L, 0);
  lua_pushcfunction(L, send_k);
  lua_pushlightuserdata(L, s);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    char *err = NULL;
    size_t len = 0;
    lua_pushliteral(L, "");
    encode_top(L, 2, "error", &err, &len);
    lm_xstream_fail(s->pending, err, len);
  }
  lua_settop(L, 0);
  forget_pending(s);
}

/* Pending results nobody waits for any more (the job was given up on, or
 * abandoned: after_job did not run): the stream ends unsent. */
static void drop_pending(tstate *s) {
  if (s->pending == NULL)
    return;
  lm_xstream_fail(s->pending, NULL, 0);
  forget_pending(s);
}

void lm_tjob_run(loom_work_t *work, void *data) {
  tstate *s = data;
  tjob *j = work->data;
  if (s)
    drop_pending(s);
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
  s->job_kb = lua_gc(L, LUA_GCCOUNT);
  lua_pushcfunction(L, job_main);
  lua_pushlightuserdata(L, s);
  lua_pushlightuserdata(L, j);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    lm_xbuf_free(j->out, j->out_len);
    j->out = NULL;
    j->ok = 0;
    /* A cancel that stopped the arguments' decode. */
    j->stopped = loom_work_cancelled(work);
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
  s->ctx->resume_data = s;
  s->ctx->on_resume = state_resumed;
  lm_push_error(L, "cancelled", "the job was cancelled while it ran");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &stop_key);
  if (luaL_loadbuffer(L, slice_code, sizeof slice_code - 1, "=(loom.thread.map)") != LUA_OK)
    return lua_error(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &slice_key);
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
    encode_raised(s->L, &s->setup_err, &s->setup_err_len);
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
  if (s->L) {
    drop_pending(s);
    lua_close(s->L);
  }
  lm_xbuf_free(s->setup_err, s->setup_err_len);
  uv_mutex_destroy(&s->lock);
  atomic_fetch_sub(&s->cfg->live, 1);
  free(s);
}

void lm_tconfig_unref(tconfig *cfg) {
  if (atomic_fetch_sub(&cfg->refs, 1) != 1)
    return;
  free(cfg->path);
  free(cfg->cpath);
  lm_xbuf_free(cfg->setup, cfg->setup_len);
  free(cfg);
}

/* What a job left behind (its decoded arguments, what it built and sent
 * back) is garbage once its outcome is encoded. A job that grew the state
 * by more than it held before (and by a megabyte at least) gets it
 * collected now, while its caller decodes the results: left to the
 * collector's steps, it would be swept during the next job's decode,
 * and a caller waiting for that job would wait for it. Cheap where it
 * matters: what survives (the worker's own tables) is small beside it. */
#define AFTER_JOB_MIN_KB 1024

static void state_after_job(void *data) {
  tstate *s = data;
  if (s == NULL || s->L == NULL)
    return;
  if (s->pending)
    send_pending(s);
  int grown = lua_gc(s->L, LUA_GCCOUNT) - s->job_kb;
  if (grown > AFTER_JOB_MIN_KB && grown > s->job_kb)
    lua_gc(s->L, LUA_GCCOLLECT);
}

/* hooks->destroy: every thread and job has let go of the pool. */
static void config_destroyed(void *data) { lm_tconfig_unref(data); }

const loom_workers_hooks_t lm_worker_hooks = {
    .thread_start = state_start,
    .thread_stop = state_stop,
    .interrupt = state_interrupt,
    .after_job = state_after_job,
    .destroy = config_destroyed,
};
