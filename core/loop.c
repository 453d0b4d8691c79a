/* One libuv loop per loom context. Never uv_default_loop(): two contexts on
 * two threads must not share anything. */
#include <stdatomic.h>
#include <string.h>
#include "loom.h"

void loom__timer_heap_init(loom_loop_t *loop);
void loom__timer_heap_free(loom_loop_t *loop);

static void wakeup_cb(uv_async_t *handle) {
  loom_loop_t *loop = handle->data;
  if (loop->on_wake)
    loop->on_wake(loop);
}

/* Runs what other threads posted, oldest first. */
static int run_posts(loom_loop_t *loop) {
  loom_post_t *p = atomic_exchange(&loop->post_stack, NULL);
  if (p == NULL)
    return 0;
  loom_post_t *fifo = NULL;
  while (p) {
    loom_post_t *next = p->next;
    p->next = fifo;
    fifo = p;
    p = next;
  }
  int n = 0;
  while (fifo) {
    loom_post_t *next = fifo->next;
    fifo->cb(fifo);
    fifo = next;
    n++;
  }
  loop->posts_run += n;
  return n;
}

static void posted_cb(uv_async_t *handle) { run_posts(handle->data); }

int loom_loop_run_posts(loom_loop_t *loop) { return run_posts(loop); }

void loom_loop_post(loom_loop_t *loop, loom_post_t *p) {
  loom_post_t *head = atomic_load(&loop->post_stack);
  do
    p->next = head;
  while (!atomic_compare_exchange_weak(&loop->post_stack, &head, p));
  /* Pairs with the loop clearing `spinning` before it looks once more: one
   * of the two always sees the other. */
  if (!atomic_load(&loop->spinning)) {
    atomic_store_explicit(&loop->poster_cpu, loom_spin_cpu(), memory_order_relaxed);
    uv_async_send(&loop->posted);
  }
}

void loom_loop_expect(loom_loop_t *loop, int64_t n) {
  int64_t before = loop->expecting;
  loop->expecting += n;
  if (before <= 0 && loop->expecting > 0)
    uv_ref((uv_handle_t *)&loop->posted);
  else if (before > 0 && loop->expecting <= 0)
    uv_unref((uv_handle_t *)&loop->posted);
}

int loom_loop_init(loom_loop_t *loop) {
  memset(loop, 0, sizeof *loop);
  int r = uv_loop_init(&loop->uv);
  if (r)
    return r;
  loom__timer_heap_init(loop);
  loom_spin_init(&loop->spin);
  uv_timer_init(&loop->uv, &loop->heap_timer);
  uv_timer_init(&loop->uv, &loop->poll_timer);
  r = uv_async_init(&loop->uv, &loop->wakeup, wakeup_cb);
  if (r) {
    uv_close((uv_handle_t *)&loop->heap_timer, NULL);
    uv_close((uv_handle_t *)&loop->poll_timer, NULL);
    uv_run(&loop->uv, UV_RUN_DEFAULT);
    uv_loop_close(&loop->uv);
    return r;
  }
  loop->wakeup.data = loop;
  r = uv_async_init(&loop->uv, &loop->posted, posted_cb);
  if (r) {
    uv_close((uv_handle_t *)&loop->wakeup, NULL);
    uv_close((uv_handle_t *)&loop->heap_timer, NULL);
    uv_close((uv_handle_t *)&loop->poll_timer, NULL);
    uv_run(&loop->uv, UV_RUN_DEFAULT);
    uv_loop_close(&loop->uv);
    return r;
  }
  loop->posted.data = loop;
  uv_unref((uv_handle_t *)&loop->posted);
  /* Only real work keeps the loop alive: an idle wake-up handle or the
   * bound of a poll must not make loom_loop_alive() report pending work. */
  uv_unref((uv_handle_t *)&loop->wakeup);
  uv_unref((uv_handle_t *)&loop->poll_timer);
  loop->poll_end_ns = loop->last_run_ns = uv_hrtime();
  loop->initialized = 1;
  return 0;
}

static void close_any(uv_handle_t *handle, void *arg) {
  (void)arg;
  if (!uv_is_closing(handle))
    uv_close(handle, NULL);
}

int loom_loop_close(loom_loop_t *loop) {
  if (!loop->initialized)
    return 0;
  loop->initialized = 0;
  /* Work still out on other threads comes back first: its owners free it
   * there, and worker threads are joined by them. */
  while (loop->expecting > 0 && uv_run(&loop->uv, UV_RUN_ONCE))
    ;
  run_posts(loop);
  /* A pool closed with connects in flight frees itself when they end; give
   * them a few seconds rather than leak them. */
  uint64_t deadline = uv_hrtime() + 5000000000ull;
  while (loop->draining > 0 && uv_hrtime() < deadline)
    loom_loop_poll(loop, 50);
  loom__timer_heap_free(loop);
  uv_walk(&loop->uv, close_any, NULL);
  uv_run(&loop->uv, UV_RUN_DEFAULT);
  return uv_loop_close(&loop->uv);
}

static void poll_timer_cb(uv_timer_t *handle) { (void)handle; }

/* How long at most a poll answers from posts alone without letting libuv
 * look at sockets and timers. */
#define FAIRNESS_NS 1000000

/* Watches for expected posts before the poll sleeps in the kernel
 * (core/spin.h says for how long). */
static int posts_waiting(void *loop) {
  return atomic_load_explicit(&((loom_loop_t *)loop)->post_stack, memory_order_relaxed) != NULL;
}

static int spin_for_posts(loom_loop_t *loop) {
  uint64_t start = uv_hrtime();
  if (start - loop->last_run_ns > FAIRNESS_NS)
    return 0;
  atomic_store(&loop->spinning, 1);
  int seen = loom_spin_until(&loop->spin, start, posts_waiting, loop);
  atomic_store(&loop->spinning, 0);
  return run_posts(loop) > 0 || seen;
}

int loom_loop_poll(loom_loop_t *loop, int64_t timeout_ms) {
  if (timeout_ms != 0 && loop->expecting > 0 && spin_for_posts(loop)) {
    loop->poll_end_ns = uv_hrtime();
    return 1;
  }
  if (timeout_ms == 0) {
    /* uv_run does not poll a loop with no referenced work, yet a wake-up
     * may be pending on its fd: left there, it keeps the fd readable and
     * a host that polls the fd spins. Never blocks: this poll is NOWAIT. */
    uv_ref((uv_handle_t *)&loop->wakeup);
    uv_run(&loop->uv, UV_RUN_NOWAIT);
    uv_unref((uv_handle_t *)&loop->wakeup);
    loop->poll_end_ns = loop->last_run_ns = uv_hrtime();
    return uv_loop_alive(&loop->uv);
  }
  if (timeout_ms > 0)
    uv_timer_start(&loop->poll_timer, poll_timer_cb, (uint64_t)timeout_ms, 0);
  int64_t posts_before = loop->posts_run;
  int alive = uv_run(&loop->uv, UV_RUN_ONCE);
  if (loop->posts_run != posts_before)
    loom_spin_woken(&loop->spin, atomic_load_explicit(&loop->poster_cpu, memory_order_relaxed));
  else
    loom_spin_forget(&loop->spin);
  /* libuv looked at sockets and timers as this run ended, not as it
   * began: a run that slept long in epoll polled just now. Read once a
   * poll, after it, and shared (loom_loop_poll_end_ns): a loop that echoes
   * small messages polls a few hundred thousand times a second. */
  loop->poll_end_ns = loop->last_run_ns = uv_hrtime();
  if (timeout_ms > 0)
    uv_timer_stop(&loop->poll_timer);
  return alive;
}

uint64_t loom_loop_poll_end_ns(const loom_loop_t *loop) { return loop->poll_end_ns; }

int loom_loop_alive(const loom_loop_t *loop) {
  return uv_loop_alive(&loop->uv);
}

int loom_loop_fd(const loom_loop_t *loop) { return uv_backend_fd(&loop->uv); }

int64_t loom_loop_next_timeout(loom_loop_t *loop) {
  if (!uv_loop_alive(&loop->uv))
    return -1;
  /* libuv's own answer for embedders, not the heap's deadline: a step
   * polls libuv, and libuv fires the heap's timer by its millisecond clock,
   * up to a millisecond after the heap's deadline. Told 0 from the heap
   * then, a host would step in vain and spin until that clock ticks.
   * It also says 0 whenever libuv holds work the backend fd does not
   * announce: a watcher's new or changed interest (a new connection's
   * socket) reaches the kernel only in libuv's next poll (libuv >= 1.44
   * counts that in), and pending and close callbacks run only there too.
   * Its timers are measured from the loop's cached time: bring that up to
   * now, or a host would sleep past them. */
  uv_update_time(&loop->uv);
  int64_t ms = uv_backend_timeout(&loop->uv);
#if UV_VERSION_HEX < 0x012c00 && !defined(_WIN32)
  /* Older libuv leaves the interest out of its answer: look at its queue
   * of watchers waiting for the kernel ourselves (empty: points to itself). */
  if (loop->uv.watcher_queue[0] != (void *)loop->uv.watcher_queue)
    ms = 0;
#endif
  return ms;
}

int loom_loop_wake(loom_loop_t *loop) { return uv_async_send(&loop->wakeup); }

const char *loom_strerror(int status) {
  switch (status) {
  case LOOM_OK: return "ok";
  case LOOM_EAGAIN: return "would wait";
  case LOOM_ETIMEDOUT: return "timed out";
  case LOOM_ECANCELED: return "cancelled";
  case LOOM_ECLOSED: return "closed";
  case LOOM_ENOMEM: return "out of memory";
  default: return uv_strerror(status);
  }
}
