/* Internal header of loom's Lua binding: the per-state context, tasks,
 * waits and the error helpers every binding file shares. */
#ifndef LM_H
#define LM_H

#include <stddef.h>
#include <lua.h>
#include <lauxlib.h>
#include "loom.h"
#include "xchan.h"

#define LM_TASK_MT "loom.task"
#define LM_CHAN_MT "loom.channel"
#define LM_ERROR_MT "loom.error"
#define LM_WAIT_MT "loom.wait"
#define LM_SEM_MT "loom.semaphore"
#define LM_MUTEX_MT "loom.mutex"
#define LM_EVENT_MT "loom.event"
#define LM_WAITGROUP_MT "loom.waitgroup"

/* A wait ended because nothing could ever wake it. */
#define LM_EDEADLOCK (-100001)
/* A wait ended because a cancel scope around it expired. */
#define LM_EDEADLINE (-100002)

/* Resume at most this many tasks before polling for I/O, so a busy set of
 * tasks cannot starve sockets and timers. */
#define LM_RUN_BUDGET 512
/* ... and poll at least this often while tasks run: a task that computes
 * between loom.yield() calls takes far longer per resume than the budget
 * assumes (512 resumes of 0.1 ms are 50 ms without a timer firing). */
#define LM_RUN_SLICE_NS 1000000
/* The clock is read about this often within a slice: every resume for
 * tasks that compute, every LM_CHECK_MAX resumes for cheap hand-offs. */
#define LM_CHECK_NS 50000
#define LM_CHECK_MAX 64

typedef struct lm_ctx lm_ctx;
typedef struct lm_task lm_task;
typedef struct lm_wait lm_wait;
typedef struct lm_chan lm_chan;
typedef struct lm_case lm_case;
typedef struct lm_scope lm_scope;

/* One select case: its waiter is queued on the case's channel, a
 * loom.channel (chan) or a thread channel (xch, whose waiter is xwaiter,
 * and whose send value is encoded in msg until the channel takes it; a
 * receive's message waits there to be decoded). */
struct lm_case {
  loom_waiter_t waiter;
  lm_chan *chan;
  int is_send;
  loom_xchan_t *xch;
  loom_xwaiter_t xwaiter;
  char *msg;
  size_t len;
};

/* What a blocked piece of code waits on: zero or one timer, one waiter or a
 * set of select cases. Inside a task it is embedded in the task; outside any
 * task it is a userdata on the waiting coroutine's stack. */
struct lm_wait {
  lm_ctx *ctx;
  lm_task *task; /* NULL outside any task */
  int status;    /* outcome once done: 0, LOOM_E* or LM_EDEADLOCK */
  int done;
  int chosen;    /* select: index of the case that completed */
  int shielded;  /* cancels and expired scopes do not end it */
  loom_timer_t timer;
  loom_waiter_t one;
  lm_case *cases;
  int ncases;
};

enum lm_task_state {
  LM_NEW,       /* spawned, never resumed */
  LM_READY,     /* in the run queue */
  LM_RUNNING,   /* being resumed right now */
  LM_WAITING,   /* parked on its wait */
  LM_DONE,
  LM_FAILED,
  LM_CANCELLED
};

/* loom.waitgroup(); also what counts a group's children (wg:_spawn). */
typedef struct lm_waitgroup {
  loom_waitgroup_t wg;
  lm_ctx *ctx;
  lua_Integer failed; /* tasks of wg:_spawn that did not return */
} lm_waitgroup;

struct lm_task {
  lm_ctx *ctx;
  lua_State *co;
  lm_task *next_ready;
  lm_task *live_prev, *live_next;
  int ref;         /* registry ref that pins an unfinished task */
  int nargs;       /* arguments waiting on co's stack before the first run */
  int nresults;    /* results left on co's stack once done */
  unsigned char state;
  unsigned char started;
  /* task:cancel() was called: from then on every wait raises cancelled,
   * except where the cancel is held off (lm_cancel_held_off). */
  unsigned char cancelled;
  unsigned char unwinding; /* an error is unwinding the whole task */
  unsigned char observed; /* its failure was re-raised or reported */
  unsigned char daemon;   /* loom.run does not wait for it */
  lm_wait wait;
  loom_waitq_t joiners;
  lm_scope *scopes; /* innermost cancel scope first */
  lm_waitgroup *counted_in; /* wg:_spawn's: told when the task ends */
};

/* Task userdata slots. */
#define LM_TASK_CO 1
#define LM_TASK_ERROR 2
#define LM_TASK_REASON 3
#define LM_TASK_TRACEBACK 4
#define LM_TASK_COUNTED_IN 5 /* the waitgroup userdata, kept alive by the task */
#define LM_TASK_SLOTS 5

struct lm_ctx {
  loom_loop_t loop;
  lm_task *ready_head, *ready_tail;
  lm_task *current;   /* the task being resumed, NULL outside tasks */
  lm_task *live_head; /* every unfinished task */
  lm_scope *outside_scopes; /* cancel scopes of code outside tasks */
  lm_wait *driving_wait;    /* the outside wait lm_drive is serving */
  size_t live;
  size_t daemons;     /* unfinished tasks loom.run does not wait for */
  uint64_t rng;
  int stepping;       /* depth of nested lm_step calls */
  int running;        /* inside loom.run (which reports failures itself) */
  int closed;
  lua_Integer unjoined; /* tasks failed since the last lm_report_unjoined */
  /* Time slicing of the run queue (task.c, lm_run_ready). */
  uint64_t polled_ns;  /* when the loop was last polled */
  uint64_t checked_ns; /* when the clock was last read */
  int check_every;     /* resumes between two readings */
  int until_check;     /* resumes left before the next reading */
  int slice_spent;     /* the next run waits for a poll */
  /* Told which coroutine runs a task now (NULL: none), for a worker
   * thread's state, whose job a cancel must stop wherever it runs. */
  void (*on_resume)(lm_ctx *ctx, lua_State *co);
  void *resume_data;
};

/* context.c */
lm_ctx *lm_ctx_get(lua_State *L);
int lm_step(lm_ctx *ctx, lua_State *L, int64_t timeout_ms);
int lm_work_remains(lm_ctx *ctx);
/* Runs the loop as loom.run does until main has finished; main's outcome
 * stays on main (it counts as observed). */
void lm_run_task(lm_ctx *ctx, lua_State *L, lm_task *main);
uint32_t lm_random(lm_ctx *ctx);
void lm_open_context(lua_State *L);
void lm_push_ctx(lua_State *L);

/* task.c */
void lm_task_ready(lm_task *t);
void lm_run_ready(lm_ctx *ctx, lua_State *L, int budget);
void lm_slice_start(lm_ctx *ctx);
void lm_report_unjoined(lua_State *L, lm_ctx *ctx);
void lm_cancel_all(lm_ctx *ctx, lua_State *L, int daemons_too);
lm_task *lm_spawn(lua_State *L, lm_ctx *ctx, int first, int n);
void lm_push_task_results(lua_State *L, lm_task *t);
/* Raises the error on top of L, which was first raised elsewhere (a worker
 * thread) with the traceback at tb_idx: a task failing with it keeps that
 * traceback ahead of its own, as a join keeps the joined task's. */
int lm_raise_with_traceback(lua_State *L, int tb_idx);
/* Pushes t's cancelled error {kind="cancelled", reason=...} with t's
 * userdata below it. */
void lm_push_cancelled(lua_State *L, lm_task *t, const char *fallback);
int lm_task_finished(const lm_task *t);
void lm_open_task(lua_State *L);
extern const luaL_Reg lm_task_funcs[];

/* wait.c */
lm_wait *lm_wait_prepare(lua_State *L, lm_ctx *ctx);
lm_wait *lm_wait_prepare_shielded(lua_State *L, lm_ctx *ctx);
/* Whether lm_wait_prepare would raise now (closed, cancelled, a timeout
 * expired): for a caller that must undo something first. */
int lm_wait_would_raise(lm_ctx *ctx);
int lm_wait_begin(lua_State *L, lm_wait *w, lua_KFunction k);
/* lm_wait_begin with the continuation's context given (it is w above). */
int lm_wait_begin_ctx(lua_State *L, lm_wait *w, lua_KFunction k, lua_KContext kctx);
void lm_wait_arm(lm_wait *w, double seconds);
void lm_wait_arm_timer(lm_ctx *ctx, loom_timer_t *timer, double seconds);
void lm_wait_finish(lm_wait *w, int status, int chosen);
void lm_wait_abort(lm_wait *w);
int lm_wait_check(lua_State *L, lm_wait *w);
int lm_wait_timed_out(lua_State *L, int timeout_idx, const char *what);
void lm_drive(lm_ctx *ctx, lua_State *L, lm_wait *w);
void lm_one_wake(loom_waiter_t *waiter, int status);
void lm_open_wait(lua_State *L);
#define LM_WAIT_OF(kctx) ((lm_wait *)(kctx))

/* request.c: work that completes later, waited for like any loom call.
 * prepare (raises as a wait does), start the work (on failure: abort),
 * then wait; the work's completion calls lm_request_complete. An
 * interrupted wait stops the work and waits until pending says it is
 * over, then raises the interruption. */
typedef struct lm_request lm_request;
typedef struct lm_request_ops {
  int (*pending)(lm_request *r);  /* the work is still out */
  void (*stop)(lm_request *r);    /* asks it to end; it may still complete later */
  /* Optional: tidies up after an interrupted request drained, before the
   * interruption is raised. */
  void (*drained)(lua_State *L, lm_request *r);
  /* Optional: work that may not stop at all (a thread stuck in a blocking
   * C call). The drain then waits at most grace seconds; if the work is
   * still out, abandon lets go of it (it completes on its own later, with
   * nobody waiting) and the interruption is raised on time. */
  void (*abandon)(lm_request *r);
  double grace;
} lm_request_ops;
struct lm_request {
  lm_ctx *ctx;
  lm_wait *wait;        /* what the completion wakes; NULL when nobody waits */
  const lm_request_ops *ops;
  lua_KFunction done;   /* runs once the work completed, with kctx = this */
  lm_wait *ended;       /* the wait that ended, while done runs */
  int interrupted;      /* the status that interrupted the wait */
};
void lm_request_prepare(lua_State *L, lm_request *r, const lm_request_ops *ops, int shielded);
void lm_request_abort(lm_request *r);
int lm_request_wait(lua_State *L, lm_request *r, lua_KFunction done);
int lm_request_complete(lm_request *r);
/* In done: raises the cancel or timeout that ended the wait while the work
 * was no longer out (completed, or given up by someone else); 0 if none. */
int lm_request_check(lua_State *L, lm_request *r);
/* Keeps the value at idx alive, in user value slot of the userdata at
 * owner, while work started by one call outlives it (a stream, a COPY). */
void lm_request_anchor(lua_State *L, int owner, int slot, int idx);
#define LM_CONTAINER_OF(p, type, field) ((type *)(void *)((char *)(p) - offsetof(type, field)))

/* chan.c / select.c */
struct lm_chan {
  loom_chan_t ch;
  lm_ctx *ctx;
};
lm_chan *lm_check_chan(lua_State *L, int arg);
int64_t lm_chan_store(lua_State *L, lm_chan *c, int chan_idx, int value_idx);
void lm_chan_fetch(lua_State *L, int chan_idx, int64_t item);
void lm_chan_forget(lua_State *L, int chan_idx, int64_t item);
void lm_open_chan(lua_State *L);
extern const luaL_Reg lm_chan_funcs[];
extern const luaL_Reg lm_select_funcs[];
void lm_open_select(lua_State *L);

/* error.c: every error loom raises is a table {kind=, message=}. */
void lm_push_error(lua_State *L, const char *kind, const char *fmt, ...);
int lm_error(lua_State *L, const char *kind, const char *fmt, ...);
int lm_argerror(lua_State *L, int arg, const char *extramsg);
int lm_typeerror(lua_State *L, int arg, const char *tname);
lua_Number lm_checknumber(lua_State *L, int arg);
lua_Integer lm_checkinteger(lua_State *L, int arg);
double lm_checkseconds(lua_State *L, int arg);
double lm_optseconds(lua_State *L, int arg);
void lm_checkcallable(lua_State *L, int arg);
void *lm_checkudata(lua_State *L, int arg, const char *mt, const char *tname);
int lm_is_error_kind(lua_State *L, int idx, const char *kind);
void lm_open_error(lua_State *L);
extern const luaL_Reg lm_error_funcs[];

/* sem.c, mutex.c, event.c, waitgroup.c */
void lm_open_sem(lua_State *L);
void lm_open_mutex(lua_State *L);
void lm_open_event(lua_State *L);
void lm_open_waitgroup(lua_State *L);
extern const luaL_Reg lm_sem_funcs[], lm_mutex_funcs[], lm_event_funcs[],
    lm_waitgroup_funcs[];

/* class.c: a class's metatable; methods and metamethods get it as upvalue
 * 1 (either list may be NULL). lm_class_add gives a class more methods
 * (one whose methods live in several files). Methods check their self
 * with lm_check_self. */
void lm_new_class(lua_State *L, const char *name, const luaL_Reg *methods,
                  const luaL_Reg *metamethods);
void lm_class_add(lua_State *L, const char *name, const luaL_Reg *methods);
void *lm_check_self(lua_State *L, const char *mt, const char *tname);

/* db.c */
void lm_open_db(lua_State *L);
extern const luaL_Reg lm_db_funcs[], lm_copy_funcs[], lm_listen_funcs[];
/* A chunk of COPY text from core._copy_format (or a string) at idx: its
 * bytes, or NULL if idx is neither; _free releases a chunk's bytes early. */
const char *lm_copy_chunk(lua_State *L, int idx, size_t *len);
void lm_copy_chunk_free(lua_State *L, int idx);
void lm_open_listen(lua_State *L);
/* What a one-call statement returns (db:_run1's mode), by name: {rows=,
 * value=, exec=}. */
void lm_db_push_modes(lua_State *L);

/* http.c: loom.http's transfers, on the engine loom.curl gives */
void lm_open_http(lua_State *L);
extern const luaL_Reg lm_http_funcs[];

/* scope.c */
lm_scope *lm_scope_expired(lm_scope *innermost);
int lm_cancel_held_off(const lm_task *t);
int lm_scope_raise(lua_State *L, lm_scope *s);
void lm_scope_release_all(lm_task *t);
void lm_open_scope(lua_State *L);
extern const luaL_Reg lm_scope_funcs[];

/* thread/pool.c, thread/channel.c: loom.thread's pools and channels. */
void lm_open_thread(lua_State *L);
void lm_open_xchan(lua_State *L);
extern const luaL_Reg lm_thread_funcs[], lm_xchan_funcs[];
/* The thread channel at idx, or NULL if it is none. */
loom_xchan_t *lm_xchan_test(lua_State *L, int idx);
/* Pushes a new handle on ch (taking a reference of its own). */
void lm_xchan_push(lua_State *L, loom_xchan_t *ch);
/* The hub of this state's loop (made on first need): to be had before
 * anything that registers a waiter through it is made (see channel.c). */
loom_xhub_t *lm_xhub_get(lua_State *L, lm_ctx *ctx);

/* coro.c: coroutine.resume/wrap that pass loom waits through. */
void lm_open_coro(lua_State *L);

#endif
