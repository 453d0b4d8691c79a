/* Channels, held to the contract in API.md: rendezvous and bounded
 * buffers, FIFO-fair waiters on both sides, and close semantics (buffered
 * items still received, sending on a closed channel an error). */
#include "runner.h"

static void waiter(loom_test_waiter_t *w, loom_test_log_t *log, int id,
                   int64_t item) {
  loom_test_waiter_init(w, log, id);
  w->w.item = item;
}

static int64_t recv_ok(loom_chan_t *ch) {
  int64_t v = -1;
  ASSERT_EQ(loom_chan_try_recv(ch, &v), LOOM_OK);
  return v;
}

TEST_IMPL(chan_rendezvous) {
  loom_chan_t ch;
  loom_test_log_t log = {0};
  loom_test_waiter_t s;
  int64_t v;
  ASSERT_EQ(loom_chan_init(&ch, 0), 0);
  /* Nobody to hand it to, and no buffer to park it in. */
  ASSERT_EQ(loom_chan_try_send(&ch, 1), LOOM_EAGAIN);
  ASSERT_EQ(loom_chan_try_recv(&ch, &v), LOOM_EAGAIN);
  waiter(&s, &log, 1, 42);
  loom_chan_wait_send(&ch, &s.w);
  ASSERT_EQ(log.n, 0);
  ASSERT_EQ(loom_chan_len(&ch), 0);
  ASSERT_EQ(recv_ok(&ch), 42);
  ASSERT_EQ(log.n, 1);
  ASSERT_EQ(log.status[0], LOOM_OK);
  ASSERT_EQ(loom_chan_try_recv(&ch, &v), LOOM_EAGAIN);
  loom_chan_destroy(&ch);
}

TEST_IMPL(chan_rendezvous_receiver_first) {
  loom_chan_t ch;
  loom_test_log_t log = {0};
  loom_test_waiter_t r;
  ASSERT_EQ(loom_chan_init(&ch, 0), 0);
  waiter(&r, &log, 1, 0);
  loom_chan_wait_recv(&ch, &r.w);
  ASSERT_EQ(loom_chan_try_send(&ch, 7), LOOM_OK);
  ASSERT_EQ(log.n, 1);
  ASSERT_EQ(log.status[0], LOOM_OK);
  ASSERT_EQ(r.w.item, 7);
  ASSERT_EQ(loom_chan_len(&ch), 0);
  /* That receiver is served; the next send has nobody again. */
  ASSERT_EQ(loom_chan_try_send(&ch, 8), LOOM_EAGAIN);
  loom_chan_destroy(&ch);
}

TEST_IMPL(chan_bounded) {
  loom_chan_t ch;
  ASSERT_EQ(loom_chan_init(&ch, 2), 0);
  ASSERT_EQ(loom_chan_try_send(&ch, 1), LOOM_OK);
  ASSERT_EQ(loom_chan_try_send(&ch, 2), LOOM_OK);
  ASSERT_EQ(loom_chan_len(&ch), 2);
  ASSERT_EQ(loom_chan_try_send(&ch, 3), LOOM_EAGAIN);
  ASSERT_EQ(loom_chan_len(&ch), 2);
  ASSERT_EQ(recv_ok(&ch), 1);
  ASSERT_EQ(loom_chan_try_send(&ch, 3), LOOM_OK);
  /* Go around the ring a few times. */
  for (int64_t i = 4; i < 20; i++) {
    ASSERT_EQ(recv_ok(&ch), i - 2);
    ASSERT_EQ(loom_chan_try_send(&ch, i), LOOM_OK);
  }
  ASSERT_EQ(recv_ok(&ch), 18);
  ASSERT_EQ(recv_ok(&ch), 19);
  int64_t v;
  ASSERT_EQ(loom_chan_try_recv(&ch, &v), LOOM_EAGAIN);
  loom_chan_destroy(&ch);
}

/* A slot freed by a receive goes to the longest-waiting sender, whose item
 * lines up behind the buffered ones. */
TEST_IMPL(chan_bounded_sender_refill) {
  loom_chan_t ch;
  loom_test_log_t log = {0};
  loom_test_waiter_t s[2];
  ASSERT_EQ(loom_chan_init(&ch, 2), 0);
  ASSERT_EQ(loom_chan_try_send(&ch, 1), LOOM_OK);
  ASSERT_EQ(loom_chan_try_send(&ch, 2), LOOM_OK);
  for (int i = 0; i < 2; i++) {
    waiter(&s[i], &log, i, 3 + i);
    loom_chan_wait_send(&ch, &s[i].w);
  }
  ASSERT_EQ(recv_ok(&ch), 1);
  ASSERT_EQ(log.n, 1);
  ASSERT_EQ(log.order[0], 0);
  ASSERT_EQ(loom_chan_len(&ch), 2);
  /* Full again: a newcomer may not overtake the waiting sender. */
  ASSERT_EQ(loom_chan_try_send(&ch, 99), LOOM_EAGAIN);
  ASSERT_EQ(recv_ok(&ch), 2);
  ASSERT_EQ(log.n, 2);
  ASSERT_EQ(log.order[1], 1);
  ASSERT_EQ(recv_ok(&ch), 3);
  ASSERT_EQ(recv_ok(&ch), 4);
  ASSERT_EQ(loom_chan_len(&ch), 0);
  loom_chan_destroy(&ch);
}

TEST_IMPL(chan_fair_receivers) {
  loom_chan_t ch;
  loom_test_log_t log = {0};
  loom_test_waiter_t r[4];
  ASSERT_EQ(loom_chan_init(&ch, 3), 0);
  for (int i = 0; i < 4; i++) {
    waiter(&r[i], &log, i, -1);
    loom_chan_wait_recv(&ch, &r[i].w);
  }
  for (int i = 0; i < 4; i++)
    ASSERT_EQ(loom_chan_try_send(&ch, 100 + i), LOOM_OK);
  /* Waiting receivers are served directly; nothing lands in the buffer. */
  ASSERT_EQ(loom_chan_len(&ch), 0);
  ASSERT_EQ(log.n, 4);
  for (int i = 0; i < 4; i++) {
    ASSERT_EQ(log.order[i], i);
    ASSERT_EQ(r[i].w.item, 100 + i);
  }
  loom_chan_destroy(&ch);
}

TEST_IMPL(chan_fair_senders) {
  loom_chan_t ch;
  loom_test_log_t log = {0};
  loom_test_waiter_t s[4];
  ASSERT_EQ(loom_chan_init(&ch, 0), 0);
  for (int i = 0; i < 4; i++) {
    waiter(&s[i], &log, i, 10 * (i + 1));
    loom_chan_wait_send(&ch, &s[i].w);
  }
  for (int i = 0; i < 4; i++) {
    ASSERT_EQ(recv_ok(&ch), 10 * (i + 1));
    ASSERT_EQ(log.n, i + 1);
    ASSERT_EQ(log.order[i], i);
  }
  loom_chan_destroy(&ch);
}

TEST_IMPL(chan_close_keeps_buffered) {
  loom_chan_t ch;
  int64_t v;
  ASSERT_EQ(loom_chan_init(&ch, 4), 0);
  ASSERT_EQ(loom_chan_try_send(&ch, 1), LOOM_OK);
  ASSERT_EQ(loom_chan_try_send(&ch, 2), LOOM_OK);
  ASSERT_EQ(loom_chan_close(&ch), LOOM_OK);
  ASSERT_EQ(loom_chan_len(&ch), 2);
  ASSERT_EQ(recv_ok(&ch), 1);
  ASSERT_EQ(recv_ok(&ch), 2);
  /* Closed and drained: "nil, false" in Lua, and it stays that way. */
  ASSERT_EQ(loom_chan_try_recv(&ch, &v), LOOM_ECLOSED);
  ASSERT_EQ(loom_chan_try_recv(&ch, &v), LOOM_ECLOSED);
  loom_chan_destroy(&ch);
}

TEST_IMPL(chan_close_wakes_waiters) {
  loom_chan_t rch, sch;
  loom_test_log_t log = {0};
  loom_test_waiter_t r[2], s[2];
  ASSERT_EQ(loom_chan_init(&rch, 1), 0);
  ASSERT_EQ(loom_chan_init(&sch, 1), 0);
  for (int i = 0; i < 2; i++) {
    waiter(&r[i], &log, i, -1);
    loom_chan_wait_recv(&rch, &r[i].w);
  }
  ASSERT_EQ(loom_chan_close(&rch), LOOM_OK);
  ASSERT_EQ(log.n, 2);
  ASSERT_EQ(log.order[0], 0);
  ASSERT_EQ(log.order[1], 1);
  ASSERT_EQ(log.status[0], LOOM_ECLOSED);
  ASSERT_EQ(log.status[1], LOOM_ECLOSED);
  ASSERT_EQ(rch.receivers.len, 0);

  ASSERT_EQ(loom_chan_try_send(&sch, 5), LOOM_OK);
  for (int i = 0; i < 2; i++) {
    waiter(&s[i], &log, 10 + i, 6 + i);
    loom_chan_wait_send(&sch, &s[i].w);
  }
  ASSERT_EQ(loom_chan_close(&sch), LOOM_OK);
  ASSERT_EQ(log.n, 4);
  ASSERT_EQ(log.order[2], 10);
  ASSERT_EQ(log.order[3], 11);
  ASSERT_EQ(log.status[2], LOOM_ECLOSED);
  ASSERT_EQ(log.status[3], LOOM_ECLOSED);
  /* The buffered item survives; the refused senders' items do not appear. */
  ASSERT_EQ(recv_ok(&sch), 5);
  int64_t v;
  ASSERT_EQ(loom_chan_try_recv(&sch, &v), LOOM_ECLOSED);
  loom_chan_destroy(&rch);
  loom_chan_destroy(&sch);
}

TEST_IMPL(chan_send_on_closed) {
  loom_chan_t ch0, ch2;
  ASSERT_EQ(loom_chan_init(&ch0, 0), 0);
  ASSERT_EQ(loom_chan_init(&ch2, 2), 0);
  ASSERT_EQ(loom_chan_close(&ch0), LOOM_OK);
  ASSERT_EQ(loom_chan_close(&ch2), LOOM_OK);
  /* An error even where room is left. */
  ASSERT_EQ(loom_chan_try_send(&ch0, 1), LOOM_ECLOSED);
  ASSERT_EQ(loom_chan_try_send(&ch2, 1), LOOM_ECLOSED);
  ASSERT_EQ(loom_chan_len(&ch2), 0);
  loom_chan_destroy(&ch0);
  loom_chan_destroy(&ch2);
}

TEST_IMPL(chan_close_twice) {
  loom_chan_t ch;
  loom_test_log_t log = {0};
  loom_test_waiter_t r;
  ASSERT_EQ(loom_chan_init(&ch, 0), 0);
  waiter(&r, &log, 1, 0);
  loom_chan_wait_recv(&ch, &r.w);
  ASSERT_EQ(loom_chan_close(&ch), LOOM_OK);
  ASSERT_EQ(loom_chan_close(&ch), LOOM_ECLOSED);
  ASSERT_EQ(log.n, 1);
  loom_chan_destroy(&ch);
}

TEST_IMPL(chan_try_ops) {
  loom_chan_t ch;
  int64_t v = 123;
  ASSERT_EQ(loom_chan_init(&ch, 1), 0);
  ASSERT_EQ(loom_chan_try_recv(&ch, &v), LOOM_EAGAIN);
  ASSERT_EQ(v, 123);
  ASSERT_EQ(loom_chan_try_send(&ch, 1), LOOM_OK);
  ASSERT_EQ(loom_chan_try_send(&ch, 2), LOOM_EAGAIN);
  ASSERT_EQ(recv_ok(&ch), 1);
  /* Items are opaque 64-bit values: the extremes pass unchanged. */
  ASSERT_EQ(loom_chan_try_send(&ch, INT64_MIN), LOOM_OK);
  ASSERT(recv_ok(&ch) == INT64_MIN);
  ASSERT_EQ(loom_chan_try_send(&ch, INT64_MAX), LOOM_OK);
  /* drain_one is for teardown: it takes items even once closed. */
  ASSERT_EQ(loom_chan_close(&ch), LOOM_OK);
  ASSERT_EQ(loom_chan_drain_one(&ch, &v), LOOM_OK);
  ASSERT(v == INT64_MAX);
  ASSERT_EQ(loom_chan_drain_one(&ch, &v), LOOM_EAGAIN);
  loom_chan_destroy(&ch);
}

/* A waiter whose wait was cancelled (timeout, task cancel) leaves the queue
 * and must not swallow an item meant for the next one. */
TEST_IMPL(chan_cancelled_waiter_skipped) {
  loom_chan_t ch;
  loom_test_log_t log = {0};
  loom_test_waiter_t r[3];
  ASSERT_EQ(loom_chan_init(&ch, 0), 0);
  for (int i = 0; i < 3; i++) {
    waiter(&r[i], &log, i, -1);
    loom_chan_wait_recv(&ch, &r[i].w);
  }
  loom_waiter_unlink(&r[0].w);
  ASSERT_EQ(loom_chan_try_send(&ch, 5), LOOM_OK);
  ASSERT_EQ(log.n, 1);
  ASSERT_EQ(log.order[0], 1);
  ASSERT_EQ(r[1].w.item, 5);
  ASSERT_EQ(r[0].w.item, -1);
  /* Destroy unlinks what is left without waking it. */
  loom_chan_destroy(&ch);
  ASSERT_EQ(log.n, 1);
  ASSERT(!loom_waiter_queued(&r[2].w));
}

/* What feeds a channel learns that it ended: once at its close, or at its
 * destruction when nobody closed it, and never after being unlinked. */
TEST_IMPL(chan_watch_end) {
  loom_chan_t ch;
  loom_test_log_t log = {0};
  loom_test_waiter_t a, b, gone;
  ASSERT_EQ(loom_chan_init(&ch, 1), 0);
  waiter(&a, &log, 1, 0);
  waiter(&gone, &log, 2, 0);
  loom_chan_watch_end(&ch, &a.w);
  loom_chan_watch_end(&ch, &gone.w);
  loom_waiter_unlink(&gone.w);
  ASSERT_EQ(loom_chan_try_send(&ch, 5), LOOM_OK);
  ASSERT_EQ(log.n, 0);
  ASSERT_EQ(loom_chan_close(&ch), LOOM_OK);
  ASSERT_EQ(log.n, 1);
  ASSERT_EQ(log.order[0], 1);
  ASSERT_EQ(log.status[0], LOOM_ECLOSED);
  loom_chan_destroy(&ch);
  ASSERT_EQ(log.n, 1); /* told once, at the close */

  ASSERT_EQ(loom_chan_init(&ch, 0), 0);
  waiter(&b, &log, 3, 0);
  loom_chan_watch_end(&ch, &b.w);
  loom_chan_destroy(&ch);
  ASSERT_EQ(log.n, 2);
  ASSERT_EQ(log.order[1], 3);
  ASSERT_EQ(log.status[1], LOOM_ECLOSED);
}
