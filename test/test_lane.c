/* Lanes: a worker thread per lane running jobs in submission order, each
 * job's done back on the loop thread. */
#include <string.h>
#include "lane.h"
#include "runner.h"

#define MS 1000000u

typedef struct {
  loom_job_t job;
  int index;
  uv_thread_t worker;   /* the thread work ran on */
  int worked;
  int seen_queued;      /* loom_lane_queued as work started */
} rec_job;

typedef struct {
  uv_thread_t loop_thread;
  int ran[256];         /* indices in the order work ran (the lane's thread) */
  int nran;
  int done[256];        /* indices in the order done ran (the loop thread) */
  int ndone;
  uv_sem_t *gate;       /* when set, the first job waits on it */
} lane_log;

static void rec_work(loom_job_t *job) {
  rec_job *r = (rec_job *)job;
  lane_log *log = job->data;
  if (r->index == 0 && log->gate)
    uv_sem_wait(log->gate);
  r->seen_queued = loom_lane_queued(job->lane);
  r->worker = uv_thread_self();
  r->worked = 1;
  log->ran[log->nran++] = r->index;
}

static void rec_done(loom_job_t *job) {
  rec_job *r = (rec_job *)job;
  lane_log *log = job->data;
  uv_thread_t self = uv_thread_self();
  ASSERT(uv_thread_equal(&self, &log->loop_thread));
  ASSERT(r->worked); /* done comes after work, with what work left */
  log->done[log->ndone++] = r->index;
}

static void rec_init(rec_job *r, lane_log *log, int index) {
  memset(r, 0, sizeof *r);
  r->job.work = rec_work;
  r->job.done = rec_done;
  r->job.data = log;
  r->index = index;
}

static void log_init(lane_log *log) {
  memset(log, 0, sizeof *log);
  log->loop_thread = uv_thread_self();
}

static void run_until_done(loom_loop_t *loop, lane_log *log, int n) {
  uint64_t give_up = loom_now_ns() + 10000 * MS;
  while (log->ndone < n) {
    ASSERT(loom_now_ns() < give_up);
    loom_loop_poll(loop, 10);
  }
}

TEST_IMPL(lane_order) {
  loom_loop_t loop;
  loom_test_loop_init(&loop);
  loom_lane_t *lane = loom_lane_start(&loop);
  ASSERT(lane != NULL);
  static rec_job jobs[200];
  lane_log log;
  log_init(&log);
  for (int i = 0; i < 200; i++) {
    rec_init(&jobs[i], &log, i);
    loom_lane_submit(lane, &jobs[i].job);
    ASSERT_PTR_EQ(jobs[i].job.lane, lane);
  }
  run_until_done(&loop, &log, 200);
  ASSERT_EQ(log.nran, 200);
  for (int i = 0; i < 200; i++) {
    ASSERT_EQ(log.ran[i], i);
    ASSERT_EQ(log.done[i], i);
    /* Every job on the one thread of the lane, never the loop's. */
    ASSERT(uv_thread_equal(&jobs[i].worker, &jobs[0].worker));
    ASSERT(!uv_thread_equal(&jobs[i].worker, &log.loop_thread));
  }
  loom_lane_stop(lane);
  loom_test_loop_close(&loop);
}

/* A job sees how many were submitted behind it by the time it started. */
TEST_IMPL(lane_queued) {
  loom_loop_t loop;
  loom_test_loop_init(&loop);
  loom_lane_t *lane = loom_lane_start(&loop);
  ASSERT(lane != NULL);
  uv_sem_t gate;
  ASSERT_EQ(uv_sem_init(&gate, 0), 0);
  rec_job jobs[4];
  lane_log log;
  log_init(&log);
  log.gate = &gate;
  rec_init(&jobs[0], &log, 0);
  loom_lane_submit(lane, &jobs[0].job);
  /* Wait until the lane took job 0 (the queue is empty again). */
  uint64_t give_up = loom_now_ns() + 5000 * MS;
  while (loom_lane_queued(lane) != 0)
    ASSERT(loom_now_ns() < give_up);
  for (int i = 1; i < 4; i++) {
    rec_init(&jobs[i], &log, i);
    loom_lane_submit(lane, &jobs[i].job);
  }
  ASSERT_EQ(loom_lane_queued(lane), 3);
  uv_sem_post(&gate);
  run_until_done(&loop, &log, 4);
  ASSERT_EQ(jobs[0].seen_queued, 3);
  ASSERT_EQ(jobs[3].seen_queued, 0);
  ASSERT_EQ(loom_lane_queued(lane), 0);
  loom_lane_stop(lane);
  uv_sem_destroy(&gate);
  loom_test_loop_close(&loop);
}

/* Jobs submitted from done callbacks, one after another, then a stop as
 * soon as the last done has run: the thread ends, nothing is left. */
static loom_lane_t *chain_lane;
static rec_job chain_jobs[50];

static void chain_done(loom_job_t *job) {
  rec_done(job);
  rec_job *r = (rec_job *)job;
  if (r->index + 1 < 50) {
    rec_job *next = &chain_jobs[r->index + 1];
    rec_init(next, job->data, r->index + 1);
    next->job.done = chain_done;
    loom_lane_submit(chain_lane, &next->job);
  }
}

TEST_IMPL(lane_submit_from_done) {
  loom_loop_t loop;
  loom_test_loop_init(&loop);
  chain_lane = loom_lane_start(&loop);
  ASSERT(chain_lane != NULL);
  lane_log log;
  log_init(&log);
  rec_init(&chain_jobs[0], &log, 0);
  chain_jobs[0].job.done = chain_done;
  loom_lane_submit(chain_lane, &chain_jobs[0].job);
  run_until_done(&loop, &log, 50);
  for (int i = 0; i < 50; i++)
    ASSERT_EQ(log.done[i], i);
  loom_lane_stop(chain_lane);
  ASSERT(!loom_loop_alive(&loop));
  loom_test_loop_close(&loop);
}

/* A lane that never ran a job stops at once, asleep or spinning. */
TEST_IMPL(lane_stop_idle) {
  loom_loop_t loop;
  loom_test_loop_init(&loop);
  loom_lane_t *a = loom_lane_start(&loop);
  loom_lane_t *b = loom_lane_start(&loop);
  ASSERT(a != NULL && b != NULL);
  loom_lane_stop(a);
  uv_sleep(5); /* b has gone to sleep by now */
  loom_lane_stop(b);
  loom_test_loop_close(&loop);
}

/* Many lanes at once: each keeps its own order, every done comes back. */
TEST_IMPL(lane_many) {
  enum { LANES = 16, JOBS = 40 };
  loom_loop_t loop;
  loom_test_loop_init(&loop);
  static rec_job jobs[LANES][JOBS];
  static lane_log logs[LANES];
  loom_lane_t *lanes[LANES];
  for (int l = 0; l < LANES; l++) {
    lanes[l] = loom_lane_start(&loop);
    ASSERT(lanes[l] != NULL);
    log_init(&logs[l]);
  }
  for (int i = 0; i < JOBS; i++)
    for (int l = 0; l < LANES; l++) {
      rec_init(&jobs[l][i], &logs[l], i);
      loom_lane_submit(lanes[l], &jobs[l][i].job);
    }
  for (int l = 0; l < LANES; l++)
    run_until_done(&loop, &logs[l], JOBS);
  for (int l = 0; l < LANES; l++) {
    for (int i = 0; i < JOBS; i++) {
      ASSERT_EQ(logs[l].ran[i], i);
      ASSERT_EQ(logs[l].done[i], i);
      ASSERT(uv_thread_equal(&jobs[l][i].worker, &jobs[l][0].worker));
    }
    if (l > 0)
      ASSERT(!uv_thread_equal(&jobs[l][0].worker, &jobs[l - 1][0].worker));
  }
  for (int l = 0; l < LANES; l++)
    loom_lane_stop(lanes[l]);
  ASSERT(!loom_loop_alive(&loop));
  loom_test_loop_close(&loop);
}
