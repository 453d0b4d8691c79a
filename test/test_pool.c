/* The connection pool against the fake driver: what pool.h promises,
 * through its public calls alone. */
#include <string.h>
#include "fake_driver.h"
#include "pool.h"
#include "runner.h"

#define MS 1000000u

typedef struct {
  loom_pool_req_t req;
  int id;
  int done;
  int status;
  loom_db_conn_t *conn;
  uint64_t started_ns, done_ns;
} acq_t;

/* The ids of acquires in the order their callbacks ran. */
static int order[64];
static int norder;

static void acquired(loom_pool_req_t *r) {
  acq_t *a = r->data;
  ASSERT(!a->done); /* one callback per acquire */
  a->done = 1;
  a->status = r->status;
  a->conn = r->conn;
  a->done_ns = loom_now_ns();
  order[norder++] = a->id;
}

/* Returns what loom_pool_acquire did; an acquire answered at once is done
 * with no callback to come. */
static int acquire(loom_pool_t *p, acq_t *a, int id) {
  memset(a, 0, sizeof *a);
  a->id = id;
  a->req.cb = acquired;
  a->req.data = a;
  a->started_ns = loom_now_ns();
  int rc = loom_pool_acquire(p, &a->req);
  if (rc != LOOM_EAGAIN) {
    a->done = 1;
    a->status = rc;
    a->conn = a->req.conn;
    a->done_ns = loom_now_ns();
  }
  return rc;
}

static void request_completed(loom_db_req_t *r) { (*(int *)r->data)++; }

static int conn_id(const loom_db_conn_t *c) { return ((const fake_conn_t *)c)->id; }

/* Polls in short slices: the pool's trim timer does not keep the loop
 * alive, so an unbounded poll could return with nothing done. */
#define RUN_UNTIL(loop, cond)                                \
  do {                                                       \
    uint64_t give_up_ = loom_now_ns() + 5000 * MS;           \
    while (!(cond)) {                                        \
      ASSERT(loom_now_ns() < give_up_);                      \
      loom_loop_poll((loop), 5);                             \
    }                                                        \
  } while (0)

static void run_for(loom_loop_t *loop, uint64_t ns) {
  uint64_t until = loom_now_ns() + ns;
  while (loom_now_ns() < until)
    loom_loop_poll(loop, 5);
}

/* Nothing expires on its own unless a test says so. */
static loom_pool_config_t config(int max) {
  loom_pool_config_t c;
  loom_pool_config_default(&c);
  c.min = 0;
  c.max = max;
  c.acquire_timeout_ns = 5000 * MS;
  c.validate_idle_ns = LOOM_POOL_NEVER;
  c.max_lifetime_ns = LOOM_POOL_NEVER;
  c.max_idle_ns = LOOM_POOL_NEVER;
  c.backoff_min_ns = 1 * MS;
  c.backoff_max_ns = 4 * MS;
  return c;
}

static loom_pool_stats_t stats(loom_pool_t *p) {
  loom_pool_stats_t s;
  loom_pool_stats(p, &s);
  return s;
}

static void begin(loom_loop_t *loop) {
  fake_reset();
  fake.connect_delay_ns = 1 * MS;
  fake.request_delay_ns = 1 * MS;
  norder = 0;
  loom_test_loop_init(loop);
}

/* Closes an idle pool and the loop: every connection is closed, nothing
 * is left on the loop. */
static void end(loom_loop_t *loop, loom_pool_t *p) {
  loom_pool_close(p);
  while (loom_loop_alive(loop))
    loom_loop_poll(loop, 5);
  ASSERT_EQ(fake.live, 0);
  loom_test_loop_close(loop);
}

TEST_IMPL(pool_acquire_release_lifo) {
  loom_loop_t loop;
  begin(&loop);
  loom_pool_config_t cfg = config(3);
  loom_pool_t *p = loom_pool_new(&loop, &fake_driver, "fake://", &cfg);
  ASSERT(p != NULL);
  acq_t a[3], b, c;
  for (int i = 0; i < 3; i++)
    ASSERT_EQ(acquire(p, &a[i], i), LOOM_EAGAIN); /* nothing idle: connects */
  ASSERT_EQ(stats(p).connecting, 3);
  RUN_UNTIL(&loop, a[0].done && a[1].done && a[2].done);
  for (int i = 0; i < 3; i++)
    ASSERT_EQ(a[i].status, 0);
  ASSERT(a[0].conn != a[1].conn && a[1].conn != a[2].conn && a[0].conn != a[2].conn);
  loom_pool_stats_t s = stats(p);
  ASSERT_EQ(s.total, 3);
  ASSERT_EQ(s.in_use, 3);
  ASSERT_EQ(s.created, 3);
  ASSERT_EQ(s.acquired, 3);
  ASSERT_EQ(s.connecting, 0);
  for (int i = 0; i < 3; i++)
    loom_pool_release(p, a[i].conn);
  s = stats(p);
  ASSERT_EQ(s.idle, 3);
  ASSERT_EQ(s.in_use, 0);
  /* The warmest first: the one released last comes back first, at once. */
  ASSERT_EQ(acquire(p, &b, 10), 0);
  ASSERT_PTR_EQ(b.conn, a[2].conn);
  ASSERT_EQ(acquire(p, &c, 11), 0);
  ASSERT_PTR_EQ(c.conn, a[1].conn);
  ASSERT_EQ(fake.connects, 3);
  loom_pool_release(p, b.conn);
  loom_pool_release(p, c.conn);
  end(&loop, p);
  ASSERT_EQ(fake.closes, 3);
}

TEST_IMPL(pool_max) {
  loom_loop_t loop;
  begin(&loop);
  loom_pool_config_t cfg = config(2);
  loom_pool_t *p = loom_pool_new(&loop, &fake_driver, "fake://", &cfg);
  acq_t a[3];
  for (int i = 0; i < 3; i++)
    ASSERT_EQ(acquire(p, &a[i], i), LOOM_EAGAIN);
  RUN_UNTIL(&loop, a[0].done && a[1].done);
  run_for(&loop, 20 * MS);
  ASSERT(!a[2].done);
  loom_pool_stats_t s = stats(p);
  ASSERT_EQ(s.total, 2);
  ASSERT_EQ(s.waiting, 1);
  ASSERT_EQ(fake.connects, 2);
  /* A release hands the connection straight to the waiter. */
  loom_pool_release(p, a[0].conn);
  ASSERT(a[2].done);
  ASSERT_EQ(a[2].status, 0);
  ASSERT_PTR_EQ(a[2].conn, a[0].conn);
  ASSERT_EQ(stats(p).waiting, 0);
  loom_pool_release(p, a[1].conn);
  loom_pool_release(p, a[2].conn);
  ASSERT_EQ(fake.connects, 2);
  end(&loop, p);
}

TEST_IMPL(pool_waiters_fifo) {
  loom_loop_t loop;
  begin(&loop);
  loom_pool_config_t cfg = config(1);
  loom_pool_t *p = loom_pool_new(&loop, &fake_driver, "fake://", &cfg);
  acq_t a[6];
  ASSERT_EQ(acquire(p, &a[0], 0), LOOM_EAGAIN);
  RUN_UNTIL(&loop, a[0].done);
  for (int i = 1; i < 6; i++)
    ASSERT_EQ(acquire(p, &a[i], i), LOOM_EAGAIN);
  ASSERT_EQ(stats(p).waiting, 5);
  /* One leaves the queue: no callback for it, the others keep their turn. */
  loom_pool_cancel(&a[3].req);
  ASSERT_EQ(stats(p).waiting, 4);
  loom_db_conn_t *conn = a[0].conn;
  for (int i = 1; i < 6; i++) {
    if (i == 3)
      continue;
    loom_pool_release(p, conn);
    ASSERT(a[i].done);
    ASSERT_PTR_EQ(a[i].conn, conn);
  }
  static const int want[] = {0, 1, 2, 4, 5};
  ASSERT_EQ(norder, 5);
  for (int i = 0; i < 5; i++)
    ASSERT_EQ(order[i], want[i]);
  ASSERT(!a[3].done);
  ASSERT_EQ(fake.connects, 1);
  loom_pool_release(p, conn);
  end(&loop, p);
}

TEST_IMPL(pool_waiter_timeout) {
  loom_loop_t loop;
  begin(&loop);
  loom_pool_config_t cfg = config(1);
  cfg.acquire_timeout_ns = 50 * MS;
  loom_pool_t *p = loom_pool_new(&loop, &fake_driver, "fake://", &cfg);
  acq_t a, w1, w2, b;
  ASSERT_EQ(acquire(p, &a, 0), LOOM_EAGAIN);
  RUN_UNTIL(&loop, a.done);
  ASSERT_EQ(acquire(p, &w1, 1), LOOM_EAGAIN);
  run_for(&loop, 20 * MS);
  ASSERT_EQ(acquire(p, &w2, 2), LOOM_EAGAIN);
  RUN_UNTIL(&loop, w2.done);
  /* Each waits its own full timeout, and they time out in arrival order
   * (the loop may fire a timer up to a millisecond early). */
  ASSERT_EQ(w1.status, LOOM_ETIMEDOUT);
  ASSERT_EQ(w2.status, LOOM_ETIMEDOUT);
  ASSERT(w1.done_ns - w1.started_ns >= 49 * MS);
  ASSERT(w2.done_ns - w2.started_ns >= 49 * MS);
  ASSERT_EQ(norder, 3);
  ASSERT_EQ(order[1], 1);
  ASSERT_EQ(order[2], 2);
  loom_pool_stats_t s = stats(p);
  ASSERT_EQ(s.timeouts, 2);
  ASSERT_EQ(s.waiting, 0);
  ASSERT(s.wait_ns >= 98 * MS);
  /* The holder was never disturbed; what it gives back is served at once. */
  loom_pool_release(p, a.conn);
  ASSERT_EQ(acquire(p, &b, 3), 0);
  ASSERT_PTR_EQ(b.conn, a.conn);
  loom_pool_release(p, b.conn);
  end(&loop, p);
}

TEST_IMPL(pool_broken_replaced) {
  loom_loop_t loop;
  begin(&loop);
  loom_pool_config_t cfg = config(1);
  loom_pool_t *p = loom_pool_new(&loop, &fake_driver, "fake://", &cfg);
  acq_t a, w, b, c, d;
  ASSERT_EQ(acquire(p, &a, 0), LOOM_EAGAIN);
  RUN_UNTIL(&loop, a.done);
  ASSERT_EQ(conn_id(a.conn), 1);
  /* Broken while in use, with a waiter: closed, and a new one connects
   * for the waiter. */
  ASSERT_EQ(acquire(p, &w, 1), LOOM_EAGAIN);
  a.conn->broken = 1;
  loom_pool_release(p, a.conn);
  ASSERT_EQ(fake.closes, 1);
  ASSERT(!w.done);
  RUN_UNTIL(&loop, w.done);
  ASSERT_EQ(w.status, 0);
  ASSERT_EQ(conn_id(w.conn), 2);
  /* Discarded: closed though it was healthy. */
  loom_pool_discard(p, w.conn);
  ASSERT_EQ(fake.closes, 2);
  ASSERT_EQ(stats(p).total, 0);
  /* Broken while idle (the driver saw its socket close): never handed out. */
  ASSERT_EQ(acquire(p, &b, 2), LOOM_EAGAIN);
  RUN_UNTIL(&loop, b.done);
  ASSERT_EQ(conn_id(b.conn), 3);
  loom_pool_release(p, b.conn);
  ASSERT_EQ(stats(p).idle, 1);
  b.conn->broken = 1;
  ASSERT_EQ(acquire(p, &c, 3), LOOM_EAGAIN);
  ASSERT_EQ(fake.closes, 3);
  RUN_UNTIL(&loop, c.done);
  ASSERT_EQ(conn_id(c.conn), 4);
  /* A connection released with a request still running is closed. */
  loom_db_req_t req;
  memset(&req, 0, sizeof req);
  int completed = 0;
  req.op = LOOM_DB_PING;
  req.cb = request_completed;
  req.data = &completed;
  fake.request_delay_ns = 1000 * MS;
  ASSERT_EQ(fake_driver.start(c.conn, &req), 0);
  loom_pool_release(p, c.conn);
  ASSERT_EQ(fake.closes, 4);
  ASSERT_EQ(completed, 1);
  ASSERT_EQ(req.status, LOOM_ECLOSED);
  loom_pool_stats_t s = stats(p);
  ASSERT_EQ(s.created, 4);
  ASSERT_EQ(s.closed, 4);
  ASSERT_EQ(s.total, 0);
  fake.request_delay_ns = 1 * MS;
  ASSERT_EQ(acquire(p, &d, 4), LOOM_EAGAIN);
  RUN_UNTIL(&loop, d.done);
  loom_pool_release(p, d.conn);
  end(&loop, p);
}

TEST_IMPL(pool_dirty_reset) {
  loom_loop_t loop;
  begin(&loop);
  loom_pool_config_t cfg = config(1);
  loom_pool_t *p = loom_pool_new(&loop, &fake_driver, "fake://", &cfg);
  acq_t a, w, b, c;
  ASSERT_EQ(acquire(p, &a, 0), LOOM_EAGAIN);
  RUN_UNTIL(&loop, a.done);
  /* Released inside a transaction: reset before anyone gets it, and the
   * waiter gets the same connection, clean, without a new connect. */
  ((fake_conn_t *)a.conn)->txn = LOOM_TXN_ACTIVE;
  loom_pool_release(p, a.conn);
  ASSERT_EQ(fake.resets, 1);
  ASSERT_EQ(stats(p).idle, 0);
  ASSERT_EQ(acquire(p, &w, 1), LOOM_EAGAIN);
  RUN_UNTIL(&loop, w.done);
  ASSERT_EQ(w.status, 0);
  ASSERT_PTR_EQ(w.conn, a.conn);
  ASSERT_EQ(fake_driver.txn(w.conn), LOOM_TXN_IDLE);
  ASSERT_EQ(fake.connects, 1);
  /* Session state alone (dirty) is reset too. */
  w.conn->dirty = 1;
  loom_pool_release(p, w.conn);
  ASSERT_EQ(fake.resets, 2);
  RUN_UNTIL(&loop, stats(p).idle == 1);
  ASSERT_EQ(w.conn->dirty, 0);
  /* A reset that fails closes the connection rather than hand it out. */
  ASSERT_EQ(acquire(p, &b, 2), 0);
  ((fake_conn_t *)b.conn)->txn = LOOM_TXN_FAILED;
  fake.fail_resets = 1;
  loom_pool_release(p, b.conn);
  RUN_UNTIL(&loop, fake.closes == 1);
  ASSERT_EQ(stats(p).total, 0);
  ASSERT_EQ(acquire(p, &c, 3), LOOM_EAGAIN);
  RUN_UNTIL(&loop, c.done);
  ASSERT_EQ(conn_id(c.conn), 2);
  loom_pool_release(p, c.conn);
  end(&loop, p);
}

TEST_IMPL(pool_connect_failure) {
  loom_loop_t loop;
  begin(&loop);
  loom_pool_config_t cfg = config(2);
  loom_pool_t *p = loom_pool_new(&loop, &fake_driver, "fake://", &cfg);
  acq_t a, b;
  /* Nobody else can serve the waiter: it hears why at once, not at its
   * deadline. */
  fake.fail_connects = 1;
  ASSERT_EQ(acquire(p, &a, 0), LOOM_EAGAIN);
  RUN_UNTIL(&loop, a.done);
  ASSERT_EQ(a.status, LOOM_EDB_CONNECTION);
  ASSERT(strcmp(a.req.err.code, "fake") == 0);
  ASSERT(a.req.err.message && strcmp(a.req.err.message, "the fake server refused") == 0);
  ASSERT(a.done_ns - a.started_ns < 1000 * MS);
  loom_db_error_clear(&a.req.err);
  loom_pool_stats_t s = stats(p);
  ASSERT_EQ(s.failed_connects, 1);
  ASSERT_EQ(s.total, 0);
  ASSERT_EQ(s.created, 0);
  /* After the backoff the next acquire connects. */
  ASSERT_EQ(acquire(p, &b, 1), LOOM_EAGAIN);
  RUN_UNTIL(&loop, b.done);
  ASSERT_EQ(b.status, 0);
  ASSERT_EQ(stats(p).created, 1);
  loom_pool_release(p, b.conn);
  end(&loop, p);
}

TEST_IMPL(pool_validate_idle) {
  loom_loop_t loop;
  begin(&loop);
  loom_pool_config_t cfg = config(1);
  cfg.validate_idle_ns = 20 * MS;
  loom_pool_t *p = loom_pool_new(&loop, &fake_driver, "fake://", &cfg);
  acq_t a, b, c, d;
  ASSERT_EQ(acquire(p, &a, 0), LOOM_EAGAIN);
  RUN_UNTIL(&loop, a.done);
  loom_pool_release(p, a.conn);
  /* Fresh from use: handed out at once, no ping. */
  ASSERT_EQ(acquire(p, &b, 1), 0);
  ASSERT_EQ(fake.pings, 0);
  loom_pool_release(p, b.conn);
  /* Idle long enough: pinged first, then handed out. */
  run_for(&loop, 30 * MS);
  ASSERT_EQ(acquire(p, &c, 2), LOOM_EAGAIN);
  ASSERT_EQ(fake.pings, 1);
  RUN_UNTIL(&loop, c.done);
  ASSERT_EQ(c.status, 0);
  ASSERT_PTR_EQ(c.conn, a.conn);
  loom_pool_release(p, c.conn);
  /* A ping that fails: that one is closed, a new one serves the waiter. */
  run_for(&loop, 30 * MS);
  fake.fail_pings = 1;
  ASSERT_EQ(acquire(p, &d, 3), LOOM_EAGAIN);
  RUN_UNTIL(&loop, d.done);
  ASSERT_EQ(d.status, 0);
  ASSERT_EQ(fake.pings, 2);
  ASSERT_EQ(fake.closes, 1);
  ASSERT_EQ(conn_id(d.conn), 2);
  loom_pool_release(p, d.conn);
  end(&loop, p);
}

TEST_IMPL(pool_lifetime) {
  loom_loop_t loop;
  begin(&loop);
  loom_pool_config_t cfg = config(1);
  cfg.max_lifetime_ns = 30 * MS;
  loom_pool_t *p = loom_pool_new(&loop, &fake_driver, "fake://", &cfg);
  acq_t a, b;
  ASSERT_EQ(acquire(p, &a, 0), LOOM_EAGAIN);
  RUN_UNTIL(&loop, a.done);
  loom_pool_release(p, a.conn);
  /* Idle past its lifetime: retired instead of handed out. */
  run_for(&loop, 40 * MS);
  ASSERT_EQ(acquire(p, &b, 1), LOOM_EAGAIN);
  ASSERT_EQ(fake.closes, 1);
  RUN_UNTIL(&loop, b.done);
  ASSERT_EQ(conn_id(b.conn), 2);
  /* In use past its lifetime: retired when it comes back. */
  run_for(&loop, 40 * MS);
  loom_pool_release(p, b.conn);
  ASSERT_EQ(fake.closes, 2);
  ASSERT_EQ(stats(p).total, 0);
  end(&loop, p);
}

static void keep_alive_cb(loom_timer_t *t) { (void)t; }

TEST_IMPL(pool_idle_trim) {
  loom_loop_t loop;
  begin(&loop);
  loom_pool_config_t cfg = config(3);
  cfg.min = 1;
  cfg.max_idle_ns = 30 * MS;
  loom_pool_t *p = loom_pool_new(&loop, &fake_driver, "fake://", &cfg);
  /* min connections open right away, with nobody asking. */
  ASSERT_EQ(stats(p).connecting, 1);
  RUN_UNTIL(&loop, stats(p).idle == 1);
  acq_t a[3];
  ASSERT_EQ(acquire(p, &a[0], 0), 0);
  ASSERT_EQ(acquire(p, &a[1], 1), LOOM_EAGAIN);
  ASSERT_EQ(acquire(p, &a[2], 2), LOOM_EAGAIN);
  RUN_UNTIL(&loop, a[1].done && a[2].done);
  ASSERT_EQ(stats(p).total, 3);
  for (int i = 0; i < 3; i++)
    loom_pool_release(p, a[i].conn);
  /* Its trim timer never keeps the loop alive by itself ... */
  ASSERT(!loom_loop_alive(&loop));
  /* ... but while something else does, it trims down to min with no call
   * to the pool. */
  loom_timer_t keep_alive;
  loom_timer_init(&keep_alive, keep_alive_cb, NULL);
  ASSERT_EQ(loom_timer_start(&loop, &keep_alive, 10000 * MS), 0);
  uint64_t released = loom_now_ns();
  RUN_UNTIL(&loop, stats(p).total == 1);
  ASSERT(loom_now_ns() - released >= 29 * MS);
  ASSERT_EQ(fake.closes, 2);
  run_for(&loop, 60 * MS);
  ASSERT_EQ(stats(p).total, 1);
  ASSERT_EQ(stats(p).idle, 1);
  loom_timer_stop(&loop, &keep_alive);
  end(&loop, p);
  ASSERT_EQ(fake.closes, 3);
}

TEST_IMPL(pool_close_with_waiters) {
  loom_loop_t loop;
  begin(&loop);
  loom_pool_config_t cfg = config(1);
  loom_pool_t *p = loom_pool_new(&loop, &fake_driver, "fake://", &cfg);
  acq_t a, w1, w2, late;
  ASSERT_EQ(acquire(p, &a, 0), LOOM_EAGAIN);
  RUN_UNTIL(&loop, a.done);
  ASSERT_EQ(acquire(p, &w1, 1), LOOM_EAGAIN);
  ASSERT_EQ(acquire(p, &w2, 2), LOOM_EAGAIN);
  loom_pool_close(p);
  /* Waiters fail now, in their order; the connection in use stays open. */
  ASSERT(w1.done && w2.done);
  ASSERT_EQ(w1.status, LOOM_ECLOSED);
  ASSERT_EQ(w2.status, LOOM_ECLOSED);
  ASSERT_EQ(order[1], 1);
  ASSERT_EQ(order[2], 2);
  ASSERT_EQ(fake.closes, 0);
  ASSERT_EQ(acquire(p, &late, 3), LOOM_ECLOSED);
  /* Closed when released; the pool then frees itself (ASan would see a
   * leak or a use after free). */
  loom_pool_release(p, a.conn);
  ASSERT_EQ(fake.closes, 1);
  ASSERT_EQ(fake.live, 0);
  loom_test_loop_close(&loop);
}

TEST_IMPL(pool_close_while_connecting) {
  loom_loop_t loop;
  begin(&loop);
  fake.connect_delay_ns = 20 * MS;
  loom_pool_config_t cfg = config(2);
  loom_pool_t *p = loom_pool_new(&loop, &fake_driver, "fake://", &cfg);
  acq_t a;
  ASSERT_EQ(acquire(p, &a, 0), LOOM_EAGAIN);
  loom_pool_close(p);
  ASSERT(a.done);
  ASSERT_EQ(a.status, LOOM_ECLOSED);
  /* The connect in flight ends and its connection is closed, not kept. */
  RUN_UNTIL(&loop, fake.connects == 1 && fake.live == 0);
  ASSERT_EQ(fake.closes, 1);
  loom_test_loop_close(&loop);
}
