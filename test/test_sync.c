/* Semaphore, event and waitgroup: who is woken, in what order, and what a
 * count may never do. */
#include "runner.h"

TEST_IMPL(sem_acquire_release) {
  loom_sem_t s;
  loom_sem_init(&s, 2);
  ASSERT_EQ(loom_sem_try_acquire(&s), LOOM_OK);
  ASSERT_EQ(loom_sem_try_acquire(&s), LOOM_OK);
  ASSERT_EQ(loom_sem_try_acquire(&s), LOOM_EAGAIN);
  ASSERT_EQ(s.count, 0);
  ASSERT_EQ(loom_sem_release(&s), LOOM_OK);
  ASSERT_EQ(loom_sem_try_acquire(&s), LOOM_OK);
  ASSERT_EQ(loom_sem_release(&s), LOOM_OK);
  ASSERT_EQ(loom_sem_release(&s), LOOM_OK);
  ASSERT_EQ(s.count, 2);
  loom_sem_destroy(&s);
}

/* A release hands its permit to the longest waiter: the count stays at zero
 * while anyone waits. */
TEST_IMPL(sem_fifo_handoff) {
  loom_sem_t s;
  loom_test_log_t log = {0};
  loom_test_waiter_t w[3];
  loom_sem_init(&s, 1);
  ASSERT_EQ(loom_sem_try_acquire(&s), LOOM_OK);
  for (int i = 0; i < 3; i++) {
    loom_test_waiter_init(&w[i], &log, i);
    loom_sem_wait(&s, &w[i].w);
  }
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(loom_sem_release(&s), LOOM_OK);
    ASSERT_EQ(log.n, i + 1);
    ASSERT_EQ(log.order[i], i);
    ASSERT_EQ(log.status[i], LOOM_OK);
    ASSERT_EQ(s.count, 0);
  }
  ASSERT_EQ(loom_sem_release(&s), LOOM_OK);
  ASSERT_EQ(s.count, 1);
  loom_sem_destroy(&s);
}

TEST_IMPL(sem_no_barging) {
  loom_sem_t s;
  loom_test_log_t log = {0};
  loom_test_waiter_t w;
  loom_sem_init(&s, 1);
  ASSERT_EQ(loom_sem_try_acquire(&s), LOOM_OK);
  loom_test_waiter_init(&w, &log, 1);
  loom_sem_wait(&s, &w.w);
  ASSERT_EQ(loom_sem_release(&s), LOOM_OK);
  ASSERT_EQ(log.n, 1);
  /* The permit went to the waiter, not back into the pool. */
  ASSERT_EQ(loom_sem_try_acquire(&s), LOOM_EAGAIN);
  loom_sem_destroy(&s);
}

TEST_IMPL(sem_overflow) {
  loom_sem_t s;
  loom_sem_init(&s, 2);
  ASSERT_EQ(loom_sem_release(&s), LOOM_EOVERFLOW);
  ASSERT_EQ(s.count, 2);
  ASSERT_EQ(loom_sem_try_acquire(&s), LOOM_OK);
  ASSERT_EQ(loom_sem_release(&s), LOOM_OK);
  ASSERT_EQ(loom_sem_release(&s), LOOM_EOVERFLOW);
  ASSERT_EQ(s.count, 2);
  loom_sem_destroy(&s);
}

TEST_IMPL(sem_cancel_waiter) {
  loom_sem_t s;
  loom_test_log_t log = {0};
  loom_test_waiter_t w[3];
  loom_sem_init(&s, 1);
  ASSERT_EQ(loom_sem_try_acquire(&s), LOOM_OK);
  for (int i = 0; i < 3; i++) {
    loom_test_waiter_init(&w[i], &log, i);
    loom_sem_wait(&s, &w[i].w);
  }
  loom_waiter_unlink(&w[0].w);
  ASSERT_EQ(loom_sem_release(&s), LOOM_OK);
  ASSERT_EQ(log.n, 1);
  ASSERT_EQ(log.order[0], 1);
  loom_sem_destroy(&s);
  ASSERT(!loom_waiter_queued(&w[2].w));
  ASSERT_EQ(log.n, 1);
}

TEST_IMPL(event_set_wakes_all) {
  loom_event_t e;
  loom_test_log_t log = {0};
  loom_test_waiter_t w[3];
  loom_event_init(&e);
  ASSERT(!e.is_set);
  for (int i = 0; i < 3; i++) {
    loom_test_waiter_init(&w[i], &log, i);
    loom_event_wait(&e, &w[i].w);
  }
  loom_event_set(&e);
  ASSERT(e.is_set);
  ASSERT_EQ(log.n, 3);
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(log.order[i], i);
    ASSERT_EQ(log.status[i], LOOM_OK);
  }
  /* Setting a set event wakes nobody twice. */
  loom_event_set(&e);
  ASSERT_EQ(log.n, 3);
  loom_event_destroy(&e);
}

TEST_IMPL(event_clear) {
  loom_event_t e;
  loom_test_log_t log = {0};
  loom_test_waiter_t w;
  loom_event_init(&e);
  loom_event_set(&e);
  loom_event_clear(&e);
  ASSERT(!e.is_set);
  loom_test_waiter_init(&w, &log, 1);
  loom_event_wait(&e, &w.w);
  loom_event_clear(&e);
  ASSERT_EQ(log.n, 0);
  loom_event_set(&e);
  ASSERT_EQ(log.n, 1);
  loom_event_destroy(&e);
}

TEST_IMPL(event_cancel_waiter) {
  loom_event_t e;
  loom_test_log_t log = {0};
  loom_test_waiter_t w[3];
  loom_event_init(&e);
  for (int i = 0; i < 3; i++) {
    loom_test_waiter_init(&w[i], &log, i);
    loom_event_wait(&e, &w[i].w);
  }
  loom_waiter_unlink(&w[1].w);
  loom_event_set(&e);
  ASSERT_EQ(log.n, 2);
  ASSERT_EQ(log.order[0], 0);
  ASSERT_EQ(log.order[1], 2);
  loom_event_destroy(&e);
}

TEST_IMPL(waitgroup_wait_for_zero) {
  loom_waitgroup_t wg;
  loom_test_log_t log = {0};
  loom_test_waiter_t w[2];
  loom_waitgroup_init(&wg);
  ASSERT_EQ(loom_waitgroup_add(&wg, 3), LOOM_OK);
  for (int i = 0; i < 2; i++) {
    loom_test_waiter_init(&w[i], &log, i);
    loom_waitgroup_wait(&wg, &w[i].w);
  }
  ASSERT_EQ(loom_waitgroup_add(&wg, -1), LOOM_OK);
  ASSERT_EQ(loom_waitgroup_add(&wg, -1), LOOM_OK);
  ASSERT_EQ(log.n, 0);
  ASSERT_EQ(loom_waitgroup_add(&wg, -1), LOOM_OK);
  ASSERT_EQ(log.n, 2);
  ASSERT_EQ(log.order[0], 0);
  ASSERT_EQ(log.order[1], 1);
  ASSERT_EQ(log.status[0], LOOM_OK);
  ASSERT_EQ(wg.count, 0);
  loom_waitgroup_destroy(&wg);
}

TEST_IMPL(waitgroup_below_zero) {
  loom_waitgroup_t wg;
  loom_test_log_t log = {0};
  loom_test_waiter_t w;
  loom_waitgroup_init(&wg);
  ASSERT_EQ(loom_waitgroup_add(&wg, -1), LOOM_EOVERFLOW);
  ASSERT_EQ(wg.count, 0);
  ASSERT_EQ(loom_waitgroup_add(&wg, 2), LOOM_OK);
  loom_test_waiter_init(&w, &log, 1);
  loom_waitgroup_wait(&wg, &w.w);
  /* A refused done leaves the count and the waiters untouched. */
  ASSERT_EQ(loom_waitgroup_add(&wg, -3), LOOM_EOVERFLOW);
  ASSERT_EQ(wg.count, 2);
  ASSERT_EQ(log.n, 0);
  ASSERT(loom_waiter_queued(&w.w));
  /* So is one past INT64_MAX, checked without overflowing. */
  ASSERT_EQ(loom_waitgroup_add(&wg, INT64_MAX), LOOM_EOVERFLOW);
  ASSERT_EQ(loom_waitgroup_add(&wg, INT64_MIN), LOOM_EOVERFLOW);
  ASSERT_EQ(wg.count, 2);
  ASSERT_EQ(loom_waitgroup_add(&wg, INT64_MAX - 2), LOOM_OK);
  ASSERT_EQ(loom_waitgroup_add(&wg, 1), LOOM_EOVERFLOW);
  ASSERT_EQ(loom_waitgroup_add(&wg, -(INT64_MAX - 2)), LOOM_OK);
  ASSERT_EQ(wg.count, 2);
  loom_waitgroup_destroy(&wg);
  ASSERT(!loom_waiter_queued(&w.w));
}

TEST_IMPL(waitgroup_reuse) {
  loom_waitgroup_t wg;
  loom_test_log_t log = {0};
  loom_test_waiter_t a, b;
  loom_waitgroup_init(&wg);
  ASSERT_EQ(loom_waitgroup_add(&wg, 1), LOOM_OK);
  loom_test_waiter_init(&a, &log, 1);
  loom_waitgroup_wait(&wg, &a.w);
  ASSERT_EQ(loom_waitgroup_add(&wg, -1), LOOM_OK);
  ASSERT_EQ(log.n, 1);
  ASSERT_EQ(loom_waitgroup_add(&wg, 2), LOOM_OK);
  loom_test_waiter_init(&b, &log, 2);
  loom_waitgroup_wait(&wg, &b.w);
  ASSERT_EQ(loom_waitgroup_add(&wg, -2), LOOM_OK);
  ASSERT_EQ(log.n, 2);
  ASSERT_EQ(log.order[1], 2);
  loom_waitgroup_destroy(&wg);
}
