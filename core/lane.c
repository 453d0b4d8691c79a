#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include "lane.h"

/* How long an idle lane spins for the next job before it sleeps. */
#define LANE_SPIN_NS 50000
/* While spinning, give the core away once every this many turns (about
 * 40 us): often enough for a busy machine, rarely enough that the syscall
 * does not slow the hand-off itself. When a yield did give the core to
 * another thread (it took long: loom__yield_gave_core), the loop thread
 * could not run beside the lane (no free core): spinning was wasted, and
 * the next wait yields after fewer turns (halved each time, down to at
 * once). A job that comes while spinning, or after yields that came
 * straight back (a free core: yielding helped no one), doubles them back.
 * Counting yields alone would never leave "at once": every wait then
 * yields before it sees its job. */
#define LANE_YIELD_EVERY 1024

struct loom_lane {
  loom_loop_t *loop;
  uv_thread_t thread;
  uv_mutex_t lock;
  uv_cond_t wake;
  loom_job_t *head, *tail; /* under lock */
  _Atomic int queued;      /* jobs in the queue, read without the lock */
  int sleeping;            /* under lock: the thread waits on `wake` */
  int quit;                /* under lock */
  int pending;             /* loop thread: submitted, done not yet run */
  unsigned yield_every;    /* lane thread: turns between yields, a power of 2 */
};

static void job_posted(loom_post_t *p) {
  loom_job_t *job = (loom_job_t *)p;
  loom_lane_t *lane = job->lane;
  lane->pending--;
  loom_loop_expect(lane->loop, -1);
  job->done(job);
}

static loom_job_t *take(loom_lane_t *lane) {
  uint64_t start = 0;
  int gave_core = 0;
  for (unsigned i = 0;; i++) {
    if (atomic_load_explicit(&lane->queued, memory_order_acquire) > 0) {
      lane->yield_every = loom__spin_adapt(lane->yield_every, LANE_YIELD_EVERY, i, gave_core);
      break;
    }
    if ((i & (lane->yield_every - 1)) == lane->yield_every - 1) {
      uint64_t now = uv_hrtime();
      if (start == 0)
        start = now;
      else if (now - start > LANE_SPIN_NS)
        break;
      sched_yield();
      gave_core |= loom__yield_gave_core(now);
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  uv_mutex_lock(&lane->lock);
  while (lane->head == NULL && !lane->quit) {
    lane->sleeping = 1;
    uv_cond_wait(&lane->wake, &lane->lock);
    lane->sleeping = 0;
  }
  loom_job_t *job = lane->head;
  if (job) {
    lane->head = job->next;
    if (lane->head == NULL)
      lane->tail = NULL;
    atomic_fetch_sub(&lane->queued, 1);
  }
  uv_mutex_unlock(&lane->lock);
  return job;
}

static void lane_main(void *arg) {
  loom_lane_t *lane = arg;
  loom_job_t *job;
#ifdef __linux__
  /* Named, so top -H and profilers tell lanes from the loop thread. */
  pthread_setname_np(pthread_self(), "loom-lane");
#endif
  while ((job = take(lane)) != NULL) {
    job->work(job);
    job->post.cb = job_posted;
    loom_loop_post(lane->loop, &job->post);
  }
}

loom_lane_t *loom_lane_start(loom_loop_t *loop) {
  loom_lane_t *lane = calloc(1, sizeof *lane);
  if (lane == NULL)
    return NULL;
  lane->loop = loop;
  lane->yield_every = LANE_YIELD_EVERY;
  if (uv_mutex_init(&lane->lock) != 0) {
    free(lane);
    return NULL;
  }
  if (uv_cond_init(&lane->wake) != 0) {
    uv_mutex_destroy(&lane->lock);
    free(lane);
    return NULL;
  }
  if (uv_thread_create(&lane->thread, lane_main, lane) != 0) {
    uv_cond_destroy(&lane->wake);
    uv_mutex_destroy(&lane->lock);
    free(lane);
    return NULL;
  }
  return lane;
}

void loom_lane_submit(loom_lane_t *lane, loom_job_t *job) {
  job->next = NULL;
  job->lane = lane;
  lane->pending++;
  loom_loop_expect(lane->loop, 1);
  uv_mutex_lock(&lane->lock);
  if (lane->tail)
    lane->tail->next = job;
  else
    lane->head = job;
  lane->tail = job;
  atomic_fetch_add_explicit(&lane->queued, 1, memory_order_release);
  if (lane->sleeping)
    uv_cond_signal(&lane->wake);
  uv_mutex_unlock(&lane->lock);
}

int loom_lane_queued(loom_lane_t *lane) { return atomic_load(&lane->queued); }

void loom_lane_stop(loom_lane_t *lane) {
  uv_mutex_lock(&lane->lock);
  lane->quit = 1;
  uv_cond_signal(&lane->wake);
  uv_mutex_unlock(&lane->lock);
  uv_thread_join(&lane->thread);
  uv_cond_destroy(&lane->wake);
  uv_mutex_destroy(&lane->lock);
  free(lane);
}
