#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include "lane.h"

/* The queue is Vyukov's intrusive one (jobs linked through their `next`,
 * a stub node so it is never empty): a submit is one atomic exchange and a
 * take touches only the lane's end, so the loop and the lane never wait
 * for each other's lock. With a mutex there, every hand-off the two made
 * at the same moment cost a futex wake (a fifth of all system calls of 4
 * tasks on a reader). The mutex and condition are left for sleeping. */
struct loom_lane {
  loom_loop_t *loop;
  _Atomic(loom_job_t *) tail; /* the last job in: submitters */
  /* Keeps the submitters' `tail` off the lane's cache line: only its size
   * is used, so cppcheck sees an unused member. */
  // cppcheck-suppress unusedStructMember
  char pad[64];
  loom_job_t *head;           /* lane thread: the next to take, or the stub */
  loom_job_t stub;
  _Atomic int queued;         /* jobs in the queue, never more than are linked */
  _Atomic int sleeping;       /* the thread waits (or is about to) on `wake` */
  _Atomic int submit_cpu;     /* the core of the submit that woke it */
  int quit;                   /* under lock */
  uv_mutex_t lock;
  uv_cond_t wake;
  uv_thread_t thread;
  int pending;                /* loop thread: submitted, done not yet run */
  loom_spin_t spin;           /* lane thread: how long it watches for a job */
};

static void job_posted(loom_post_t *p) {
  loom_job_t *job = (loom_job_t *)p;
  loom_lane_t *lane = job->lane;
  lane->pending--;
  loom_loop_expect(lane->loop, -1);
  job->done(job);
}

static void push(loom_lane_t *lane, loom_job_t *job) {
  atomic_store_explicit(&job->next, NULL, memory_order_relaxed);
  loom_job_t *prev = atomic_exchange_explicit(&lane->tail, job, memory_order_acq_rel);
  atomic_store_explicit(&prev->next, job, memory_order_release);
}

/* Lane thread. NULL when empty, or while a submit is between its two
 * steps (it then looks at `sleeping` and wakes the lane if needed). */
static loom_job_t *pop(loom_lane_t *lane) {
  loom_job_t *head = lane->head;
  loom_job_t *next = atomic_load_explicit(&head->next, memory_order_acquire);
  if (head == &lane->stub) {
    if (next == NULL)
      return NULL;
    lane->head = head = next;
    next = atomic_load_explicit(&head->next, memory_order_acquire);
  }
  if (next == NULL) {
    if (head != atomic_load_explicit(&lane->tail, memory_order_acquire))
      return NULL;
    push(lane, &lane->stub);
    next = atomic_load_explicit(&head->next, memory_order_acquire);
    if (next == NULL)
      return NULL;
  }
  lane->head = next;
  atomic_fetch_sub_explicit(&lane->queued, 1, memory_order_relaxed);
  return head;
}

typedef struct taking {
  loom_lane_t *lane;
  loom_job_t *job;
} taking;

static int popped(void *arg) {
  taking *t = arg;
  return (t->job = pop(t->lane)) != NULL;
}

static loom_job_t *take(loom_lane_t *lane) {
  taking t = {lane, pop(lane)};
  if (t.job) {
    loom_spin_found(&lane->spin);
    return t.job;
  }
  if (loom_spin_until(&lane->spin, uv_hrtime(), popped, &t))
    return t.job;
  loom_job_t *job;
  uv_mutex_lock(&lane->lock);
  /* Said before looking once more, a full fence between: a submit that
   * linked its job after this look sees `sleeping` (submit's fence). */
  atomic_store(&lane->sleeping, 1);
  atomic_thread_fence(memory_order_seq_cst);
  while ((job = pop(lane)) == NULL && !lane->quit)
    uv_cond_wait(&lane->wake, &lane->lock);
  atomic_store(&lane->sleeping, 0);
  uv_mutex_unlock(&lane->lock);
  if (job)
    loom_spin_woken(&lane->spin, atomic_load_explicit(&lane->submit_cpu, memory_order_relaxed));
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
  loom_spin_init(&lane->spin);
  atomic_init(&lane->stub.next, NULL);
  lane->head = &lane->stub;
  atomic_init(&lane->tail, &lane->stub);
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
  job->lane = lane;
  lane->pending++;
  loom_loop_expect(lane->loop, 1);
  push(lane, job);
  /* Counted once linked: a job reads `queued` to know which jobs were
   * submitted before it began, so the count may lag, never lead. */
  atomic_fetch_add_explicit(&lane->queued, 1, memory_order_release);
  atomic_thread_fence(memory_order_seq_cst);
  if (atomic_load_explicit(&lane->sleeping, memory_order_relaxed)) {
    atomic_store_explicit(&lane->submit_cpu, loom_spin_cpu(), memory_order_relaxed);
    uv_mutex_lock(&lane->lock);
    uv_cond_signal(&lane->wake);
    uv_mutex_unlock(&lane->lock);
  }
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
