/* Timers as entries in a binary min-heap ordered by deadline. One libuv
 * timer per loop is armed for the earliest entry; 100k sleepers cost one
 * heap slot each and no libuv handle. */
#include <stdlib.h>
#include "loom.h"

/* libuv's clock has millisecond steps, so its timer may fire up to a
 * millisecond before a nanosecond deadline: treat that as due rather than
 * re-arming for a sliver. */
#define LOOM_TIMER_SLACK_NS 1000000u

uint64_t loom_now_ns(void) { return uv_hrtime(); }

void loom_timer_init(loom_timer_t *t, loom_timer_cb cb, void *data) {
  t->due_ns = 0;
  t->pos = 0;
  t->cb = cb;
  t->data = data;
}

/* A binary heap is not stable by itself: without the arming order as a
 * tie-break, timers sharing a deadline (armed within one tick of a coarse
 * clock) would fire in whatever order the sifting left them. */
static int before(const loom_timer_t *a, const loom_timer_t *b) {
  return a->due_ns < b->due_ns ||
         (a->due_ns == b->due_ns && a->seq < b->seq);
}

static void place(loom_loop_t *loop, unsigned i, loom_timer_t *t) {
  loop->heap[i] = t;
  t->pos = i + 1;
}

static void sift_up(loom_loop_t *loop, unsigned i) {
  loom_timer_t *t = loop->heap[i];
  while (i > 0) {
    unsigned parent = (i - 1) / 2;
    if (!before(t, loop->heap[parent]))
      break;
    place(loop, i, loop->heap[parent]);
    i = parent;
  }
  place(loop, i, t);
}

static void sift_down(loom_loop_t *loop, unsigned i) {
  loom_timer_t *t = loop->heap[i];
  unsigned n = loop->heap_len;
  for (;;) {
    unsigned child = 2 * i + 1;
    if (child >= n)
      break;
    if (child + 1 < n && before(loop->heap[child + 1], loop->heap[child]))
      child++;
    if (!before(loop->heap[child], t))
      break;
    place(loop, i, loop->heap[child]);
    i = child;
  }
  place(loop, i, t);
}

static void heap_timer_cb(uv_timer_t *handle);

/* Keeps the libuv timer aimed at the heap's minimum, restarting it only when
 * that deadline changed. */
static void rearm(loom_loop_t *loop) {
  if (loop->heap_len == 0) {
    if (loop->armed_due_ns) {
      uv_timer_stop(&loop->heap_timer);
      loop->armed_due_ns = 0;
    }
    return;
  }
  uint64_t due = loop->heap[0]->due_ns;
  if (due == loop->armed_due_ns)
    return;
  uint64_t now = uv_hrtime();
  uint64_t ms = due > now ? (due - now + 999999u) / 1000000u : 0;
  /* libuv measures the delay from its cached loop time, which may lag the
   * clock while tasks run: bring it up to date so the timer is not early. */
  uv_update_time(&loop->uv);
  uv_timer_start(&loop->heap_timer, heap_timer_cb, ms, 0);
  loop->armed_due_ns = due;
}

static void heap_remove_at(loom_loop_t *loop, unsigned i) {
  loom_timer_t *t = loop->heap[i];
  loom_timer_t *last = loop->heap[--loop->heap_len];
  t->pos = 0;
  if (i == loop->heap_len)
    return;
  place(loop, i, last);
  if (i > 0 && before(last, loop->heap[(i - 1) / 2]))
    sift_up(loop, i);
  else
    sift_down(loop, i);
}

static void heap_timer_cb(uv_timer_t *handle) {
  loom_loop_t *loop = handle->data;
  uint64_t now = uv_hrtime() + LOOM_TIMER_SLACK_NS;
  int fired = 0;
  loop->armed_due_ns = 0;
  while (loop->heap_len > 0 && loop->heap[0]->due_ns <= now) {
    loom_timer_t *t = loop->heap[0];
    heap_remove_at(loop, 0);
    t->cb(t);
    fired = 1;
  }
  rearm(loop);
  /* libuv runs due timers before it polls: what they woke must run before
   * the poll blocks until some later, unrelated event. */
  if (fired)
    uv_stop(&loop->uv);
}

int loom_timer_start(loom_loop_t *loop, loom_timer_t *t, uint64_t delay_ns) {
  if (t->pos)
    loom_timer_stop(loop, t);
  if (loop->heap_len == loop->heap_cap) {
    unsigned cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
    loom_timer_t **heap = realloc(loop->heap, cap * sizeof *heap);
    if (heap == NULL)
      return LOOM_ENOMEM;
    loop->heap = heap;
    loop->heap_cap = cap;
  }
  t->due_ns = uv_hrtime() + delay_ns;
  t->seq = loop->timer_seq++;
  loop->heap[loop->heap_len++] = t;
  sift_up(loop, loop->heap_len - 1);
  if (t->pos == 1)
    rearm(loop);
  return 0;
}

void loom_timer_stop(loom_loop_t *loop, loom_timer_t *t) {
  if (t->pos == 0)
    return;
  int was_first = t->pos == 1;
  heap_remove_at(loop, t->pos - 1);
  if (was_first)
    rearm(loop);
}

size_t loom_timer_count(const loom_loop_t *loop) { return loop->heap_len; }

void loom__timer_heap_init(loom_loop_t *loop) {
  loop->heap = NULL;
  loop->heap_len = loop->heap_cap = 0;
  loop->armed_due_ns = 0;
  loop->heap_timer.data = loop;
}

void loom__timer_heap_free(loom_loop_t *loop) {
  for (unsigned i = 0; i < loop->heap_len; i++)
    loop->heap[i]->pos = 0;
  free(loop->heap);
  loop->heap = NULL;
  loop->heap_len = loop->heap_cap = 0;
}
