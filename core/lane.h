/* A lane is one worker thread that runs jobs in order, for libraries whose
 * calls block (SQLite). Jobs are submitted from the loop thread; each job's
 * `work` runs on the lane's thread and its `done` back on the loop thread.
 *
 * A lane waits for the next job spinning for a moment before it sleeps, and
 * the loop spins for an expected answer (loom_loop_expect): a short
 * statement then crosses threads twice without a system call. */
#ifndef LOOM_LANE_H
#define LOOM_LANE_H

#include "loom.h"

typedef struct loom_lane loom_lane_t;
typedef struct loom_job loom_job_t;

struct loom_job {
  loom_post_t post;                /* how the job comes back to the loop */
  _Atomic(loom_job_t *) next;      /* in the lane's queue */
  void (*work)(loom_job_t *job);   /* on the lane's thread */
  void (*done)(loom_job_t *job);   /* on the loop thread, after work */
  void *data;
  loom_lane_t *lane;               /* set by loom_lane_submit */
};

/* NULL when the thread cannot be started. */
loom_lane_t *loom_lane_start(loom_loop_t *loop);
/* Loop thread only. Jobs run one at a time, in submission order. */
void loom_lane_submit(loom_lane_t *lane, loom_job_t *job);
/* Loop thread only; call once no job is pending (every done has run). The
 * thread ends and the lane is freed. */
void loom_lane_stop(loom_lane_t *lane);
/* Any thread: jobs waiting in the queue, not counting the running one. A
 * job may read it to know what was already submitted when it started. */
int loom_lane_queued(loom_lane_t *lane);

#endif
