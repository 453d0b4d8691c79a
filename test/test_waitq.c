/* Waiter queues: the FIFO every fairness guarantee in loom rests on. */
#include "runner.h"

static void expect_order(const loom_test_log_t *log, const int *ids, int n) {
  ASSERT_EQ(log->n, n);
  for (int i = 0; i < n; i++)
    ASSERT_EQ(log->order[i], ids[i]);
}

TEST_IMPL(waitq_fifo) {
  loom_waitq_t q;
  loom_test_log_t log = {0};
  loom_test_waiter_t w[5];
  loom_waitq_init(&q);
  for (int i = 0; i < 5; i++) {
    loom_test_waiter_init(&w[i], &log, i);
    ASSERT(!loom_waiter_queued(&w[i].w));
    loom_waitq_push(&q, &w[i].w);
    ASSERT_PTR_EQ(w[i].w.queue, &q);
  }
  ASSERT_EQ(q.len, 5);
  for (int i = 0; i < 5; i++) {
    loom_waiter_t *got = loom_waitq_shift(&q);
    ASSERT_PTR_EQ(got, &w[i].w);
    ASSERT(!loom_waiter_queued(got));
    ASSERT_EQ(q.len, 4 - i);
  }
  ASSERT(loom_waitq_shift(&q) == NULL);
  ASSERT(q.head == NULL && q.tail == NULL);
  /* Shifting only dequeues; waking is the caller's business. */
  ASSERT_EQ(log.n, 0);
}

TEST_IMPL(waitq_unlink_middle) {
  loom_waitq_t q;
  loom_test_log_t log = {0};
  loom_test_waiter_t w[5];
  loom_waitq_init(&q);
  for (int i = 0; i < 5; i++) {
    loom_test_waiter_init(&w[i], &log, i);
    loom_waitq_push(&q, &w[i].w);
  }
  loom_waiter_unlink(&w[2].w);
  ASSERT(!loom_waiter_queued(&w[2].w));
  ASSERT_EQ(q.len, 4);
  ASSERT_PTR_EQ(w[1].w.next, &w[3].w);
  ASSERT_PTR_EQ(w[3].w.prev, &w[1].w);
  /* A second unlink of the same waiter must not corrupt the queue. */
  loom_waiter_unlink(&w[2].w);
  ASSERT_EQ(q.len, 4);
  loom_waitq_wake_all(&q, LOOM_OK);
  static const int want[] = {0, 1, 3, 4};
  expect_order(&log, want, 4);
  ASSERT_EQ(q.len, 0);
}

TEST_IMPL(waitq_unlink_ends) {
  loom_waitq_t q;
  loom_test_log_t log = {0};
  loom_test_waiter_t w[3];
  loom_waitq_init(&q);
  for (int i = 0; i < 3; i++) {
    loom_test_waiter_init(&w[i], &log, i);
    loom_waitq_push(&q, &w[i].w);
  }
  loom_waiter_unlink(&w[0].w);
  ASSERT_PTR_EQ(q.head, &w[1].w);
  ASSERT(w[1].w.prev == NULL);
  loom_waiter_unlink(&w[2].w);
  ASSERT_PTR_EQ(q.tail, &w[1].w);
  ASSERT(w[1].w.next == NULL);
  loom_waiter_unlink(&w[1].w);
  ASSERT(q.head == NULL && q.tail == NULL);
  ASSERT_EQ(q.len, 0);
  /* The emptied queue is as good as new. */
  loom_waitq_push(&q, &w[2].w);
  loom_waitq_push(&q, &w[0].w);
  loom_waitq_wake_all(&q, LOOM_OK);
  static const int want[] = {2, 0};
  expect_order(&log, want, 2);
}

/* Cancelling a wait is an unlink followed by the owner's own wake-up; a
 * later wake_all must not reach the cancelled waiter again. */
TEST_IMPL(waitq_cancel) {
  loom_waitq_t q;
  loom_test_log_t log = {0};
  loom_test_waiter_t w[4];
  loom_waitq_init(&q);
  for (int i = 0; i < 4; i++) {
    loom_test_waiter_init(&w[i], &log, i);
    loom_waitq_push(&q, &w[i].w);
  }
  loom_waiter_unlink(&w[1].w);
  w[1].w.wake(&w[1].w, LOOM_ECANCELED);
  loom_waitq_wake_all(&q, LOOM_ECLOSED);
  static const int want[] = {1, 0, 2, 3};
  expect_order(&log, want, 4);
  ASSERT_EQ(log.status[0], LOOM_ECANCELED);
  for (int i = 1; i < 4; i++)
    ASSERT_EQ(log.status[i], LOOM_ECLOSED);
  /* Unlinking a waiter that never was queued is a no-op. */
  loom_test_waiter_t lone;
  loom_test_waiter_init(&lone, &log, 9);
  loom_waiter_unlink(&lone.w);
  ASSERT(!loom_waiter_queued(&lone.w));
}

/* A select waiting on one channel twice: the first wake-up cancels the
 * sibling case, which sits in the same queue that wake_all is draining. */
typedef struct {
  loom_test_waiter_t tw;
  loom_waiter_t *sibling;
} select_case;

static void select_wake(loom_waiter_t *w, int status) {
  select_case *c = w->data;
  c->tw.log->order[c->tw.log->n++] = c->tw.id;
  if (c->sibling)
    loom_waiter_unlink(c->sibling);
  (void)status;
}

TEST_IMPL(waitq_wake_all_unlinks_peer) {
  loom_waitq_t q;
  loom_test_log_t log = {0};
  select_case a, b, c;
  loom_waitq_init(&q);
  select_case *cs[] = {&a, &b, &c};
  for (int i = 0; i < 3; i++) {
    loom_waiter_init(&cs[i]->tw.w, select_wake, cs[i]);
    cs[i]->tw.log = &log;
    cs[i]->tw.id = i;
    cs[i]->sibling = NULL;
    loom_waitq_push(&q, &cs[i]->tw.w);
  }
  a.sibling = &b.tw.w;
  loom_waitq_wake_all(&q, LOOM_ECLOSED);
  static const int want[] = {0, 2};
  expect_order(&log, want, 2);
  ASSERT_EQ(q.len, 0);
  ASSERT(!loom_waiter_queued(&b.tw.w));
}
