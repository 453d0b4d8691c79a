/* Worker pool: where run and done happen, FIFO order, cancel of queued and
 * running jobs, closing with queued, running and stuck jobs while the
 * origin loop keeps running, jobs from several loops, many jobs, and an
 * idle pool that costs no CPU. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include "runner.h"
#include "workers.h"

#define MS 1000000u

/* Fewer jobs where every access is instrumented. */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define MANY_JOBS 20000
#else
#define MANY_JOBS 100000
#endif

static pthread_t origin;

/* Polls until *flag reaches want, failing after timeout_ms. */
static void poll_until(loom_loop_t *loop, _Atomic int *flag, int want,
                       int timeout_ms) {
  uint64_t deadline = loom_now_ns() + (uint64_t)timeout_ms * MS;
  while (atomic_load(flag) < want) {
    ASSERT(loom_now_ns() < deadline);
    loom_loop_poll(loop, 5);
  }
}

static void wait_flag(_Atomic int *flag, int want, int timeout_ms) {
  uint64_t deadline = loom_now_ns() + (uint64_t)timeout_ms * MS;
  while (atomic_load(flag) < want) {
    ASSERT(loom_now_ns() < deadline);
    usleep(1000);
  }
}

/* ---- hooks that count ------------------------------------------------- */

typedef struct {
  _Atomic int starts, stops, interrupts, destroys;
  pthread_t threads[8];
} hook_log_t;

typedef struct {
  hook_log_t *log;
  loom_loop_t *loop;
  pthread_t self;
  int id;
} thread_ctx_t;

static void *hook_start(loom_loop_t *loop, void *data) {
  hook_log_t *log = data;
  thread_ctx_t *t = calloc(1, sizeof *t);
  ASSERT(t != NULL);
  ASSERT(loop != NULL);
  ASSERT(!pthread_equal(pthread_self(), origin));
  t->log = log;
  t->loop = loop;
  t->self = pthread_self();
  t->id = atomic_fetch_add(&log->starts, 1);
  if (t->id < 8)
    log->threads[t->id] = t->self;
  return t;
}

static void hook_stop(void *thread_data) {
  thread_ctx_t *t = thread_data;
  ASSERT(pthread_equal(pthread_self(), t->self));
  atomic_fetch_add(&t->log->stops, 1);
  free(t);
}

static void hook_interrupt(void *thread_data) {
  thread_ctx_t *t = thread_data;
  atomic_fetch_add(&t->log->interrupts, 1);
}

static void hook_destroy(void *data) {
  hook_log_t *log = data;
  atomic_fetch_add(&log->destroys, 1);
}

static const loom_workers_hooks_t hooks = {.thread_start = hook_start,
                                           .thread_stop = hook_stop,
                                           .interrupt = hook_interrupt,
                                           .destroy = hook_destroy};

static void on_closed(loom_workers_t *pool, void *arg) {
  ASSERT(pthread_equal(pthread_self(), origin));
  atomic_fetch_add((_Atomic int *)arg, 1);
}

/* Closes the pool, waits until every thread ended, lets go of it. */
static void close_and_wait(loom_loop_t *loop, loom_workers_t *pool) {
  _Atomic int closed = 0;
  ASSERT_EQ(loom_workers_close(pool, loop, on_closed, (void *)&closed), 0);
  ASSERT_EQ(loom_workers_close(pool, NULL, NULL, NULL), LOOM_ECLOSED);
  loom_workers_unref(pool);
  poll_until(loop, &closed, 1, 10000);
}

/* ---- a job that records what happened to it --------------------------- */

typedef struct {
  loom_work_t work;
  pthread_t ran_on;
  thread_ctx_t *ctx;
  int order;           /* when run started, among all jobs */
  int ran;
  int done_calls;
  int done_status;
  int saw_cancel;
  _Atomic int *release; /* run waits until it is set (a blocking call) */
  int until_cancelled;  /* run loops until the pool cancels it */
  _Atomic int *done_count;
  _Atomic int *started;
} job_t;

static _Atomic int run_seq;

static void job_run(loom_work_t *work, void *thread_data) {
  job_t *j = work->data;
  j->ctx = thread_data;
  j->ran_on = pthread_self();
  j->order = atomic_fetch_add(&run_seq, 1);
  j->ran++;
  if (j->started)
    atomic_fetch_add(j->started, 1);
  uint64_t deadline = loom_now_ns() + 10000 * (uint64_t)MS;
  if (j->release)
    while (!atomic_load(j->release) && loom_now_ns() < deadline)
      usleep(1000);
  if (j->until_cancelled)
    while (!loom_work_cancelled(work) && loom_now_ns() < deadline)
      usleep(200);
  j->saw_cancel = loom_work_cancelled(work);
}

static void job_done(loom_work_t *work, int status) {
  job_t *j = work->data;
  ASSERT(pthread_equal(pthread_self(), origin));
  ASSERT_EQ(loom_work_state(work), LOOM_WORK_IDLE);
  j->done_calls++;
  j->done_status = status;
  if (j->done_count)
    atomic_fetch_add(j->done_count, 1);
}

static void job_init(job_t *j, _Atomic int *done_count) {
  memset(j, 0, sizeof *j);
  j->work.run = job_run;
  j->work.done = job_done;
  j->work.data = j;
  j->done_count = done_count;
}

static void sleepy_run(loom_work_t *work, void *thread_data) {
  job_run(work, thread_data);
  usleep(20000);
}

TEST_IMPL(workers_threads) {
  loom_loop_t loop;
  hook_log_t log = {0};
  _Atomic int done = 0;
  job_t jobs[8];
  origin = pthread_self();
  loom_test_loop_init(&loop);
  loom_workers_t *pool = loom_workers_new(2, LOOM_WORKERS_NICE, &hooks, &log);
  ASSERT(pool != NULL);
  ASSERT_EQ(loom_workers_size(pool), 2);
  for (int i = 0; i < 8; i++) {
    job_init(&jobs[i], &done);
    jobs[i].work.run = sleepy_run;
    ASSERT_EQ(loom_workers_submit(pool, &loop, &jobs[i].work), 0);
  }
  /* The loop waits for the jobs: they keep it alive. */
  ASSERT(loom_loop_alive(&loop));
  poll_until(&loop, &done, 8, 10000);
  int distinct = 0;
  for (int i = 0; i < 8; i++) {
    ASSERT_EQ(jobs[i].ran, 1);
    ASSERT_EQ(jobs[i].done_calls, 1);
    ASSERT_EQ(jobs[i].done_status, 0);
    ASSERT(!pthread_equal(jobs[i].ran_on, origin));
    /* run gets the data its thread's thread_start returned. */
    ASSERT(pthread_equal(jobs[i].ctx->self, jobs[i].ran_on));
    int seen = 0;
    for (int k = 0; k < i; k++)
      seen |= pthread_equal(jobs[k].ran_on, jobs[i].ran_on);
    distinct += !seen;
  }
  ASSERT_EQ(distinct, 2);
  ASSERT(!loom_loop_alive(&loop));
  close_and_wait(&loop, pool);
  ASSERT_EQ(atomic_load(&log.starts), 2);
  ASSERT_EQ(atomic_load(&log.stops), 2);
  ASSERT_EQ(atomic_load(&log.destroys), 1);
  loom_test_loop_close(&loop);
}

static int done_order[64], done_n;

static void fifo_done(loom_work_t *work, int status) {
  job_done(work, status);
  done_order[done_n++] = ((job_t *)work->data)->order;
}

TEST_IMPL(workers_fifo) {
  loom_loop_t loop;
  _Atomic int done = 0;
  job_t jobs[64];
  origin = pthread_self();
  loom_test_loop_init(&loop);
  loom_workers_t *pool = loom_workers_new(1, LOOM_WORKERS_NICE, NULL, NULL);
  ASSERT(pool != NULL);
  for (int i = 0; i < 64; i++) {
    job_init(&jobs[i], &done);
    jobs[i].work.done = fifo_done;
    ASSERT_EQ(loom_workers_submit(pool, &loop, &jobs[i].work), 0);
  }
  poll_until(&loop, &done, 64, 10000);
  for (int i = 0; i < 64; i++) {
    ASSERT_EQ(jobs[i].order, i);
    ASSERT_EQ(done_order[i], i);
  }
  close_and_wait(&loop, pool);
  loom_test_loop_close(&loop);
}

TEST_IMPL(workers_cancel_queued) {
  loom_loop_t loop;
  hook_log_t log = {0};
  _Atomic int done = 0, release = 0, started = 0;
  job_t blocker, victim, after;
  origin = pthread_self();
  loom_test_loop_init(&loop);
  loom_workers_t *pool = loom_workers_new(1, LOOM_WORKERS_NICE, &hooks, &log);
  ASSERT(pool != NULL);
  job_init(&blocker, &done);
  blocker.release = &release;
  blocker.started = &started;
  job_init(&victim, &done);
  job_init(&after, &done);
  ASSERT_EQ(loom_workers_submit(pool, &loop, &blocker.work), 0);
  ASSERT_EQ(loom_workers_submit(pool, &loop, &victim.work), 0);
  ASSERT_EQ(loom_workers_submit(pool, &loop, &after.work), 0);
  wait_flag(&started, 1, 10000);
  ASSERT_EQ(loom_work_state(&victim.work), LOOM_WORK_QUEUED);
  ASSERT_EQ(loom_work_cancel(&victim.work), LOOM_WORK_QUEUED);
  /* done comes through the loop, not from inside cancel. */
  ASSERT_EQ(victim.done_calls, 0);
  ASSERT_EQ(loom_work_cancel(&victim.work), LOOM_WORK_FINISHED);
  poll_until(&loop, &done, 1, 10000);
  ASSERT_EQ(victim.done_calls, 1);
  ASSERT_EQ(victim.done_status, LOOM_ECANCELED);
  ASSERT_EQ(loom_work_cancel(&victim.work), LOOM_WORK_IDLE);
  atomic_store(&release, 1);
  poll_until(&loop, &done, 3, 10000);
  ASSERT_EQ(victim.ran, 0);
  ASSERT_EQ(blocker.done_status, 0);
  ASSERT_EQ(after.done_status, 0);
  ASSERT_EQ(after.ran, 1);
  ASSERT_EQ(atomic_load(&log.interrupts), 0);
  close_and_wait(&loop, pool);
  ASSERT_EQ(victim.done_calls, 1);
  loom_test_loop_close(&loop);
}

TEST_IMPL(workers_cancel_running) {
  loom_loop_t loop;
  hook_log_t log = {0};
  _Atomic int done = 0, started = 0;
  job_t spinner, next;
  origin = pthread_self();
  loom_test_loop_init(&loop);
  loom_workers_t *pool = loom_workers_new(1, LOOM_WORKERS_NICE, &hooks, &log);
  ASSERT(pool != NULL);
  job_init(&spinner, &done);
  spinner.until_cancelled = 1;
  spinner.started = &started;
  job_init(&next, &done);
  ASSERT_EQ(loom_workers_submit(pool, &loop, &spinner.work), 0);
  wait_flag(&started, 1, 10000);
  ASSERT_EQ(loom_work_state(&spinner.work), LOOM_WORK_RUNNING);
  ASSERT(!loom_work_cancelled(&spinner.work));
  uint64_t t0 = loom_now_ns();
  ASSERT_EQ(loom_work_cancel(&spinner.work), LOOM_WORK_RUNNING);
  ASSERT(loom_work_cancelled(&spinner.work));
  ASSERT_EQ(atomic_load(&log.interrupts), 1);
  poll_until(&loop, &done, 1, 10000);
  ASSERT(loom_now_ns() - t0 < 5000 * (uint64_t)MS);
  ASSERT_EQ(spinner.done_calls, 1);
  ASSERT_EQ(spinner.done_status, 0);
  ASSERT(spinner.saw_cancel);
  /* The worker is reused, and a fresh job starts uncancelled. */
  ASSERT_EQ(loom_workers_submit(pool, &loop, &next.work), 0);
  poll_until(&loop, &done, 2, 10000);
  ASSERT_EQ(next.ran, 1);
  ASSERT(!next.saw_cancel);
  ASSERT_EQ(spinner.done_calls, 1);
  ASSERT_EQ(atomic_load(&log.interrupts), 1);
  close_and_wait(&loop, pool);
  loom_test_loop_close(&loop);
}

static _Atomic int ticks;

static void tick(loom_timer_t *t) {
  atomic_fetch_add(&ticks, 1);
  loom_timer_start(t->data, t, 2 * MS);
}

/* One worker stuck in a "blocking call", one cancellable, two queued: the
 * close returns at once, the queued jobs end with LOOM_ECLOSED, and the
 * loop keeps its timer running until the stuck worker finally returns. */
TEST_IMPL(workers_close_with_jobs) {
  loom_loop_t loop;
  loom_timer_t ticker;
  hook_log_t log = {0};
  _Atomic int done = 0, release = 0, started = 0, closed = 0;
  job_t stuck, busy, queued[2];
  origin = pthread_self();
  loom_test_loop_init(&loop);
  loom_workers_t *pool = loom_workers_new(2, LOOM_WORKERS_NICE, &hooks, &log);
  ASSERT(pool != NULL);
  job_init(&stuck, &done);
  stuck.release = &release;
  stuck.started = &started;
  job_init(&busy, &done);
  busy.until_cancelled = 1;
  busy.started = &started;
  ASSERT_EQ(loom_workers_submit(pool, &loop, &stuck.work), 0);
  ASSERT_EQ(loom_workers_submit(pool, &loop, &busy.work), 0);
  for (int i = 0; i < 2; i++) {
    job_init(&queued[i], &done);
    ASSERT_EQ(loom_workers_submit(pool, &loop, &queued[i].work), 0);
  }
  wait_flag(&started, 2, 10000);
  loom_timer_init(&ticker, tick, &loop);
  ASSERT_EQ(loom_timer_start(&loop, &ticker, 2 * MS), 0);

  uint64_t t0 = loom_now_ns();
  ASSERT_EQ(loom_workers_close(pool, &loop, on_closed, (void *)&closed), 0);
  ASSERT(loom_now_ns() - t0 < 100 * (uint64_t)MS);
  job_t late;
  job_init(&late, &done);
  ASSERT_EQ(loom_workers_submit(pool, &loop, &late.work), LOOM_ECLOSED);
  loom_workers_unref(pool);
  ASSERT_EQ(atomic_load(&log.interrupts), 2);

  poll_until(&loop, &done, 3, 10000);
  for (int i = 0; i < 2; i++) {
    ASSERT_EQ(queued[i].done_status, LOOM_ECLOSED);
    ASSERT_EQ(queued[i].ran, 0);
  }
  ASSERT_EQ(busy.done_status, 0);
  ASSERT(busy.saw_cancel);
  /* The stuck job is still running, and says so; the loop is not. */
  ASSERT_EQ(loom_work_state(&stuck.work), LOOM_WORK_RUNNING);
  ASSERT(loom_work_cancelled(&stuck.work));
  int before = atomic_load(&ticks);
  poll_until(&loop, &ticks, before + 20, 10000);
  ASSERT_EQ(stuck.done_calls, 0);
  ASSERT_EQ(atomic_load(&closed), 0);
  ASSERT(atomic_load(&log.stops) <= 1);

  atomic_store(&release, 1);
  poll_until(&loop, &closed, 1, 10000);
  ASSERT_EQ(stuck.done_calls, 1);
  ASSERT_EQ(stuck.done_status, 0);
  ASSERT_EQ(busy.done_calls, 1);
  ASSERT_EQ(atomic_load(&log.stops), 2);
  ASSERT_EQ(atomic_load(&log.destroys), 1);
  ASSERT_EQ(late.done_calls, 0);
  loom_timer_stop(&loop, &ticker);
  loom_test_loop_close(&loop);
}

static _Atomic int dropped;
static pthread_t dropped_on;

static void drop_job(loom_work_t *work) {
  dropped_on = pthread_self();
  atomic_fetch_add(&dropped, 1);
}

/* The origin loop goes away while its job is stuck: the job is abandoned,
 * the loop closes at once, and when the call returns the job is dropped on
 * the worker thread, the thread stops and the pool is freed. */
TEST_IMPL(workers_abandon_stuck) {
  loom_loop_t loop;
  hook_log_t log = {0};
  _Atomic int done = 0, release = 0, started = 0;
  job_t stuck, queued;
  origin = pthread_self();
  loom_test_loop_init(&loop);
  loom_workers_t *pool = loom_workers_new(1, LOOM_WORKERS_NICE, &hooks, &log);
  ASSERT(pool != NULL);
  job_init(&stuck, &done);
  stuck.release = &release;
  stuck.started = &started;
  job_init(&queued, &done);
  ASSERT_EQ(loom_workers_submit(pool, &loop, &stuck.work), 0);
  ASSERT_EQ(loom_workers_submit(pool, &loop, &queued.work), 0);
  wait_flag(&started, 1, 10000);
  ASSERT_EQ(loom_work_abandon(&queued.work, drop_job), LOOM_WORK_QUEUED);
  ASSERT_EQ(loom_work_cancel(&queued.work), LOOM_WORK_QUEUED);
  ASSERT_EQ(loom_work_abandon(&stuck.work, drop_job), LOOM_WORK_RUNNING);
  loom_workers_unref(pool);
  /* Only the cancelled job's done is left for the loop: close runs it. */
  uint64_t t0 = loom_now_ns();
  loom_test_loop_close(&loop);
  ASSERT(loom_now_ns() - t0 < 1000 * (uint64_t)MS);
  ASSERT_EQ(queued.done_calls, 1);
  ASSERT_EQ(queued.done_status, LOOM_ECANCELED);
  ASSERT_EQ(atomic_load(&log.destroys), 0);

  atomic_store(&release, 1);
  wait_flag(&log.destroys, 1, 10000);
  ASSERT_EQ(atomic_load(&dropped), 1);
  ASSERT(pthread_equal(dropped_on, stuck.ran_on));
  ASSERT_EQ(stuck.done_calls, 0);
  ASSERT_EQ(atomic_load(&log.stops), 1);
}

/* Polls until the pool has `want` threads, failing after timeout_ms. */
static void poll_threads(loom_loop_t *loop, loom_workers_t *pool, unsigned want,
                         int timeout_ms) {
  uint64_t deadline = loom_now_ns() + (uint64_t)timeout_ms * MS;
  while (loom_workers_threads(pool) != want) {
    ASSERT(loom_now_ns() < deadline);
    loom_loop_poll(loop, 5);
  }
}

/* Jobs given up on while stuck: each gets a thread in its place, up to
 * LOOM_WORKERS_SPARE, so the queue is served meanwhile; when their calls
 * return their done runs as usual and the stuck threads end. */
TEST_IMPL(workers_replace_stuck) {
  enum { STUCK = LOOM_WORKERS_SPARE + 1 };
  loom_loop_t loop;
  hook_log_t log = {0};
  _Atomic int done = 0, release = 0, started = 0;
  job_t stuck[STUCK], quick;
  origin = pthread_self();
  loom_test_loop_init(&loop);
  loom_workers_t *pool = loom_workers_new(1, LOOM_WORKERS_NICE, &hooks, &log);
  ASSERT(pool != NULL);
  for (int i = 0; i < STUCK; i++) {
    job_init(&stuck[i], &done);
    stuck[i].release = &release;
    stuck[i].started = &started;
    ASSERT_EQ(loom_workers_submit(pool, &loop, &stuck[i].work), 0);
    wait_flag(&started, i + 1, 10000);
    ASSERT_EQ(loom_work_replace(&stuck[i].work), i < LOOM_WORKERS_SPARE);
    /* Once is enough. */
    ASSERT_EQ(loom_work_replace(&stuck[i].work), 0);
  }
  ASSERT_EQ(loom_workers_threads(pool), 1 + LOOM_WORKERS_SPARE);
  ASSERT_EQ(loom_workers_size(pool), 1);
  /* The last stuck job holds the only thread that serves. */
  job_init(&quick, &done);
  ASSERT_EQ(loom_workers_submit(pool, &loop, &quick.work), 0);
  usleep(20000);
  ASSERT_EQ(loom_work_state(&quick.work), LOOM_WORK_QUEUED);
  atomic_store(&release, 1);
  poll_until(&loop, &done, STUCK + 1, 10000);
  for (int i = 0; i < STUCK; i++)
    ASSERT_EQ(stuck[i].done_calls, 1);
  ASSERT_EQ(quick.done_calls, 1);
  poll_threads(&loop, pool, 1, 10000);
  ASSERT_EQ(atomic_load(&log.stops), LOOM_WORKERS_SPARE);
  /* A replaced thread served the quick job, or the one left did. */
  ASSERT_EQ(loom_work_replace(&quick.work), 0);
  close_and_wait(&loop, pool);
  ASSERT_EQ(atomic_load(&log.starts), 1 + LOOM_WORKERS_SPARE);
  ASSERT_EQ(atomic_load(&log.stops), 1 + LOOM_WORKERS_SPARE);
  ASSERT_EQ(atomic_load(&log.destroys), 1);
  loom_test_loop_close(&loop);
}

/* The last holder lets go with work queued: the queued jobs end with
 * LOOM_ECLOSED and the pool is freed once, when the running one ends. */
TEST_IMPL(workers_unref_with_queued) {
  loom_loop_t loop;
  hook_log_t log = {0};
  _Atomic int done = 0, release = 0, started = 0;
  job_t blocker, queued[10];
  origin = pthread_self();
  loom_test_loop_init(&loop);
  loom_workers_t *pool = loom_workers_new(1, LOOM_WORKERS_NICE, &hooks, &log);
  ASSERT(pool != NULL);
  loom_workers_ref(pool);
  job_init(&blocker, &done);
  blocker.release = &release;
  blocker.started = &started;
  ASSERT_EQ(loom_workers_submit(pool, &loop, &blocker.work), 0);
  for (int i = 0; i < 10; i++) {
    job_init(&queued[i], &done);
    ASSERT_EQ(loom_workers_submit(pool, &loop, &queued[i].work), 0);
  }
  wait_flag(&started, 1, 10000);
  loom_workers_unref(pool);
  /* Another holder keeps it open. */
  job_t extra;
  job_init(&extra, &done);
  ASSERT_EQ(loom_workers_submit(pool, &loop, &extra.work), 0);
  loom_workers_unref(pool);
  poll_until(&loop, &done, 11, 10000);
  for (int i = 0; i < 10; i++)
    ASSERT_EQ(queued[i].done_status, LOOM_ECLOSED);
  ASSERT_EQ(extra.done_status, LOOM_ECLOSED);
  ASSERT_EQ(atomic_load(&log.destroys), 0);
  atomic_store(&release, 1);
  poll_until(&loop, &done, 12, 10000);
  ASSERT_EQ(blocker.done_status, 0);
  wait_flag(&log.destroys, 1, 10000);
  ASSERT_EQ(atomic_load(&log.stops), 1);
  loom_test_loop_close(&loop);
  ASSERT_EQ(atomic_load(&log.destroys), 1);
}

/* ---- jobs from several loops ------------------------------------------ */

typedef struct {
  loom_workers_t *pool;
  pthread_t self;
  int id;
  int done_here;
  int wrong_thread;
  long sum;
} submitter_t;

typedef struct {
  loom_work_t work;
  submitter_t *from;
  long value;
} tagged_t;

static void tagged_run(loom_work_t *work, void *thread_data) {
  tagged_t *t = (tagged_t *)work;
  t->value = t->value * 2;
}

static void tagged_done(loom_work_t *work, int status) {
  tagged_t *t = (tagged_t *)work;
  ASSERT_EQ(status, 0);
  if (!pthread_equal(pthread_self(), t->from->self))
    t->from->wrong_thread++;
  t->from->done_here++;
  t->from->sum += t->value;
}

#define PER_LOOP 500

/* Both loops exist before either closes: libuv closes descriptors with a
 * raw syscall ThreadSanitizer does not see (google/sanitizers#1376), so a
 * number closed on one thread and reused on another looks like a race on
 * the descriptor. */
static pthread_barrier_t both_open;

static void *submit_from_loop(void *arg) {
  submitter_t *s = arg;
  loom_loop_t loop;
  tagged_t *jobs = calloc(PER_LOOP, sizeof *jobs);
  ASSERT(jobs != NULL);
  s->self = pthread_self();
  ASSERT_EQ(loom_loop_init(&loop), 0);
  pthread_barrier_wait(&both_open);
  for (int i = 0; i < PER_LOOP; i++) {
    jobs[i].work.run = tagged_run;
    jobs[i].work.done = tagged_done;
    jobs[i].from = s;
    jobs[i].value = s->id * 100000 + i;
    ASSERT_EQ(loom_workers_submit(s->pool, &loop, &jobs[i].work), 0);
  }
  uint64_t deadline = loom_now_ns() + 15000 * (uint64_t)MS;
  while (s->done_here < PER_LOOP && loom_now_ns() < deadline)
    loom_loop_poll(&loop, 5);
  ASSERT_EQ(loom_loop_close(&loop), 0);
  loom_workers_unref(s->pool);
  free(jobs);
  return NULL;
}

TEST_IMPL(workers_two_loops) {
  loom_loop_t loop;
  origin = pthread_self();
  loom_test_loop_init(&loop);
  loom_workers_t *pool = loom_workers_new(2, LOOM_WORKERS_NICE, NULL, NULL);
  ASSERT(pool != NULL);
  submitter_t s[2] = {{pool, 0, 1}, {pool, 0, 2}};
  pthread_t th[2];
  ASSERT_EQ(pthread_barrier_init(&both_open, NULL, 2), 0);
  for (int i = 0; i < 2; i++) {
    loom_workers_ref(pool);
    ASSERT_EQ(pthread_create(&th[i], NULL, submit_from_loop, &s[i]), 0);
  }
  for (int i = 0; i < 2; i++)
    ASSERT_EQ(pthread_join(th[i], NULL), 0);
  pthread_barrier_destroy(&both_open);
  for (int i = 0; i < 2; i++) {
    long want = 0;
    for (int k = 0; k < PER_LOOP; k++)
      want += 2 * ((long)s[i].id * 100000 + k);
    ASSERT_EQ(s[i].done_here, PER_LOOP);
    ASSERT_EQ(s[i].wrong_thread, 0);
    ASSERT_EQ(s[i].sum, want);
  }
  close_and_wait(&loop, pool);
  loom_test_loop_close(&loop);
}

/* A job submits to a second pool from its worker, with the worker's loop
 * as origin, and drives that loop until the inner job is done. */
typedef struct {
  loom_work_t work;
  loom_workers_t *inner_pool;
  tagged_t inner;
  submitter_t here;
  int inner_done;
} outer_t;

static void outer_run(loom_work_t *work, void *thread_data) {
  outer_t *o = (outer_t *)work;
  thread_ctx_t *ctx = thread_data;
  o->here.self = pthread_self();
  o->inner.work.run = tagged_run;
  o->inner.work.done = tagged_done;
  o->inner.from = &o->here;
  o->inner.value = 21;
  ASSERT_EQ(loom_workers_submit(o->inner_pool, ctx->loop, &o->inner.work), 0);
  uint64_t deadline = loom_now_ns() + 10000 * (uint64_t)MS;
  while (o->here.done_here == 0 && loom_now_ns() < deadline)
    loom_loop_poll(ctx->loop, 5);
  o->inner_done = o->here.done_here;
}

static void outer_done(loom_work_t *work, int status) {
  ASSERT(pthread_equal(pthread_self(), origin));
  ASSERT_EQ(status, 0);
}

TEST_IMPL(workers_submit_from_worker) {
  loom_loop_t loop;
  hook_log_t log = {0};
  origin = pthread_self();
  loom_test_loop_init(&loop);
  loom_workers_t *outer_pool = loom_workers_new(1, LOOM_WORKERS_NICE, &hooks, &log);
  loom_workers_t *inner_pool = loom_workers_new(1, LOOM_WORKERS_NICE, NULL, NULL);
  ASSERT(outer_pool != NULL && inner_pool != NULL);
  outer_t o;
  memset(&o, 0, sizeof o);
  o.work.run = outer_run;
  o.work.done = outer_done;
  o.inner_pool = inner_pool;
  ASSERT_EQ(loom_workers_submit(outer_pool, &loop, &o.work), 0);
  uint64_t deadline = loom_now_ns() + 10000 * (uint64_t)MS;
  while (loom_loop_alive(&loop) && loom_now_ns() < deadline)
    loom_loop_poll(&loop, 5);
  ASSERT(!loom_loop_alive(&loop));
  ASSERT_EQ(o.inner_done, 1);
  ASSERT_EQ(o.here.wrong_thread, 0);
  ASSERT_EQ(o.here.sum, 42);
  close_and_wait(&loop, inner_pool);
  close_and_wait(&loop, outer_pool);
  loom_test_loop_close(&loop);
}

/* ---- many tiny jobs ----------------------------------------------------- */

typedef struct {
  loom_work_t work;
  int64_t in, out;
} tiny_t;

static int64_t tiny_done_n, tiny_sum;

static void tiny_run(loom_work_t *work, void *thread_data) {
  tiny_t *t = (tiny_t *)work;
  t->out = t->in + 1;
}

static void tiny_done(loom_work_t *work, int status) {
  tiny_t *t = (tiny_t *)work;
  ASSERT_EQ(status, 0);
  tiny_done_n++;
  tiny_sum += t->out;
}

TEST_IMPL(workers_many_jobs) {
  loom_loop_t loop;
  origin = pthread_self();
  loom_test_loop_init(&loop);
  loom_workers_t *pool = loom_workers_new(2, LOOM_WORKERS_NICE, NULL, NULL);
  ASSERT(pool != NULL);
  tiny_t *jobs = calloc(MANY_JOBS, sizeof *jobs);
  ASSERT(jobs != NULL);
  int64_t want = 0;
  for (int i = 0; i < MANY_JOBS; i++) {
    jobs[i].work.run = tiny_run;
    jobs[i].work.done = tiny_done;
    jobs[i].in = i;
    want += i + 1;
    ASSERT_EQ(loom_workers_submit(pool, &loop, &jobs[i].work), 0);
  }
  uint64_t deadline = loom_now_ns() + 15000 * (uint64_t)MS;
  while (tiny_done_n < MANY_JOBS) {
    ASSERT(loom_now_ns() < deadline);
    loom_loop_poll(&loop, 5);
  }
  ASSERT_EQ(tiny_done_n, MANY_JOBS);
  ASSERT_EQ(tiny_sum, want);
  ASSERT(!loom_loop_alive(&loop));
  close_and_wait(&loop, pool);
  loom_test_loop_close(&loop);
  free(jobs);
}

/* ---- an idle pool sleeps ------------------------------------------------ */

static uint64_t cpu_ns(void) {
  struct rusage ru;
  ASSERT_EQ(getrusage(RUSAGE_SELF, &ru), 0);
  return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000u +
         (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000u;
}

TEST_IMPL(workers_idle_costs_nothing) {
  loom_loop_t loop;
  hook_log_t log = {0};
  _Atomic int done = 0;
  job_t job;
  origin = pthread_self();
  loom_test_loop_init(&loop);
  loom_workers_t *pool = loom_workers_new(0, LOOM_WORKERS_NICE, &hooks, &log);
  ASSERT(pool != NULL);
  unsigned size = loom_workers_size(pool);
  ASSERT_EQ(size, uv_available_parallelism());
  wait_flag(&log.starts, (int)size, 10000);
  /* One job first: an idle worker that has worked sleeps as well. */
  job_init(&job, &done);
  ASSERT_EQ(loom_workers_submit(pool, &loop, &job.work), 0);
  poll_until(&loop, &done, 1, 10000);
  usleep(20000);
  uint64_t cpu0 = cpu_ns(), t0 = loom_now_ns();
  usleep(200000);
  uint64_t cpu = cpu_ns() - cpu0, wall = loom_now_ns() - t0;
  /* Under 5% of one core over the idle spell. */
  if (cpu * 20 >= wall)
    fprintf(stderr, "idle pool used %llu ns of CPU in %llu ns\n",
            (unsigned long long)cpu, (unsigned long long)wall);
  ASSERT(cpu * 20 < wall);
  close_and_wait(&loop, pool);
  loom_test_loop_close(&loop);
}

static int woken;

static void count_wake(loom_loop_t *loop) { woken++; }

static void noop_timer(loom_timer_t *t) { (void)t; }

/* A job's worker loop is woken by a cancel: a run waiting in its poll (a
 * sleeping task) sees the flag without waiting for its timer. */
static void poll_until_cancelled(loom_work_t *work, void *thread_data) {
  thread_ctx_t *ctx = thread_data;
  job_t *j = work->data;
  loom_timer_t sleeping;
  loom_timer_init(&sleeping, noop_timer, NULL);
  ASSERT_EQ(loom_timer_start(ctx->loop, &sleeping, 60000 * (uint64_t)MS), 0);
  atomic_fetch_add(j->started, 1);
  uint64_t t0 = loom_now_ns();
  while (!loom_work_cancelled(work) && loom_now_ns() - t0 < 10000 * (uint64_t)MS)
    loom_loop_poll(ctx->loop, -1);
  loom_timer_stop(ctx->loop, &sleeping);
  j->saw_cancel = loom_work_cancelled(work) && woken > 0;
  j->ran = 1;
}


static void *set_on_wake(loom_loop_t *loop, void *data) {
  loop->on_wake = count_wake;
  return hook_start(loop, data);
}

TEST_IMPL(workers_cancel_wakes_loop) {
  loom_loop_t loop;
  hook_log_t log = {0};
  _Atomic int done = 0, started = 0;
  job_t job;
  loom_workers_hooks_t h = hooks;
  h.thread_start = set_on_wake;
  origin = pthread_self();
  loom_test_loop_init(&loop);
  loom_workers_t *pool = loom_workers_new(1, LOOM_WORKERS_NICE, &h, &log);
  ASSERT(pool != NULL);
  job_init(&job, &done);
  job.work.run = poll_until_cancelled;
  job.started = &started;
  ASSERT_EQ(loom_workers_submit(pool, &loop, &job.work), 0);
  wait_flag(&started, 1, 10000);
  usleep(20000);
  uint64_t t0 = loom_now_ns();
  ASSERT_EQ(loom_work_cancel(&job.work), LOOM_WORK_RUNNING);
  poll_until(&loop, &done, 1, 10000);
  ASSERT(loom_now_ns() - t0 < 5000 * (uint64_t)MS);
  ASSERT(job.saw_cancel);
  close_and_wait(&loop, pool);
  loom_test_loop_close(&loop);
}

/* Cancels that race with jobs starting and ending: every job completes
 * exactly once, run if and only if its status says it did. */
#define RACE_JOBS 2000

typedef struct {
  loom_work_t work;
  _Atomic int ran;
  int done_calls, status;
} racer_t;

static int racers_done;

static void racer_run(loom_work_t *work, void *thread_data) {
  racer_t *r = (racer_t *)work;
  atomic_fetch_add(&r->ran, 1);
  for (volatile int i = 0; i < 20000 && !loom_work_cancelled(work); i++)
    ;
}

static void racer_done(loom_work_t *work, int status) {
  racer_t *r = (racer_t *)work;
  r->done_calls++;
  r->status = status;
  racers_done++;
}

TEST_IMPL(workers_cancel_race) {
  loom_loop_t loop;
  hook_log_t log = {0};
  origin = pthread_self();
  loom_test_loop_init(&loop);
  loom_workers_t *pool = loom_workers_new(2, LOOM_WORKERS_NICE, &hooks, &log);
  ASSERT(pool != NULL);
  racer_t *jobs = calloc(RACE_JOBS, sizeof *jobs);
  ASSERT(jobs != NULL);
  int running = 0;
  for (int i = 0; i < RACE_JOBS; i++) {
    jobs[i].work.run = racer_run;
    jobs[i].work.done = racer_done;
    ASSERT_EQ(loom_workers_submit(pool, &loop, &jobs[i].work), 0);
    /* Every other job is cancelled as soon as it leaves the queue, likely
     * while it runs; the others cancel an earlier job, whatever it is
     * doing by now. */
    int k = i;
    if (i % 2) {
      uint64_t until = loom_now_ns() + 2 * MS;
      while (loom_work_state(&jobs[i].work) == LOOM_WORK_QUEUED &&
             loom_now_ns() < until)
        ;
    } else {
      k = (int)(((unsigned)i * 2654435761u) % (unsigned)(i + 1));
    }
    running += loom_work_cancel(&jobs[k].work) == LOOM_WORK_RUNNING;
    loom_loop_poll(&loop, 0);
  }
  uint64_t deadline = loom_now_ns() + 15000 * (uint64_t)MS;
  while (racers_done < RACE_JOBS) {
    ASSERT(loom_now_ns() < deadline);
    loom_loop_poll(&loop, 5);
  }
  for (int i = 0; i < RACE_JOBS; i++) {
    ASSERT_EQ(jobs[i].done_calls, 1);
    if (jobs[i].status == 0)
      ASSERT_EQ(atomic_load(&jobs[i].ran), 1);
    else {
      ASSERT_EQ(jobs[i].status, LOOM_ECANCELED);
      ASSERT_EQ(atomic_load(&jobs[i].ran), 0);
    }
  }
  ASSERT_EQ(atomic_load(&log.interrupts), running);
  close_and_wait(&loop, pool);
  loom_test_loop_close(&loop);
  free(jobs);
}

/* Between jobs a worker sleeps in its loop's poll, so what its setup left
 * on the loop (a ticking timer) keeps running while no job comes. */
typedef struct {
  loom_timer_t timer;
  loom_loop_t *loop;
  _Atomic int *ticks;
} ticker_t;

static _Atomic int worker_ticks;

static void worker_tick(loom_timer_t *t) {
  ticker_t *tk = t->data;
  atomic_fetch_add(tk->ticks, 1);
  loom_timer_start(tk->loop, t, 2 * MS);
}

static void *start_ticker(loom_loop_t *loop, void *data) {
  ticker_t *tk = calloc(1, sizeof *tk);
  ASSERT(tk != NULL);
  tk->loop = loop;
  tk->ticks = &worker_ticks;
  loom_timer_init(&tk->timer, worker_tick, tk);
  ASSERT_EQ(loom_timer_start(loop, &tk->timer, 2 * MS), 0);
  return tk;
}

static void stop_ticker(void *thread_data) {
  ticker_t *tk = thread_data;
  loom_timer_stop(tk->loop, &tk->timer);
  free(tk);
}

TEST_IMPL(workers_idle_loop_runs) {
  loom_loop_t loop;
  loom_workers_hooks_t h = {.thread_start = start_ticker, .thread_stop = stop_ticker};
  origin = pthread_self();
  loom_test_loop_init(&loop);
  loom_workers_t *pool = loom_workers_new(1, LOOM_WORKERS_NICE, &h, NULL);
  ASSERT(pool != NULL);
  wait_flag(&worker_ticks, 10, 10000);
  close_and_wait(&loop, pool);
  loom_test_loop_close(&loop);
}

/* after_job runs on the worker thread once per job, after the job's
 * outcome was posted and before the worker runs the next one. */
static _Atomic int after_calls;
static int after_saw_runs[8];
static pthread_t after_thread;

static void hook_after_job(void *thread_data) {
  thread_ctx_t *t = thread_data;
  ASSERT(pthread_equal(pthread_self(), t->self));
  after_thread = t->self;
  int i = atomic_fetch_add(&after_calls, 1);
  if (i < 8)
    after_saw_runs[i] = atomic_load(&run_seq);
}

TEST_IMPL(workers_after_job) {
  loom_loop_t loop;
  hook_log_t log = {0};
  _Atomic int done = 0;
  job_t jobs[4];
  origin = pthread_self();
  loom_test_loop_init(&loop);
  loom_workers_hooks_t h = hooks;
  h.after_job = hook_after_job;
  atomic_store(&after_calls, 0);
  int base = atomic_load(&run_seq);
  loom_workers_t *pool = loom_workers_new(1, LOOM_WORKERS_NICE, &h, &log);
  ASSERT(pool != NULL);
  for (int i = 0; i < 4; i++) {
    job_init(&jobs[i], &done);
    ASSERT_EQ(loom_workers_submit(pool, &loop, &jobs[i].work), 0);
  }
  poll_until(&loop, &done, 4, 10000);
  close_and_wait(&loop, pool);
  ASSERT_EQ(atomic_load(&after_calls), 4);
  for (int i = 0; i < 4; i++)
    ASSERT_EQ(after_saw_runs[i], base + i + 1); /* the next job had not begun */
  ASSERT(pthread_equal(after_thread, jobs[0].ran_on));
  loom_test_loop_close(&loop);
}
