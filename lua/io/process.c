/* loom.process.spawn's child processes (core/process.c: posix_spawn and a
 * pidfd on Linux, uv_spawn elsewhere): p:wait(), p:kill(), p.pid, and its
 * stdin, stdout and stderr as loom streams (core/stream.c,
 * lua/io/stream.c: the sockets' read, lines, write, close).
 *
 * Reaping. The core reaps a child once it exited (its pidfd turned
 * readable, or libuv's SIGCHLD came) and calls the exit callback, which
 * records the status and closes the handle. So the handle stays open
 * until the child exited, whatever happens to the Lua object: a process
 * object collected while its child runs leaves the handle (malloc'd) to
 * the exit callback, which frees it, and no zombie is left.
 *
 * A cancelled wait (task:cancel(), loom.timeout) stops the child: SIGTERM,
 * then SIGKILL once kill_grace seconds passed, and waits (shielded) until
 * it exited before raising; on_cancel = "leave" lets the child run on
 * instead.
 *
 * A state closed while children run: their process objects are collected
 * first, then the list of live processes (made before any of them, so
 * collected after them) closes their handles with close_cb, before the
 * loop's own close would close them without one and leak the memory. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include "lm_fsproc.h"
#include "lm_io.h"
#include "process.h"

#define LM_PROCESS_MT "loom.process"
#define LM_PROCESS_WAIT_MT "loom.process.wait"
#define DEFAULT_GRACE 2.0

typedef struct xwait xwait;

typedef struct proc {
  loom_process_t h;
  lm_ctx *ctx;
  loom_timer_t kill_timer;
  double grace;
  int leave;       /* on_cancel = "leave" */
  int closed;      /* the handle's close callback ran */
  int orphan;      /* the userdata is gone */
  xwait *waiter;
  struct proc *prev, *next; /* the state's live processes */
  struct plist *list;
} proc;

typedef struct plist {
  proc *head;
} plist;

static const char plist_key = 0;

static void unlist(proc *p) {
  if (p->list == NULL)
    return;
  if (p->prev)
    p->prev->next = p->next;
  else
    p->list->head = p->next;
  if (p->next)
    p->next->prev = p->prev;
  p->list = NULL;
  p->prev = p->next = NULL;
}

typedef struct lm_process {
  proc *p;
} lm_process;

struct xwait {
  lm_request rq;
  proc *p;
  int left;        /* on_cancel = "leave": the wait gave up, the child runs */
};

/* Process userdata slots: its pipes. */
#define SLOT_STDIN 1
#define SLOT_STDOUT 2
#define SLOT_STDERR 3

static void close_cb(loom_process_t *h) {
  proc *p = h->data;
  p->closed = 1;
  unlist(p);
  if (!p->ctx->closed)
    loom_timer_stop(&p->ctx->loop, &p->kill_timer);
  if (p->orphan)
    free(p);
}

static void exit_cb(loom_process_t *h) {
  proc *p = h->data;
  if (!p->ctx->closed)
    loom_timer_stop(&p->ctx->loop, &p->kill_timer);
  if (p->waiter)
    lm_request_complete(&p->waiter->rq);
  loom_process_close(h, close_cb);
}

static void kill_timer_cb(loom_timer_t *t) {
  proc *p = t->data;
  loom_process_kill(&p->h, SIGKILL);
}

/* SIGTERM now, SIGKILL after the grace. */
static void terminate(proc *p) {
  if (p->h.exited || loom_timer_active(&p->kill_timer))
    return;
  loom_process_kill(&p->h, SIGTERM);
  lm_wait_arm_timer(p->ctx, &p->kill_timer, p->grace);
}

static int req_pending(lm_request *r) {
  xwait *w = LM_CONTAINER_OF(r, xwait, rq);
  return w->p && !w->p->h.exited && !w->left;
}

static void req_stop(lm_request *r) {
  xwait *w = LM_CONTAINER_OF(r, xwait, rq);
  if (w->p->leave)
    w->left = 1;
  else
    terminate(w->p);
}

static void req_drained(lua_State *L, lm_request *r) {
  (void)L;
  xwait *w = LM_CONTAINER_OF(r, xwait, rq);
  if (w->p && w->p->waiter == w)
    w->p->waiter = NULL;
}

static const lm_request_ops wait_ops = {req_pending, req_stop, req_drained, NULL, 0};

static int xwait_gc(lua_State *L) {
  xwait *w = lua_touserdata(L, 1);
  if (w->p && w->p->waiter == w)
    w->p->waiter = NULL;
  return 0;
}

static lm_process *check_process(lua_State *L) {
  return lm_check_self(L, LM_PROCESS_MT, "loom.process");
}

static void push_status(lua_State *L, const proc *p) {
  if (p->h.term_signal) {
    lua_pushnil(L);
    lm_push_signame(L, p->h.term_signal);
  } else {
    lua_pushinteger(L, (lua_Integer)p->h.code);
    lua_pushnil(L);
  }
}

static int wait_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  xwait *w = LM_CONTAINER_OF((lm_request *)kctx, xwait, rq);
  if (w->p->waiter == w)
    w->p->waiter = NULL;
  lm_request_check(L, &w->rq);
  push_status(L, w->p);
  return 2;
}

/* p:wait(): the exit code, or nil and the signal's name ("KILL") when a
 * signal ended it. */
static int process_wait(lua_State *L) {
  lm_process *ud = check_process(L);
  proc *p = ud->p;
  lua_settop(L, 1);
  if (p->h.exited) {
    push_status(L, p);
    return 2;
  }
  if (p->waiter)
    return lm_error(L, "busy", "another task is waiting for this process: one wait at a time");
  xwait *w = lua_newuserdatauv(L, sizeof *w, 0);
  memset(w, 0, sizeof *w);
  luaL_setmetatable(L, LM_PROCESS_WAIT_MT);
  w->rq.ctx = p->ctx;
  lm_request_prepare(L, &w->rq, &wait_ops, 0);
  w->p = p;
  p->waiter = w;
  return lm_request_wait(L, &w->rq, wait_k);
}

/* p:kill([sig]): "TERM" (default), "KILL", "INT", a number...; false if
 * the child has exited already. */
static int process_kill(lua_State *L) {
  lm_process *ud = check_process(L);
  int sig = lua_isnoneornil(L, 2) ? SIGTERM : lm_signum(L, 2);
  if (sig < 0)
    return lm_argerror(L, 2, "unknown signal");
  int rc = loom_process_kill(&ud->p->h, sig);
  if (rc == UV_ESRCH) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (rc < 0)
    return lm_fs_error(L, rc, "kill", NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/* p:_terminate(): SIGTERM, SIGKILL after the grace (run's cleanup). */
static int process_terminate(lua_State *L) {
  terminate(check_process(L)->p);
  return 0;
}

static int process_index(lua_State *L) {
  lm_process *ud = lua_touserdata(L, 1);
  const char *k = lua_tostring(L, 2);
  if (k == NULL)
    return 0;
  if (strcmp(k, "pid") == 0) {
    lua_pushinteger(L, ud->p->h.pid);
    return 1;
  }
  int slot = strcmp(k, "stdin") == 0 ? SLOT_STDIN : strcmp(k, "stdout") == 0 ? SLOT_STDOUT
           : strcmp(k, "stderr") == 0 ? SLOT_STDERR : 0;
  if (slot) {
    lua_getiuservalue(L, 1, slot);
    return 1;
  }
  lua_getfield(L, lua_upvalueindex(1), "methods");
  lua_getfield(L, -1, k);
  return 1;
}

static int process_gc(lua_State *L) {
  lm_process *ud = lua_touserdata(L, 1);
  proc *p = ud->p;
  if (p == NULL)
    return 0;
  ud->p = NULL;
  if (p->waiter)
    p->waiter->p = NULL;
  p->waiter = NULL;
  if (p->closed)
    free(p);
  else
    p->orphan = 1;
  return 0;
}

static int process_tostring(lua_State *L) {
  lm_process *ud = lua_touserdata(L, 1);
  lua_pushfstring(L, "loom.process (pid %d%s)", ud->p ? ud->p->h.pid : 0,
                  ud->p && ud->p->h.exited ? ", exited" : "");
  return 1;
}

/* ---- spawn --------------------------------------------------------------- */

/* What a name=value entry's name is (its length). */
static size_t name_len(const char *entry) {
  const char *eq = strchr(entry, '=');
  return eq ? (size_t)(eq - entry) : strlen(entry);
}

/* The child's environment: the parent's (unless clear), with the table at
 * idx laid over it (a false value removes a name). Strings on the stack
 * hold the entries; returns a NULL-ended array to free, or NULL for "as
 * the parent's". */
static char **build_env(lua_State *L, int idx, int clear) {
  if (lua_isnil(L, idx) && !clear)
    return NULL;
  int top = lua_gettop(L);
  lua_newtable(L); /* name -> "name=value" */
  int names = top + 1;
  if (!clear) {
    uv_env_item_t *items;
    int count;
    if (uv_os_environ(&items, &count) == 0) {
      for (int i = 0; i < count; i++) {
        lua_pushfstring(L, "%s=%s", items[i].name, items[i].value);
        lua_setfield(L, names, items[i].name);
      }
      uv_os_free_environ(items, count);
    }
  }
  if (!lua_isnil(L, idx)) {
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      if (lua_type(L, -2) != LUA_TSTRING)
        lm_argerror(L, 3, "env keys must be strings");
      const char *k = lua_tostring(L, -2);
      if (lua_toboolean(L, -1) == 0) {
        lua_pushnil(L);
      } else if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) {
        lua_pushfstring(L, "%s=%s", k, lua_tostring(L, -1));
      } else {
        lm_argerror(L, 3, "env values must be strings, numbers or false");
      }
      lua_setfield(L, names, k);
      lua_pop(L, 1);
    }
  }
  size_t n = 0;
  lua_pushnil(L);
  while (lua_next(L, names)) {
    n++;
    lua_pop(L, 1);
  }
  char **env = calloc(n + 1, sizeof *env);
  if (env == NULL)
    lm_error(L, "memory", "cannot build the environment");
  size_t i = 0;
  lua_pushnil(L);
  while (lua_next(L, names)) {
    const char *e = lua_tostring(L, -1);
    if (name_len(e) > 0)
      env[i++] = (char *)e;
    lua_pop(L, 1);
  }
  return env; /* the strings stay in the names table, on the stack */
}

static const char *const stdio_names[] = {"pipe", "inherit", "null", NULL};

static void ignore_sigpipe(void) {
  /* A write to a pipe whose reader is gone must fail with EPIPE, not kill
   * the process; the child gets every signal at its default again
   * (core/process.c resets them). */
  struct sigaction old;
  if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL)
    signal(SIGPIPE, SIG_IGN);
}

/* core._process_spawn(cmd, args, opts): opts as checked by process.lua:
 * env, clear_env, cwd, stdin/stdout/stderr ("pipe", "inherit", "null"),
 * kill_grace, on_cancel ("kill" or "leave"). */
static int l_spawn(lua_State *L) {
  lm_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
  const char *cmd = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TTABLE);
  lua_settop(L, 3);
  lua_Integer nargs = (lua_Integer)lua_rawlen(L, 2);
  if (nargs > 100000)
    return lm_argerror(L, 2, "too many arguments");
  const char **argv = lua_newuserdatauv(L, sizeof(char *) * (size_t)(nargs + 2), 0);
  argv[0] = cmd;
  for (lua_Integer i = 1; i <= nargs; i++) {
    /* Strings (process.lua made them so), which the table keeps. */
    if (lua_rawgeti(L, 2, i) != LUA_TSTRING)
      return lm_argerror(L, 2, "arguments must be strings");
    argv[i] = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  argv[nargs + 1] = NULL;
  int stdio_kind[3];
  static const char *const fields[] = {"stdin", "stdout", "stderr"};
  for (int i = 0; i < 3; i++) {
    lua_getfield(L, 3, fields[i]);
    stdio_kind[i] = luaL_checkoption(L, -1, "pipe", stdio_names);
    lua_pop(L, 1);
  }
  lua_getfield(L, 3, "cwd");
  const char *cwd = lua_tostring(L, -1);
  lua_getfield(L, 3, "kill_grace");
  double grace = lua_isnil(L, -1) ? DEFAULT_GRACE : lua_tonumber(L, -1);
  lua_getfield(L, 3, "on_cancel");
  int leave = lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "leave") == 0;
  lua_getfield(L, 3, "clear_env");
  int clear = lua_toboolean(L, -1);
  lua_getfield(L, 3, "env");
  int env_idx = lua_gettop(L);
  char **env = build_env(L, env_idx, clear);

  lm_process *ud = lua_newuserdatauv(L, sizeof *ud, 3);
  ud->p = NULL;
  luaL_setmetatable(L, LM_PROCESS_MT);
  int ud_idx = lua_gettop(L);
  proc *p = calloc(1, sizeof *p);
  if (p == NULL) {
    free(env);
    return lm_fs_error(L, UV_ENOMEM, "spawn", cmd);
  }
  p->ctx = ctx;
  p->grace = grace;
  p->leave = leave;
  p->h.data = p;
  loom_timer_init(&p->kill_timer, kill_timer_cb, p);
  loom_process_options_t o = {cmd, (char **)argv, env, cwd, {stdio_kind[0], stdio_kind[1], stdio_kind[2]}};
  loom_stream_t *pipes[3];
  ignore_sigpipe();
  int rc = loom_process_spawn(&ctx->loop, &p->h, &o, pipes, exit_cb);
  free(env);
  if (rc < 0) {
    p->orphan = 1;
    loom_process_close(&p->h, close_cb);
    /* A working directory that is not there fails the start as a missing
     * command would: say which of the two it may be. */
    if (cwd && rc == UV_ENOENT)
      return lm_fs_error(L, rc, lua_pushfstring(L, "spawn (in '%s')", cwd), cmd);
    return lm_fs_error(L, rc, "spawn", cmd);
  }
  ud->p = p;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &plist_key);
  plist *list = lua_touserdata(L, -1);
  lua_pop(L, 1);
  p->list = list;
  p->next = list->head;
  if (list->head)
    list->head->prev = p;
  list->head = p;
  for (int i = 0; i < 3; i++) {
    if (pipes[i]) {
      lm_stream_push(L, ctx, pipes[i]);
      lua_setiuservalue(L, ud_idx, SLOT_STDIN + i);
    }
  }
  lua_settop(L, ud_idx);
  return 1;
}

static const luaL_Reg process_methods[] = {
  {"wait", process_wait},
  {"kill", process_kill},
  {"_terminate", process_terminate},
  {NULL, NULL}
};

static const luaL_Reg process_meta[] = {
  {"__index", process_index},
  {"__gc", process_gc},
  {"__tostring", process_tostring},
  {NULL, NULL}
};

static const luaL_Reg xwait_meta[] = {{"__gc", xwait_gc}, {NULL, NULL}};

const luaL_Reg lm_process_funcs[] = {{"_process_spawn", l_spawn}, {NULL, NULL}};

/* The state is closing: every child still running is let go (its process
 * object is gone already), its handle closed with close_cb. */
static int plist_gc(lua_State *L) {
  plist *list = lua_touserdata(L, 1);
  proc *p = list->head;
  while (p) {
    proc *next = p->next;
    p->list = NULL;
    p->prev = p->next = NULL;
    loom_timer_stop(&p->ctx->loop, &p->kill_timer);
    loom_process_close(&p->h, close_cb);
    p = next;
  }
  list->head = NULL;
  return 0;
}

void lm_open_process(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &plist_key) == LUA_TNIL) {
    plist *list = lua_newuserdatauv(L, sizeof *list, 0);
    list->head = NULL;
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, plist_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &plist_key);
  }
  lua_pop(L, 1);
  lm_new_class(L, LM_PROCESS_MT, NULL, process_meta);
  luaL_getmetatable(L, LM_PROCESS_MT);
  lua_newtable(L);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, process_methods, 1);
  lua_setfield(L, -2, "methods");
  lua_pop(L, 1);
  lm_new_class(L, LM_PROCESS_WAIT_MT, NULL, xwait_meta);
}
