/* A pool of worker threads, each with its own loom loop, that runs jobs
 * submitted from any loop thread and hands each job's completion back to
 * the loop it came from.
 *
 * Threads and loops. Every worker thread creates its own loom_loop_t and
 * calls hooks->thread_start on it once (the binding makes a Lua state
 * there); hooks->thread_stop runs on the same thread at the end. Between
 * jobs a worker watches the queue for 50 us, then sleeps in its loop's
 * poll, woken through a uv_async_t of that loop: an idle pool costs no CPU,
 * and the loop's own timers and I/O (a setup that left a task behind) keep
 * running while it is idle.
 *
 * Which thread may call what:
 * - loom_workers_new, _ref, _unref, _close (without a callback): any thread.
 * - loom_workers_submit, _close with a callback: the loop thread of the loop
 *   passed in (it is told to stay alive with loom_loop_expect).
 * - loom_workers_cancel, loom_work_abandon, loom_work_replace: the job's
 *   origin loop thread.
 * - loom_work_cancelled, loom_work_state: any thread.
 * - run: a worker thread. done: the origin loop thread, exactly once per
 *   accepted submit (never after loom_work_abandon succeeded).
 * - hooks->interrupt: the cancelling or closing thread, with the pool's lock
 *   held: it must be quick and must not call back into the pool.
 * done may free the job and may submit, cancel or close; run may submit to
 * other pools (its origin loop is then its worker's loop) and drive its
 * worker's loop while waiting for them.
 *
 * Shutdown. loom_workers_close never waits for a thread: queued jobs end
 * with LOOM_ECLOSED, running ones are cancelled and interrupted, and each
 * thread leaves once its job returns. Threads are detached: one stuck in a
 * blocking call for good stays stuck, but when it returns its job still
 * completes (done on the origin loop, or drop after loom_work_abandon), it
 * runs thread_stop, closes its loop and lets go of the pool. The pool's
 * memory is freed when the last holder, thread and job have let go.
 *
 * An origin loop stays alive while it has jobs out, and loom_loop_close
 * waits for their done: a loop that must close while a job of its is stuck
 * abandons the job first (loom_work_abandon). */
#ifndef LOOM_WORKERS_H
#define LOOM_WORKERS_H

#include "loom.h"

typedef struct loom_workers loom_workers_t;
typedef struct loom_work loom_work_t;
typedef struct loom_worker loom_worker_t;

typedef struct loom_workers_hooks {
  /* On each new worker thread, on its fresh loop; returns thread_data. */
  void *(*thread_start)(loom_loop_t *loop, void *hooks_data);
  /* On the worker thread as it ends, before its loop closes. */
  void (*thread_stop)(void *thread_data);
  /* A running job was cancelled (see the threading rules above). The pool
   * also wakes the worker's loop, so a job waiting in its poll returns from
   * it; the effect of interrupt (a Lua hook) may outlive the job it was
   * meant for, so run undoes it first and then reads loom_work_cancelled. */
  void (*interrupt)(void *thread_data);
  /* On the worker thread after a job's outcome went back to its loop,
   * before the worker looks for the next: time no caller waits for. */
  void (*after_job)(void *thread_data);
  /* When the pool is freed, on whichever thread let go last. */
  void (*destroy)(void *hooks_data);
} loom_workers_hooks_t;

enum {
  LOOM_WORK_IDLE = 0, /* never submitted, or done already ran */
  LOOM_WORK_QUEUED,
  LOOM_WORK_RUNNING,
  LOOM_WORK_FINISHED  /* run returned or the job was dropped: done is posted */
};

/* Embedded by the caller, who fills run, done and data. The rest belongs to
 * the pool from submit until done. */
struct loom_work {
  void (*run)(loom_work_t *work, void *thread_data);
  /* 0: run returned (it may have been cancelled while it ran: ask
   * loom_work_cancelled). LOOM_ECANCELED: cancelled before it started.
   * LOOM_ECLOSED: the pool closed before it started. */
  void (*done)(loom_work_t *work, int status);
  void *data;

  loom_post_t post;
  loom_work_t *next, *prev;   /* in the queue, under the pool's lock */
  loom_workers_t *pool;
  loom_loop_t *loop;          /* origin: where done runs */
  loom_worker_t *worker;      /* while running, under the pool's lock */
  void (*drop)(loom_work_t *work);
  int status;
  _Atomic int state;
  _Atomic int cancelled;
};

/* How much higher than their creator's the workers' nice value is unless
 * told otherwise (Linux keeps nice values per thread). A pool as large as
 * the machine has cores leaves the loop no core of its own: at the same
 * priority its thread, woken for a timer or a socket, waits for a worker's
 * time slice (a 10 ms ticker was up to 15 ms late on one core); a lower
 * one lets the loop in at once and costs the workers nothing while the
 * loop sleeps. It does cost them against other processes' threads that
 * share their scheduling group, hence an option. */
#define LOOM_WORKERS_NICE 10

/* size 0: one thread per core (uv_available_parallelism). nice: added to
 * the creator's nice value in each worker thread (0..19; raising one needs
 * no privilege). hooks is copied; any hook may be NULL; hooks_data is the
 * pool's from here on. NULL when memory, a thread or a loop cannot be had:
 * threads already started end again, and destroy runs once the last of
 * them has. */
loom_workers_t *loom_workers_new(unsigned size, int nice, const loom_workers_hooks_t *hooks,
                                 void *hooks_data);
unsigned loom_workers_size(const loom_workers_t *pool);
/* Another holder (a second Lua state). Each holder unrefs once; the last
 * holder's unref closes the pool. */
void loom_workers_ref(loom_workers_t *pool);
void loom_workers_unref(loom_workers_t *pool);

/* Queues work, FIFO; done will run on loop. 0, or LOOM_ECLOSED (done will
 * not run). */
int loom_workers_submit(loom_workers_t *pool, loom_loop_t *loop,
                        loom_work_t *work);
/* Returns the state it found. QUEUED: taken off the queue, done comes with
 * LOOM_ECANCELED. RUNNING: the cancel flag is set and hooks->interrupt was
 * called; done comes once run returns, which for a job stuck in a blocking
 * call may be much later (the caller need not wait for it). FINISHED or
 * IDLE: nothing to cancel. */
int loom_work_cancel(loom_work_t *work);
/* For an origin loop that is going away while its job still runs: done
 * will never run; instead drop(work) runs on the worker thread once run
 * returns (drop may be NULL), and the loop stops waiting for the job.
 * Returns the state it found: only RUNNING abandons. QUEUED: cancel the job
 * instead; FINISHED: done is on its way and runs in the loop's next poll
 * (loom_loop_close runs it too). */
int loom_work_abandon(loom_work_t *work, void (*drop)(loom_work_t *work));
/* Replaced threads alive at once beyond the pool's size, at most. */
#define LOOM_WORKERS_SPARE 4
/* The caller gave up on a running job that does not stop (a blocking C
 * call): a new thread takes its worker's place, so the pool serves at its
 * size meanwhile, and the stuck thread ends once the job returns (its done
 * or drop runs as usual). At most LOOM_WORKERS_SPARE replaced threads are
 * alive at once; past that, or on a closed pool, nothing starts. Returns 1
 * if a thread started. The job's origin loop thread. */
int loom_work_replace(loom_work_t *work);
/* Threads not yet ended: the pool's size, give or take replaced ones still
 * stuck and threads of a closed pool still ending. Any thread. */
unsigned loom_workers_threads(loom_workers_t *pool);
int loom_work_cancelled(const loom_work_t *work);
int loom_work_state(const loom_work_t *work);

/* Rejects new jobs, ends queued ones with LOOM_ECLOSED (on their own
 * loops), cancels running ones, and lets every thread end. Never waits.
 * With closed, closed(pool, arg) runs on loop once every thread ran
 * thread_stop and closed its loop (loop stays alive until then; a thread
 * stuck for good keeps it waiting). Closing twice: LOOM_ECLOSED. */
int loom_workers_close(loom_workers_t *pool, loom_loop_t *loop,
                       void (*closed)(loom_workers_t *pool, void *arg),
                       void *arg);

#endif
