/* The timer heap: deadline order, ties in arming order, stops, scale, and
 * timers armed again from their own callbacks. */
#include <string.h>
#include <time.h>
#include "runner.h"

/* A link seam for the clock: the core reads time only through uv_hrtime,
 * and this definition wins over libuv's. While frozen, every timer armed
 * gets the same deadline, which a real clock almost never produces. */
static uint64_t frozen_ns;

uint64_t uv_hrtime(void) {
  if (frozen_ns)
    return frozen_ns;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#define MS 1000000u
/* The core fires a timer up to this much early rather than re-arm for a
 * sliver (see LOOM_TIMER_SLACK_NS in core/timer.c). */
#define SLACK_NS (1 * MS)

typedef struct {
  loom_timer_t t;
  int id;
  int fired;
  uint64_t due_ns;
  int *order;
  int *n;
} rec_timer;

static void rec_cb(loom_timer_t *t) {
  rec_timer *r = t->data;
  ASSERT(!loom_timer_active(t));
  ASSERT(loom_now_ns() + SLACK_NS >= r->due_ns);
  r->fired++;
  r->order[(*r->n)++] = r->id;
}

static void rec_start(loom_loop_t *loop, rec_timer *r, int id, uint64_t ns,
                      int *order, int *n) {
  loom_timer_init(&r->t, rec_cb, r);
  r->id = id;
  r->fired = 0;
  r->order = order;
  r->n = n;
  r->due_ns = loom_now_ns() + ns;
  ASSERT_EQ(loom_timer_start(loop, &r->t, ns), 0);
  ASSERT(loom_timer_active(&r->t));
}

static void run_until(loom_loop_t *loop, const int *n, int want) {
  uint64_t give_up = loom_now_ns() + 5000 * MS;
  while (*n < want) {
    ASSERT(loom_now_ns() < give_up);
    loom_loop_poll(loop, -1);
  }
}

TEST_IMPL(timer_heap_order) {
  static const unsigned delays[] = {30, 10, 20, 5, 25, 15, 1, 12};
  enum { N = sizeof delays / sizeof delays[0] };
  loom_loop_t loop;
  rec_timer r[N];
  int order[N], n = 0;
  loom_test_loop_init(&loop);
  for (int i = 0; i < N; i++)
    rec_start(&loop, &r[i], i, delays[i] * MS, order, &n);
  ASSERT_EQ(loom_timer_count(&loop), N);
  run_until(&loop, &n, N);
  static const int want[] = {6, 3, 1, 7, 5, 2, 4, 0};
  for (int i = 0; i < N; i++)
    ASSERT_EQ(order[i], want[i]);
  ASSERT_EQ(loom_timer_count(&loop), 0);
  ASSERT(!loom_loop_alive(&loop));
  loom_test_loop_close(&loop);
}

TEST_IMPL(timer_equal_deadlines_fifo) {
  enum { N = 16 };
  loom_loop_t loop;
  rec_timer r[N];
  int order[N], n = 0;
  loom_test_loop_init(&loop);
  frozen_ns = uv_hrtime();
  for (int i = 0; i < N; i++)
    rec_start(&loop, &r[i], i, 5 * MS, order, &n);
  frozen_ns = 0;
  run_until(&loop, &n, N);
  for (int i = 0; i < N; i++)
    ASSERT_EQ(order[i], i);
  loom_test_loop_close(&loop);
}

TEST_IMPL(timer_stop_pending) {
  loom_loop_t loop;
  rec_timer r[4];
  int order[4], n = 0;
  loom_test_loop_init(&loop);
  for (int i = 0; i < 4; i++)
    rec_start(&loop, &r[i], i, (uint64_t)(i + 1) * 5 * MS, order, &n);
  loom_timer_stop(&loop, &r[1].t);
  ASSERT(!loom_timer_active(&r[1].t));
  ASSERT_EQ(loom_timer_count(&loop), 3);
  /* Stopping twice is harmless. */
  loom_timer_stop(&loop, &r[1].t);
  ASSERT_EQ(loom_timer_count(&loop), 3);
  run_until(&loop, &n, 3);
  ASSERT_EQ(order[0], 0);
  ASSERT_EQ(order[1], 2);
  ASSERT_EQ(order[2], 3);
  /* r[2] fired after r[1]'s old deadline had passed. */
  ASSERT_EQ(r[1].fired, 0);
  loom_test_loop_close(&loop);
}

/* Stopping the earliest timer must re-aim the loop at the next one, neither
 * firing early nor sleeping until the stopped deadline. */
TEST_IMPL(timer_stop_earliest_rearms) {
  loom_loop_t loop;
  rec_timer first, later;
  int order[2], n = 0;
  loom_test_loop_init(&loop);
  /* Hands the new loop's own watchers to the kernel: until then a host is
   * told to poll at once, whatever the timers say. */
  loom_loop_poll(&loop, 0);
  rec_start(&loop, &later, 1, 40 * MS, order, &n);
  rec_start(&loop, &first, 0, 5 * MS, order, &n);
  ASSERT(loom_loop_next_timeout(&loop) <= 5);
  loom_timer_stop(&loop, &first.t);
  int64_t next = loom_loop_next_timeout(&loop);
  ASSERT(next > 5 && next <= 40);
  uint64_t start = loom_now_ns();
  run_until(&loop, &n, 1);
  ASSERT_EQ(order[0], 1);
  ASSERT(loom_now_ns() - start + SLACK_NS >= 30 * MS);
  ASSERT_EQ(first.fired, 0);
  ASSERT_EQ(loom_loop_next_timeout(&loop), -1);
  loom_test_loop_close(&loop);
}

typedef struct {
  loom_timer_t t;
  int index;
} many_timer;

static int many_last_index = -1;
static uint64_t many_last_due;
static int many_fired;

static void many_cb(loom_timer_t *t) {
  many_timer *m = (many_timer *)t;
  /* Deadlines never go backwards; ties keep arming order. */
  ASSERT(t->due_ns >= many_last_due);
  if (t->due_ns == many_last_due)
    ASSERT(m->index > many_last_index);
  many_last_due = t->due_ns;
  many_last_index = m->index;
  many_fired++;
}

TEST_IMPL(timer_many) {
  enum { N = 20000 };
  loom_loop_t loop;
  many_timer *ts = calloc(N, sizeof *ts);
  ASSERT(ts != NULL);
  uint32_t x = 12345;
  loom_test_loop_init(&loop);
  int stopped = 0;
  for (int i = 0; i < N; i++) {
    x = x * 1103515245u + 12345u;
    /* Freeze the clock for runs of arms so the heap sees many ties. */
    if (i % 64 == 0) {
      frozen_ns = 0;
      if ((i / 64) % 2)
        frozen_ns = uv_hrtime();
    }
    ts[i].index = i;
    loom_timer_init(&ts[i].t, many_cb, NULL);
    ASSERT_EQ(loom_timer_start(&loop, &ts[i].t, (x >> 8) % 40 * MS), 0);
  }
  frozen_ns = 0;
  for (int i = 0; i < N; i += 7) {
    loom_timer_stop(&loop, &ts[i].t);
    stopped++;
  }
  ASSERT_EQ(loom_timer_count(&loop), N - stopped);
  uint64_t give_up = loom_now_ns() + 5000 * MS;
  while (many_fired < N - stopped) {
    ASSERT(loom_now_ns() < give_up);
    loom_loop_poll(&loop, -1);
  }
  ASSERT_EQ(loom_timer_count(&loop), 0);
  for (int i = 0; i < N; i++)
    ASSERT(!loom_timer_active(&ts[i].t));
  loom_test_loop_close(&loop);
  free(ts);
}

typedef struct {
  loom_timer_t t;
  loom_loop_t *loop;
  int fired;
  int rounds;
  uint64_t delay_ns;
  uint64_t stamps[8];
} again_timer;

static void again_cb(loom_timer_t *t) {
  again_timer *a = t->data;
  if (a->fired < 8)
    a->stamps[a->fired] = loom_now_ns();
  a->fired++;
  if (a->fired < a->rounds)
    ASSERT_EQ(loom_timer_start(a->loop, t, a->delay_ns), 0);
}

TEST_IMPL(timer_restart_from_callback) {
  loom_loop_t loop;
  again_timer a = {.loop = &loop, .rounds = 5, .delay_ns = 4 * MS};
  loom_test_loop_init(&loop);
  loom_timer_init(&a.t, again_cb, &a);
  uint64_t start = loom_now_ns();
  ASSERT_EQ(loom_timer_start(&loop, &a.t, a.delay_ns), 0);
  while (loom_loop_poll(&loop, -1)) {}
  ASSERT_EQ(a.fired, 5);
  /* Each round waited its own delay after the previous one fired. */
  ASSERT(a.stamps[0] + SLACK_NS >= start + a.delay_ns);
  for (int i = 1; i < 5; i++)
    ASSERT(a.stamps[i] + SLACK_NS >= a.stamps[i - 1] + a.delay_ns);
  ASSERT_EQ(loom_timer_count(&loop), 0);
  loom_test_loop_close(&loop);
}

/* A zero-delay timer armed again from its callback is due at once, in the
 * middle of the dispatch that ran it: it must neither be lost nor keep a
 * later timer from firing when that one falls due. */
static again_timer *spinner;

static void stop_spinner_cb(loom_timer_t *t) {
  int *fired = t->data;
  *fired = 1;
  spinner->rounds = spinner->fired + 1;
}

TEST_IMPL(timer_zero_delay_from_callback) {
  loom_loop_t loop;
  again_timer a = {.loop = &loop, .rounds = 1 << 30, .delay_ns = 0};
  loom_timer_t stopper;
  int stopper_fired = 0;
  spinner = &a;
  loom_test_loop_init(&loop);
  loom_timer_init(&a.t, again_cb, &a);
  loom_timer_init(&stopper, stop_spinner_cb, &stopper_fired);
  ASSERT_EQ(loom_timer_start(&loop, &stopper, 10 * MS), 0);
  ASSERT_EQ(loom_timer_start(&loop, &a.t, 0), 0);
  uint64_t give_up = loom_now_ns() + 5000 * MS;
  while (loom_loop_poll(&loop, -1))
    ASSERT(loom_now_ns() < give_up);
  ASSERT(stopper_fired);
  ASSERT(a.fired >= 2);
  ASSERT_EQ(a.fired, a.rounds);
  ASSERT_EQ(loom_timer_count(&loop), 0);
  loom_test_loop_close(&loop);
}
