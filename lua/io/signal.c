/* Signal watchers on uv_signal_t (never a raw sigaction: uv_spawn reaps
 * children through libuv's own SIGCHLD handler). A watcher queues the
 * signals that arrive; w:next() waits for the next one. signal.lua pumps
 * them into a loom channel and stops when that channel ends: the channel
 * tells the watcher when it is closed or collected (loom_chan_watch_end),
 * so the watching ends at once, not at the next signal, and a channel its
 * user dropped stops it too. The watcher holds no reference to the
 * channel, and the pump only a weak one.
 *
 * The handles are malloc'd and freed by their close callbacks: a watcher
 * collected unclosed closes them, and the signals go back to their
 * default action. */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "lm_fsproc.h"

#define LM_SIGNAL_MT "loom.signal.watcher"
#define LM_SIGNAL_WAIT_MT "loom.signal.wait"
#define QUEUE_MAX 64

static const struct { const char *name; int num; } signals[] = {
  {"INT", SIGINT}, {"TERM", SIGTERM}, {"HUP", SIGHUP}, {"QUIT", SIGQUIT},
  {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"WINCH", SIGWINCH}, {"PIPE", SIGPIPE},
  {"ALRM", SIGALRM}, {"CHLD", SIGCHLD}, {"CONT", SIGCONT}, {"TSTP", SIGTSTP},
  {"TTIN", SIGTTIN}, {"TTOU", SIGTTOU}, {"URG", SIGURG}, {"XCPU", SIGXCPU},
  {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF}, {"SYS", SIGSYS},
  {"KILL", SIGKILL}, {"STOP", SIGSTOP}, {"ABRT", SIGABRT}, {"TRAP", SIGTRAP},
  {"BUS", SIGBUS}, {"FPE", SIGFPE}, {"ILL", SIGILL}, {"SEGV", SIGSEGV},
};
#define NSIGNALS (sizeof signals / sizeof signals[0])

#ifdef __linux__
/* "RTMIN", "RTMIN+3", "RTMAX-2", "RTMAX", as kill -l names them. */
static int rt_signum(const char *s) {
  if (strncmp(s, "RTMIN", 5) != 0 && strncmp(s, "RTMAX", 5) != 0)
    return -1;
  long n = s[4] == 'N' ? SIGRTMIN : SIGRTMAX;
  const char *r = s + 5;
  if (*r) {
    char *end;
    if ((*r != '+' && *r != '-') || r[1] < '0' || r[1] > '9')
      return -1;
    long k = strtol(r, &end, 10);
    if (*end || k < -64 || k > 64)
      return -1;
    n += k;
  }
  return n >= SIGRTMIN && n <= SIGRTMAX ? (int)n : -1;
}
#endif

int lm_signum(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TNUMBER) {
    lua_Integer n = lua_tointeger(L, idx);
    return n > 0 && n < 65 ? (int)n : -1;
  }
  const char *s = lua_tostring(L, idx);
  if (s == NULL)
    return -1;
  if (strncmp(s, "SIG", 3) == 0)
    s += 3;
  for (size_t i = 0; i < NSIGNALS; i++)
    if (strcmp(signals[i].name, s) == 0)
      return signals[i].num;
#ifdef __linux__
  return rt_signum(s);
#else
  return -1;
#endif
}

/* A real-time signal has no short name of its own: a child ended by
 * signal 40 was reported "?", and a watched one too. */
void lm_push_signame(lua_State *L, int signum) {
  for (size_t i = 0; i < NSIGNALS; i++) {
    if (signals[i].num == signum) {
      lua_pushstring(L, signals[i].name);
      return;
    }
  }
#ifdef __linux__
  if (signum == SIGRTMIN)
    lua_pushliteral(L, "RTMIN");
  else if (signum == SIGRTMAX)
    lua_pushliteral(L, "RTMAX");
  else if (signum > SIGRTMIN && signum < SIGRTMAX)
    lua_pushfstring(L, "RTMIN+%d", signum - SIGRTMIN);
  else
#endif
    lua_pushfstring(L, "%d", signum);
}

/* Signals that were ignored (SIG_IGN) when a watch of them began: libuv
 * gives a signal back as SIG_DFL once its last watcher stops, and SIGPIPE,
 * which loom ignores so that a write to a gone peer fails with EPIPE,
 * would then end the process at the next such write. Set, never cleared:
 * a signal ignored once is ignored again after each watch. */
static _Atomic uint64_t ignored_before;

static uint64_t sigbit(int signum) { return (uint64_t)1 << (signum - 1); }

static void note_ignored(int signum) {
  struct sigaction sa;
  if (sigaction(signum, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN)
    ignored_before |= sigbit(signum);
}

/* After a uv_signal_t of signum stopped (uv_close stops it at once). */
static void restore_ignored(int signum) {
  struct sigaction sa;
  if ((ignored_before & sigbit(signum)) && sigaction(signum, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
    signal(signum, SIG_IGN);
}

/* Known, neither KILL nor STOP, nor one of the signals between the
 * classic ones and SIGRTMIN that the C library keeps for its threads. */
static int catchable(int sig) {
#ifdef __linux__
  if (sig > 31 && sig < SIGRTMIN)
    return 0;
#endif
  /* A fault's signal comes back at once when its handler returns (the
   * faulting instruction runs again): watched, a crash would become a
   * busy loop instead of a core dump. */
  if (sig == SIGSEGV || sig == SIGBUS || sig == SIGFPE || sig == SIGILL)
    return 0;
  return sig > 0 && sig != SIGKILL && sig != SIGSTOP;
}

typedef struct swait swait;

typedef struct watcher {
  lm_ctx *ctx;
  loom_waiter_t chan_end; /* queued on the channel while it lasts */
  int chan_ended;         /* the channel was closed or collected */
  int queue[QUEUE_MAX];
  int head, len;
  int open_handles;   /* close callbacks still to come */
  int closing;
  int orphan;
  swait *waiter;
  int nsig;
  uv_signal_t sig[];  /* nsig of them */
} watcher;

typedef struct lm_watcher {
  watcher *w;
} lm_watcher;

struct swait {
  lm_request rq;
  watcher *w;
  int stopped;
};

static int ended(const watcher *w) {
  return w->closing || w->chan_ended;
}

static void wake(watcher *w) {
  if (w->waiter)
    lm_request_complete(&w->waiter->rq);
}

static void signal_cb(uv_signal_t *h, int signum) {
  watcher *w = h->data;
  /* A signal already queued is not queued twice when the queue is full:
   * a reader that falls behind sees each kind, not each arrival. */
  if (w->len == QUEUE_MAX)
    return;
  w->queue[(w->head + w->len) % QUEUE_MAX] = signum;
  w->len++;
  wake(w);
}

/* The channel closed, or is being collected (from its finalizer: only C
 * here, the pump runs later). */
static void chan_ended(loom_waiter_t *waiter, int status) {
  (void)status;
  watcher *w = waiter->data;
  w->chan_ended = 1;
  wake(w);
}

static void close_cb(uv_handle_t *h) {
  watcher *w = h->data;
  if (--w->open_handles == 0 && w->orphan)
    free(w);
}

static void close_watcher(watcher *w) {
  if (w->closing)
    return;
  w->closing = 1;
  loom_waiter_unlink(&w->chan_end);
  for (int i = 0; i < w->nsig; i++) {
    int signum = w->sig[i].signum;
    uv_close((uv_handle_t *)&w->sig[i], close_cb);
    if (signum > 0)
      restore_ignored(signum);
  }
  wake(w);
}

static int req_pending(lm_request *r) {
  swait *s = LM_CONTAINER_OF(r, swait, rq);
  return s->w && !s->stopped && s->w->len == 0 && !ended(s->w);
}

/* Waiting for a signal is given up at once. */
static void req_stop(lm_request *r) {
  LM_CONTAINER_OF(r, swait, rq)->stopped = 1;
}

static void req_drained(lua_State *L, lm_request *r) {
  (void)L;
  swait *s = LM_CONTAINER_OF(r, swait, rq);
  if (s->w && s->w->waiter == s)
    s->w->waiter = NULL;
}

static const lm_request_ops wait_ops = {req_pending, req_stop, req_drained, NULL, 0};

static int swait_gc(lua_State *L) {
  swait *s = lua_touserdata(L, 1);
  if (s->w && s->w->waiter == s)
    s->w->waiter = NULL;
  return 0;
}

static lm_watcher *check_watcher(lua_State *L) {
  return lm_check_self(L, LM_SIGNAL_MT, "loom.signal.watcher");
}

static int push_next(lua_State *L, watcher *w) {
  if (w->len == 0)
    return 0;
  int signum = w->queue[w->head];
  w->head = (w->head + 1) % QUEUE_MAX;
  w->len--;
  lm_push_signame(L, signum);
  return 1;
}

static int next_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  swait *s = LM_CONTAINER_OF((lm_request *)kctx, swait, rq);
  if (s->w && s->w->waiter == s)
    s->w->waiter = NULL;
  lm_request_check(L, &s->rq);
  return s->w ? push_next(L, s->w) : 0;
}

/* w:next(): the name of the next signal ("INT"), waiting for it; nil once
 * the watcher or its channel is closed. */
static int watcher_next(lua_State *L) {
  lm_watcher *ud = check_watcher(L);
  watcher *w = ud->w;
  lua_settop(L, 1);
  if (w->len)
    return push_next(L, w);
  if (ended(w))
    return 0;
  if (w->waiter)
    return lm_error(L, "busy", "another task waits on this signal watcher");
  swait *s = lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  luaL_setmetatable(L, LM_SIGNAL_WAIT_MT);
  s->rq.ctx = w->ctx;
  lm_request_prepare(L, &s->rq, &wait_ops, 0);
  s->w = w;
  w->waiter = s;
  return lm_request_wait(L, &s->rq, next_k);
}

/* w:close(): stops watching; the signals get their default action back
 * (once no other watcher has them). */
static int watcher_close(lua_State *L) {
  close_watcher(check_watcher(L)->w);
  return 0;
}

static int watcher_gc(lua_State *L) {
  lm_watcher *ud = lua_touserdata(L, 1);
  watcher *w = ud->w;
  if (w == NULL)
    return 0;
  ud->w = NULL;
  if (w->waiter)
    w->waiter->w = NULL;
  w->waiter = NULL;
  w->orphan = 1;
  if (w->closing && w->open_handles == 0)
    free(w);
  else
    close_watcher(w);
  return 0;
}

/* core._signal_watch(names, channel): a watcher of the signals named in
 * the array (checked by signal.lua), which ends when channel (optional)
 * is closed. */
static int l_watch(lua_State *L) {
  lm_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
  luaL_checktype(L, 1, LUA_TTABLE);
  lm_chan *ch = lua_isnoneornil(L, 2) ? NULL : lm_check_chan(L, 2);
  int n = (int)lua_rawlen(L, 1);
  if (n < 1 || n > 64)
    return lm_argerror(L, 1, "between 1 and 64 signal names expected");
  int nums[64];
  int given = n;
  n = 0;
  for (int i = 0; i < given; i++) {
    lua_rawgeti(L, 1, i + 1);
    int num = lm_signum(L, -1);
    lua_pop(L, 1);
    if (!catchable(num))
      return lm_argerror(L, 1, "unknown signal, or one that cannot be caught");
    /* Named twice ("USR1", "SIGUSR1"): one handle, or each arrival would
     * come twice. */
    int dup = 0;
    for (int j = 0; j < n; j++)
      dup |= nums[j] == num;
    if (!dup)
      nums[n++] = num;
  }
  lm_watcher *ud = lua_newuserdatauv(L, sizeof *ud, 0);
  ud->w = NULL;
  luaL_setmetatable(L, LM_SIGNAL_MT);
  watcher *w = calloc(1, sizeof *w + (size_t)n * sizeof(uv_signal_t));
  if (w == NULL)
    return lm_error(L, "memory", "cannot allocate a signal watcher");
  w->ctx = ctx;
  w->nsig = n;
  loom_waiter_init(&w->chan_end, chan_ended, w);
  if (ch && ch->ch.closed)
    w->chan_ended = 1;
  else if (ch)
    loom_chan_watch_end(&ch->ch, &w->chan_end);
  ud->w = w;
  for (int i = 0; i < n; i++) {
    uv_signal_init(&ctx->loop.uv, &w->sig[i]);
    w->sig[i].data = w;
    w->open_handles++;
    note_ignored(nums[i]);
    int rc = uv_signal_start(&w->sig[i], signal_cb, nums[i]);
    if (rc < 0) {
      close_watcher(w);
      return lm_fs_error(L, rc, "watch a signal", NULL);
    }
  }
  return 1;
}

/* core._signal_raise(name): sends this process the signal (for tests and
 * for programs that stop themselves). */
static int l_raise(lua_State *L) {
  int sig = lm_signum(L, 1);
  if (sig < 0)
    return lm_argerror(L, 1, "unknown signal");
  int rc = uv_kill(uv_os_getpid(), sig);
  if (rc < 0)
    return lm_fs_error(L, rc, "kill", NULL);
  return 0;
}

/* core._signal_catchable(name): whether name is a signal a program can
 * watch (known, and neither KILL nor STOP), so loom.signal can say which
 * of its arguments is wrong before anything is watched. */
static int l_catchable(lua_State *L) {
  lua_pushboolean(L, catchable(lm_signum(L, 1)));
  return 1;
}

static const luaL_Reg watcher_methods[] = {
  {"next", watcher_next},
  {"close", watcher_close},
  {NULL, NULL}
};

static const luaL_Reg watcher_meta[] = {
  {"__gc", watcher_gc},
  {"__close", watcher_close},
  {NULL, NULL}
};

static const luaL_Reg swait_meta[] = {{"__gc", swait_gc}, {NULL, NULL}};

const luaL_Reg lm_signal_funcs[] = {
  {"_signal_watch", l_watch},
  {"_signal_raise", l_raise},
  {"_signal_catchable", l_catchable},
  {NULL, NULL}
};

void lm_open_signal(lua_State *L) {
  lm_new_class(L, LM_SIGNAL_MT, watcher_methods, watcher_meta);
  lm_new_class(L, LM_SIGNAL_WAIT_MT, NULL, swait_meta);
}
