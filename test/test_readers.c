/* The shared readers of a one-writer layout (core/db/readers.c): which
 * reader a read joins, when one more is opened, when reads wait, and the
 * queue of short reads. Against a fake driver, with no pool: routing is
 * bookkeeping only. */
#include <string.h>
#include "runner.h"
#include "readers.h"

static int short_answer;
static int inline_answer;

static int fake_is_short(loom_db_conn_t *c, loom_db_req_t *req) {
  (void)c; (void)req;
  return short_answer;
}

static int fake_try_inline(loom_db_conn_t *c, loom_db_req_t *req) {
  (void)c; (void)req;
  return inline_answer;
}

static loom_db_driver_t fake = {.name = "fake", .is_short = fake_is_short,
                                .try_inline = fake_try_inline, .one_writer = 1};

static void setup(loom_readers_t *r, int target) {
  memset(r, 0, sizeof *r);
  r->driver = &fake;
  r->target = target;
  loom_waitq_init(&r->waiters);
}

TEST_IMPL(readers_none_go_to_pool) {
  loom_readers_t r;
  int slot = -1;
  setup(&r, 0);
  ASSERT_EQ(loom_readers_route(&r, &slot), LOOM_READ_POOL);
  ASSERT_EQ(r.pending, 0);
}

TEST_IMPL(readers_grow_then_wait) {
  loom_readers_t r;
  loom_db_conn_t a = {0}, b = {0};
  int slot = -1;
  setup(&r, 2);
  /* A fresh handle: the first reads each open a reader, up to the target;
   * the next wait for them instead of taking connections of their own. */
  ASSERT_EQ(loom_readers_route(&r, &slot), LOOM_READ_GROW);
  ASSERT_EQ(loom_readers_route(&r, &slot), LOOM_READ_GROW);
  ASSERT_EQ(r.pending, 2);
  ASSERT_EQ(loom_readers_route(&r, &slot), LOOM_READ_WAIT);
  ASSERT_EQ(loom_readers_add(&r, &a), 0);
  loom_readers_settled(&r, 1);
  ASSERT_EQ(r.inflight[0], 1);
  /* One reader busy and one coming: a read joins the busy one. */
  ASSERT_EQ(loom_readers_route(&r, &slot), LOOM_READ_JOIN);
  ASSERT_EQ(slot, 0);
  ASSERT_EQ(loom_readers_add(&r, &b), 1);
  loom_readers_settled(&r, 1);
  ASSERT_EQ(r.pending, 0);
  ASSERT_EQ(r.n, 2);
  /* A third connection is not kept as a reader. */
  loom_db_conn_t c = {0};
  ASSERT_EQ(loom_readers_add(&r, &c), -1);
}

TEST_IMPL(readers_join_least_loaded) {
  loom_readers_t r;
  loom_db_conn_t a = {0}, b = {0};
  int slot = -1, long_read = -1;
  setup(&r, 2);
  r.pending = 2;
  loom_readers_add(&r, &a);
  loom_readers_add(&r, &b);
  loom_readers_settled(&r, 1);
  loom_readers_settled(&r, 1);
  /* Reader 1 has only short reads out: long reads weigh more. */
  r.inflight[0] = 1, r.long_reads[0] = 1;
  r.inflight[1] = 3, r.long_reads[1] = 0;
  ASSERT_EQ(loom_readers_route(&r, &slot), LOOM_READ_JOIN);
  ASSERT_EQ(slot, 1);
  short_answer = 0;
  ASSERT_EQ(loom_readers_enter(&r, slot, NULL, &long_read), 1);
  ASSERT_EQ(long_read, 1);
  ASSERT_EQ(r.inflight[1], 4);
  ASSERT_EQ(r.long_reads[1], 1);
  loom_readers_leave(&r, 1, &b, long_read);
  ASSERT_EQ(r.inflight[1], 3);
  ASSERT_EQ(r.long_reads[1], 0);
  /* Leaving a reader that is no longer at that slot changes nothing. */
  loom_readers_leave(&r, 1, &a, 1);
  ASSERT_EQ(r.inflight[1], 3);
}

TEST_IMPL(readers_short_reads_queue_together) {
  loom_readers_t r;
  loom_db_conn_t a = {0}, b = {0};
  int long_read = -1;
  setup(&r, 2);
  r.pending = 2;
  loom_readers_add(&r, &a);
  loom_readers_add(&r, &b);
  r.long_reads[0] = 0, r.inflight[0] = 2;
  r.long_reads[1] = 0, r.inflight[1] = 1;
  /* A short read joins the first reader running only short reads, even
   * though route chose the other. */
  short_answer = 1;
  ASSERT_EQ(loom_readers_enter(&r, 1, NULL, &long_read), 0);
  ASSERT_EQ(long_read, 0);
  ASSERT_EQ(r.inflight[0], 3);
  ASSERT_EQ(r.long_reads[0], 0);
  /* ... up to the short queue's length; then the next such reader. */
  r.inflight[0] = 8;
  ASSERT_EQ(loom_readers_enter(&r, 0, NULL, &long_read), 1);
  ASSERT_EQ(long_read, 0);
  /* With none left, a short read is counted long where route sent it. */
  r.long_reads[1] = 1;
  ASSERT_EQ(loom_readers_enter(&r, 1, NULL, &long_read), 1);
  ASSERT_EQ(long_read, 1);
  ASSERT_EQ(r.long_reads[1], 2);
}

TEST_IMPL(readers_inline_only_when_idle) {
  loom_readers_t r;
  loom_db_conn_t a = {0};
  setup(&r, 1);
  r.pending = 1;
  loom_readers_add(&r, &a);
  ASSERT(!loom_readers_can_inline(&r, 0)); /* its own read is out */
  r.inflight[0] = 0;
  ASSERT(loom_readers_can_inline(&r, 0));
  inline_answer = LOOM_EAGAIN;
  ASSERT_EQ(loom_readers_try_inline(&r, 0, NULL), LOOM_EAGAIN);
  ASSERT_EQ(r.inflight[0], 0);
  inline_answer = 0;
  ASSERT_EQ(loom_readers_try_inline(&r, 0, NULL), 0);
  ASSERT_EQ(r.inflight[0], 1);
  ASSERT_EQ(r.inline_runs, 1);
  fake.try_inline = NULL;
  r.inflight[0] = 0;
  ASSERT(!loom_readers_can_inline(&r, 0));
  fake.try_inline = fake_try_inline;
}

TEST_IMPL(readers_never_inline_beside_a_busy_reader) {
  loom_readers_t r;
  loom_db_conn_t a = {0}, b = {0};
  setup(&r, 2);
  r.pending = 2;
  loom_readers_add(&r, &a);
  loom_readers_add(&r, &b);
  r.inflight[0] = 0, r.inflight[1] = 2;
  /* Reads out on the other reader, however many: the two would meet in
   * the driver's locks (SQLite's shared-memory index). */
  ASSERT(!loom_readers_can_inline(&r, 0));
  r.inflight[1] = 3;
  ASSERT(!loom_readers_can_inline(&r, 0));
  /* Nor on the busy one itself. */
  ASSERT(!loom_readers_can_inline(&r, 1));
  r.inflight[1] = 0;
  ASSERT(loom_readers_can_inline(&r, 0));
}
