/* The fake driver (see fake_driver.h). */
#include <stdlib.h>
#include <string.h>
#include "fake_driver.h"

fake_state_t fake;

void fake_reset(void) { memset(&fake, 0, sizeof fake); }

/* A connect in flight: no connection exists until it succeeds. */
typedef struct fake_connect {
  loom_timer_t timer;
  loom_loop_t *loop;
  loom_db_req_t *req;
} fake_connect_t;

static void request_done(loom_timer_t *t);

static void connect_done(loom_timer_t *t) {
  fake_connect_t *fc = t->data;
  loom_db_req_t *req = fc->req;
  loom_loop_t *loop = fc->loop;
  free(fc);
  if (fake.fail_connects > 0) {
    fake.fail_connects--;
    req->status = LOOM_EDB_CONNECTION;
    loom_db_error_set(&req->err, "fake", "the fake server refused");
    req->cb(req);
    return;
  }
  fake_conn_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    req->status = LOOM_ENOMEM;
    req->cb(req);
    return;
  }
  c->base.driver = &fake_driver;
  c->base.loop = loop;
  c->base.created_ns = c->base.last_used_ns = loom_now_ns();
  c->id = ++fake.connects;
  c->base.backend_id = c->id;
  c->txn = LOOM_TXN_IDLE;
  loom_timer_init(&c->timer, request_done, c);
  fake.live++;
  req->conn = &c->base;
  req->status = 0;
  req->cb(req);
}

static int fake_connect(loom_loop_t *loop, const char *conninfo, loom_db_req_t *req) {
  (void)conninfo;
  fake_connect_t *fc = calloc(1, sizeof *fc);
  if (fc == NULL)
    return LOOM_ENOMEM;
  fc->loop = loop;
  fc->req = req;
  loom_timer_init(&fc->timer, connect_done, fc);
  return loom_timer_start(loop, &fc->timer, fake.connect_delay_ns);
}

static void complete(fake_conn_t *c, int status) {
  loom_db_req_t *req = c->base.req;
  c->base.req = NULL;
  req->active = 0;
  req->status = status;
  req->cb(req);
}

static void request_done(loom_timer_t *t) {
  fake_conn_t *c = t->data;
  loom_db_req_t *req = c->base.req;
  int status = 0;
  if (req->op == LOOM_DB_PING && fake.fail_pings > 0) {
    fake.fail_pings--;
    c->base.broken = 1;
    status = LOOM_EDB_CONNECTION;
  } else if (req->op == LOOM_DB_RESET && fake.fail_resets > 0) {
    fake.fail_resets--;
    status = LOOM_EDB_QUERY;
  } else if (req->op == LOOM_DB_RESET) {
    c->txn = LOOM_TXN_IDLE;
  loom_timer_init(&c->timer, request_done, c);
    c->base.dirty = 0;
  }
  if (status)
    loom_db_error_set(&req->err, "fake", "the fake request failed");
  c->base.last_used_ns = loom_now_ns();
  complete(c, status);
}

static int fake_start(loom_db_conn_t *base, loom_db_req_t *req) {
  fake_conn_t *c = (fake_conn_t *)base;
  if (base->req != NULL)
    return LOOM_EAGAIN;
  if (req->op == LOOM_DB_PING)
    fake.pings++;
  else if (req->op == LOOM_DB_RESET)
    fake.resets++;
  req->conn = base;
  req->active = 1;
  base->req = req;
  return loom_timer_start(base->loop, &c->timer, fake.request_delay_ns);
}

static int fake_cancel(loom_db_conn_t *base) {
  fake_conn_t *c = (fake_conn_t *)base;
  if (base->req == NULL)
    return 0;
  loom_timer_stop(base->loop, &c->timer);
  complete(c, LOOM_ECANCELED);
  return 0;
}

static void fake_close(loom_db_conn_t *base) {
  fake_conn_t *c = (fake_conn_t *)base;
  loom_timer_stop(base->loop, &c->timer);
  if (base->req != NULL)
    complete(c, LOOM_ECLOSED);
  fake.closes++;
  fake.live--;
  free(c);
}

static loom_db_txn_t fake_txn(loom_db_conn_t *base) {
  fake_conn_t *c = (fake_conn_t *)base;
  return base->broken ? LOOM_TXN_UNKNOWN : c->txn;
}

static int fake_param_count(const char *sql, size_t len) {
  (void)sql;
  (void)len;
  return 0;
}

const loom_db_driver_t fake_driver = {
    .name = "fake",
    .connect = fake_connect,
    .start = fake_start,
    .cancel = fake_cancel,
    .close = fake_close,
    .txn = fake_txn,
    .param_count = fake_param_count,
    .placeholder = "?",
};
