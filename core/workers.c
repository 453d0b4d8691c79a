/* Worker threads: one FIFO under one mutex, shared by every worker. A job
 * holds a reference to the pool from submit until its done has run, each
 * thread one until it has ended, so whatever lets go last frees the pool.
 *
 * Idle workers sleep in their own loop's poll rather than on a condition
 * variable, so the loop's timers and I/O keep running between jobs; a
 * submit wakes one idle worker through a uv_async_t of that worker's loop,
 * which stays pending until the worker polls: no wake-up is lost between
 * the worker unlocking and polling. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sys/resource.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include "list.h"
#include "workers.h"

/* A worker that just finished a job watches the queue for a while before
 * it sleeps in its poll (for how long: core/spin.h, its `spin`): the next
 * job of a map, or of a loop offloading one call after another, then
 * starts without a wake-up through the kernel on either side (the origin
 * loop spins for its answer likewise). */

struct loom_worker {
  loom_workers_t *pool;
  loom_loop_t loop;
  uv_async_t job_async; /* a submit wakes the idle worker through it */
  void *thread_data;
  loom_work_t *job;     /* under lock: the job it runs */
  int idle;             /* under lock: asleep in its poll, not yet woken */
  int failed;           /* its loop could not be made */
  int used;             /* under lock: a thread owns this slot */
  int stuck;            /* under lock: replaced; it ends when its job returns */
  int announce;         /* one of the first threads: posts `started` */
  loom_spin_t spin;     /* how long it watches the queue after a job */
};

struct loom_workers {
  uv_mutex_t lock;
  loom_workers_hooks_t hooks;
  void *hooks_data;
  unsigned size;
  int nice;                 /* added to the creator's in each thread */
  unsigned slots;           /* size + LOOM_WORKERS_SPARE */
  unsigned stuck;           /* under lock: replaced threads not yet ended */
  loom_worker_t *workers;
  loom_work_t *head, *tail; /* under lock */
  _Atomic int queued;       /* jobs in the queue, for spinning workers */
  _Atomic int spinning;     /* workers watching the queue: no wake needed */
  int submit_cpu;           /* under lock: the core of the submit that woke a worker */
  unsigned live;            /* under lock: threads not yet ended */
  int closed;               /* under lock */
  uv_sem_t started;         /* each thread posts once its loop exists */
  _Atomic int refs;         /* holders, threads, jobs, the closed post */
  _Atomic int holders;
  loom_post_t closed_post;
  loom_loop_t *closed_loop;
  void (*closed_cb)(loom_workers_t *pool, void *arg);
  void *closed_arg;
};

static void pool_release(loom_workers_t *pool) {
  if (atomic_fetch_sub(&pool->refs, 1) != 1)
    return;
  if (pool->hooks.destroy)
    pool->hooks.destroy(pool->hooks_data);
  uv_sem_destroy(&pool->started);
  uv_mutex_destroy(&pool->lock);
  free(pool->workers);
  free(pool);
}

static void work_posted(loom_post_t *p) {
  loom_work_t *work = (loom_work_t *)((char *)p - offsetof(loom_work_t, post));
  loom_workers_t *pool = work->pool;
  loom_loop_expect(work->loop, -1);
  /* Idle before done: done may submit the same job again. */
  atomic_store(&work->state, LOOM_WORK_IDLE);
  work->done(work, work->status);
  pool_release(pool);
}

/* Under lock: the job leaves the pool's hands; done goes to its loop. */
static void finish(loom_work_t *work, int status) {
  work->status = status;
  atomic_store(&work->state, LOOM_WORK_FINISHED);
  work->post.cb = work_posted;
  loom_loop_post(work->loop, &work->post);
}

static void unqueue(loom_workers_t *pool, loom_work_t *work) {
  atomic_fetch_sub_explicit(&pool->queued, 1, memory_order_relaxed);
  LOOM_LIST_UNLINK(pool->head, pool->tail, work);
}

/* Under lock: a running job is told to stop, and its worker's poll ends. */
static void interrupt(loom_workers_t *pool, loom_worker_t *w) {
  atomic_store(&w->job->cancelled, 1);
  if (pool->hooks.interrupt)
    pool->hooks.interrupt(w->thread_data);
  loom_loop_wake(&w->loop);
}

static void closed_posted(loom_post_t *p) {
  loom_workers_t *pool =
      (loom_workers_t *)((char *)p - offsetof(loom_workers_t, closed_post));
  loom_loop_expect(pool->closed_loop, -1);
  pool->closed_cb(pool, pool->closed_arg);
  pool_release(pool);
}

static void job_async_cb(uv_async_t *handle) { (void)handle; }

static int job_queued(void *pool) {
  return atomic_load_explicit(&((loom_workers_t *)pool)->queued, memory_order_relaxed) > 0;
}

static void spin_for_job(loom_worker_t *w) {
  loom_spin_until(&w->spin, uv_hrtime(), job_queued, w->pool);
}

static void run_jobs(loom_worker_t *w) {
  loom_workers_t *pool = w->pool;
  int worked = 0;
  uv_mutex_lock(&pool->lock);
  for (;;) {
    loom_work_t *work = pool->head;
    if (work) {
      loom_spin_woken(&w->spin, pool->submit_cpu);
      worked = 1;
      unqueue(pool, work);
      work->worker = w;
      w->job = work;
      atomic_store(&work->state, LOOM_WORK_RUNNING);
      uv_mutex_unlock(&pool->lock);
      work->run(work, w->thread_data);
      uv_mutex_lock(&pool->lock);
      w->job = NULL;
      work->worker = NULL;
      if (work->drop) {
        /* Abandoned: its loop no longer waits for it. */
        void (*drop)(loom_work_t *) = work->drop;
        atomic_store(&work->state, LOOM_WORK_FINISHED);
        uv_mutex_unlock(&pool->lock);
        drop(work);
        pool_release(pool);
        uv_mutex_lock(&pool->lock);
      } else {
        finish(work, 0);
        if (pool->hooks.after_job && !w->stuck) {
          uv_mutex_unlock(&pool->lock);
          pool->hooks.after_job(w->thread_data);
          uv_mutex_lock(&pool->lock);
        }
      }
      if (w->stuck)
        break; /* its replacement serves the queue */
      continue;
    }
    if (pool->closed)
      break;
    if (worked) {
      worked = 0;
      atomic_fetch_add(&pool->spinning, 1);
      uv_mutex_unlock(&pool->lock);
      spin_for_job(w);
      /* Before the queue is looked at again under the lock: a submit that
       * still counts this worker finds the job taken below. */
      atomic_fetch_sub(&pool->spinning, 1);
      uv_mutex_lock(&pool->lock);
      continue;
    }
    w->idle = 1;
    uv_mutex_unlock(&pool->lock);
    /* Referenced only while idle: inside a job the loop is the job's, and
     * must look alive only for the job's own handles. */
    uv_ref((uv_handle_t *)&w->job_async);
    loom_loop_poll(&w->loop, -1);
    uv_unref((uv_handle_t *)&w->job_async);
    uv_mutex_lock(&pool->lock);
    w->idle = 0;
  }
  uv_mutex_unlock(&pool->lock);
}

static void *worker_main(void *arg) {
  loom_worker_t *w = arg;
  loom_workers_t *pool = w->pool;
#ifdef __linux__
  pthread_setname_np(pthread_self(), "loom-worker");
  /* who 0: this thread alone (Linux keeps nice values per thread). */
  errno = 0;
  int prio = getpriority(PRIO_PROCESS, 0);
  if (errno == 0 && pool->nice > 0)
    (void)setpriority(PRIO_PROCESS, 0, prio + pool->nice > 19 ? 19 : prio + pool->nice);
#endif
  loom_spin_init(&w->spin);
  int ok = loom_loop_init(&w->loop) == 0;
  if (ok && uv_async_init(&w->loop.uv, &w->job_async, job_async_cb) != 0) {
    loom_loop_close(&w->loop);
    ok = 0;
  }
  w->failed = !ok;
  if (w->announce)
    uv_sem_post(&pool->started);
  if (ok) {
    uv_unref((uv_handle_t *)&w->job_async);
    if (pool->hooks.thread_start)
      w->thread_data = pool->hooks.thread_start(&w->loop, pool->hooks_data);
    run_jobs(w);
    if (pool->hooks.thread_stop)
      pool->hooks.thread_stop(w->thread_data);
    loom_loop_close(&w->loop);
  }
  /* The last thread out hands its reference to the closed post, and the
   * others let go of theirs before it can: whoever waits for closed finds
   * the pool freed when nothing else holds it. */
  uv_mutex_lock(&pool->lock);
  /* The slot is free for a replacement once its loop is closed. */
  w->used = 0;
  if (w->stuck)
    pool->stuck--;
  w->stuck = 0;
  int last = --pool->live == 0;
  loom_loop_t *notify = pool->closed_cb ? pool->closed_loop : NULL;
  if (!last)
    pool_release(pool);
  uv_mutex_unlock(&pool->lock);
  if (last && notify) {
    pool->closed_post.cb = closed_posted;
    loom_loop_post(notify, &pool->closed_post);
  } else if (last) {
    pool_release(pool);
  }
  return NULL;
}

/* Under lock: starts a thread on the free slot w. */
static int start_worker(loom_workers_t *pool, loom_worker_t *w, int announce) {
  pthread_attr_t attr;
  if (pthread_attr_init(&attr) != 0)
    return -1;
  memset(w, 0, sizeof *w);
  w->pool = pool;
  w->announce = announce;
  w->used = 1;
  pool->live++;
  atomic_fetch_add(&pool->refs, 1);
  /* Detached: closing never joins, so a thread stuck in a blocking call
   * cannot hold its pool's owner; it ends on its own when the call does. */
  pthread_t tid;
  int rc = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  if (rc == 0)
    rc = pthread_create(&tid, &attr, worker_main, w);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    w->used = 0;
    pool->live--;
    atomic_fetch_sub(&pool->refs, 1);
    return -1;
  }
  return 0;
}

loom_workers_t *loom_workers_new(unsigned size, int nice, const loom_workers_hooks_t *hooks,
                                 void *hooks_data) {
  if (size == 0)
    size = uv_available_parallelism();
  loom_workers_t *pool = calloc(1, sizeof *pool);
  if (pool)
    pool->workers = calloc(size + LOOM_WORKERS_SPARE, sizeof *pool->workers);
  if (pool == NULL || pool->workers == NULL || uv_mutex_init(&pool->lock) != 0)
    goto fail;
  if (uv_sem_init(&pool->started, 0) != 0) {
    uv_mutex_destroy(&pool->lock);
    goto fail;
  }
  if (hooks)
    pool->hooks = *hooks;
  pool->hooks_data = hooks_data;
  pool->size = size;
  pool->nice = nice;
  pool->slots = size + LOOM_WORKERS_SPARE;
  atomic_init(&pool->refs, 1);
  atomic_init(&pool->holders, 1);

  int failed = 0;
  unsigned started = 0;
  uv_mutex_lock(&pool->lock);
  for (; started < size; started++) {
    if (start_worker(pool, &pool->workers[started], 1) != 0) {
      failed = 1;
      break;
    }
  }
  uv_mutex_unlock(&pool->lock);
  for (unsigned i = 0; i < started; i++)
    uv_sem_wait(&pool->started);
  for (unsigned i = 0; i < started; i++)
    failed |= pool->workers[i].failed;
  if (failed) {
    loom_workers_unref(pool);
    return NULL;
  }
  return pool;

fail:
  if (pool)
    free(pool->workers);
  free(pool);
  if (hooks && hooks->destroy)
    hooks->destroy(hooks_data);
  return NULL;
}

unsigned loom_workers_size(const loom_workers_t *pool) { return pool->size; }

void loom_workers_ref(loom_workers_t *pool) {
  atomic_fetch_add(&pool->holders, 1);
  atomic_fetch_add(&pool->refs, 1);
}

void loom_workers_unref(loom_workers_t *pool) {
  if (atomic_fetch_sub(&pool->holders, 1) == 1)
    loom_workers_close(pool, NULL, NULL, NULL);
  pool_release(pool);
}

int loom_workers_submit(loom_workers_t *pool, loom_loop_t *loop,
                        loom_work_t *work) {
  uv_mutex_lock(&pool->lock);
  if (pool->closed) {
    uv_mutex_unlock(&pool->lock);
    return LOOM_ECLOSED;
  }
  atomic_fetch_add(&pool->refs, 1);
  work->pool = pool;
  work->loop = loop;
  work->worker = NULL;
  work->drop = NULL;
  work->status = 0;
  atomic_store(&work->cancelled, 0);
  atomic_store(&work->state, LOOM_WORK_QUEUED);
  LOOM_LIST_APPEND(pool->head, pool->tail, work);
  atomic_fetch_add_explicit(&pool->queued, 1, memory_order_relaxed);
  /* Workers watching the queue take as many jobs as they are: waking an
   * idle one as well would cost a system call, and a thread contending
   * for the cores, for a job already taken. */
  int wake = atomic_load(&pool->queued) > atomic_load(&pool->spinning);
  for (unsigned i = 0; wake && i < pool->slots; i++) {
    loom_worker_t *w = &pool->workers[i];
    if (w->used && w->idle) {
      w->idle = 0;
      pool->submit_cpu = loom_spin_cpu();
      uv_async_send(&w->job_async);
      break;
    }
  }
  uv_mutex_unlock(&pool->lock);
  loom_loop_expect(loop, 1);
  return 0;
}

int loom_work_cancel(loom_work_t *work) {
  /* Idle: done ran on this thread, and the pool may be gone. */
  if (atomic_load(&work->state) == LOOM_WORK_IDLE)
    return LOOM_WORK_IDLE;
  loom_workers_t *pool = work->pool;
  uv_mutex_lock(&pool->lock);
  int state = atomic_load(&work->state);
  if (state == LOOM_WORK_QUEUED) {
    unqueue(pool, work);
    finish(work, LOOM_ECANCELED);
  } else if (state == LOOM_WORK_RUNNING) {
    interrupt(pool, work->worker);
  }
  uv_mutex_unlock(&pool->lock);
  return state;
}

static void drop_nothing(loom_work_t *work) { (void)work; }

int loom_work_abandon(loom_work_t *work, void (*drop)(loom_work_t *work)) {
  if (atomic_load(&work->state) == LOOM_WORK_IDLE)
    return LOOM_WORK_IDLE;
  loom_workers_t *pool = work->pool;
  uv_mutex_lock(&pool->lock);
  int state = atomic_load(&work->state);
  if (state == LOOM_WORK_RUNNING)
    work->drop = drop ? drop : drop_nothing;
  uv_mutex_unlock(&pool->lock);
  if (state == LOOM_WORK_RUNNING)
    loom_loop_expect(work->loop, -1);
  return state;
}

int loom_work_replace(loom_work_t *work) {
  if (atomic_load(&work->state) == LOOM_WORK_IDLE)
    return 0;
  loom_workers_t *pool = work->pool;
  int replaced = 0;
  uv_mutex_lock(&pool->lock);
  loom_worker_t *w = atomic_load(&work->state) == LOOM_WORK_RUNNING ? work->worker : NULL;
  /* Fewer than SPARE replaced threads alive: a slot is free (the others
   * hold at most size threads that serve, and those replaced). */
  if (w && !w->stuck && !pool->closed && pool->stuck < LOOM_WORKERS_SPARE) {
    for (unsigned i = 0; i < pool->slots; i++) {
      if (pool->workers[i].used)
        continue;
      if (start_worker(pool, &pool->workers[i], 0) == 0) {
        w->stuck = 1;
        pool->stuck++;
        replaced = 1;
      }
      break;
    }
  }
  uv_mutex_unlock(&pool->lock);
  return replaced;
}

unsigned loom_workers_threads(loom_workers_t *pool) {
  uv_mutex_lock(&pool->lock);
  unsigned n = pool->live;
  uv_mutex_unlock(&pool->lock);
  return n;
}

int loom_work_cancelled(const loom_work_t *work) {
  return atomic_load(&work->cancelled);
}

int loom_work_state(const loom_work_t *work) {
  return atomic_load(&work->state);
}

int loom_workers_close(loom_workers_t *pool, loom_loop_t *loop,
                       void (*closed)(loom_workers_t *pool, void *arg),
                       void *arg) {
  uv_mutex_lock(&pool->lock);
  if (pool->closed) {
    uv_mutex_unlock(&pool->lock);
    return LOOM_ECLOSED;
  }
  pool->closed = 1;
  if (closed) {
    pool->closed_loop = loop;
    pool->closed_cb = closed;
    pool->closed_arg = arg;
    loom_loop_expect(loop, 1);
    /* No thread left to hand over its reference (the pool never started
     * one): the post takes its own. */
    if (pool->live == 0) {
      atomic_fetch_add(&pool->refs, 1);
      pool->closed_post.cb = closed_posted;
      loom_loop_post(loop, &pool->closed_post);
    }
  }
  loom_work_t *work;
  while ((work = pool->head) != NULL) {
    unqueue(pool, work);
    finish(work, LOOM_ECLOSED);
  }
  for (unsigned i = 0; i < pool->slots; i++) {
    loom_worker_t *w = &pool->workers[i];
    if (!w->used)
      continue;
    if (w->job)
      interrupt(pool, w);
    else if (w->idle) {
      w->idle = 0;
      uv_async_send(&w->job_async);
    }
  }
  uv_mutex_unlock(&pool->lock);
  return 0;
}
