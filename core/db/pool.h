/* A connection pool written once against the driver interface of db.h.
 *
 * Idle connections are reused last-in first-out (the warmest first);
 * waiters are served first-in first-out. Every acquire has a deadline. A
 * connection comes back clean or not at all: one released inside a
 * transaction or with session state (advisory locks, LISTEN, SET) is reset
 * first, and a broken one is closed. Connections idle for a while are
 * validated before reuse, and each lives at most a jittered lifetime.
 * Failed connects back off exponentially, with jitter, up to a cap. */
#ifndef LOOM_POOL_H
#define LOOM_POOL_H

#include "db.h"

typedef struct loom_pool loom_pool_t;
typedef struct loom_pool_req loom_pool_req_t;
typedef void (*loom_pool_cb)(loom_pool_req_t *req);

/* A duration that never ends: a config value at or past it means "never"
 * (no acquire deadline, no retirement, no validation, no trimming). Far
 * enough out to read as forever, near enough that adding it to
 * loom_now_ns() cannot overflow. */
#define LOOM_POOL_NEVER (UINT64_C(1) << 62)

typedef struct loom_pool_config {
  int min;                    /* connections kept open */
  int max;                    /* connections at most */
  uint64_t acquire_timeout_ns; /* how long an acquire may wait (all durations:
                               * LOOM_POOL_NEVER or more is never) */
  uint64_t validate_idle_ns;  /* ping a connection idle at least this long */
  uint64_t max_lifetime_ns;   /* retire after this (with up to 10% jitter less) */
  uint64_t max_idle_ns;       /* close idle connections above min after this */
  uint64_t backoff_min_ns;    /* first reconnect delay after a failure */
  uint64_t backoff_max_ns;    /* the cap */
  loom_db_role_t role;        /* what its connections are for */
} loom_pool_config_t;

void loom_pool_config_default(loom_pool_config_t *cfg);

typedef struct loom_pool_stats {
  int64_t total, idle, in_use, waiting, connecting;
  int64_t acquired, timeouts, created, closed, failed_connects;
  uint64_t wait_ns; /* time spent waiting in acquire, summed */
} loom_pool_stats_t;

struct loom_pool_req {
  loom_waiter_t waiter;   /* queued on the pool's waiters */
  loom_pool_t *pool;
  loom_pool_cb cb;
  void *data;
  int status;             /* 0, LOOM_ETIMEDOUT, LOOM_ECLOSED, LOOM_EDB_CONNECTION */
  loom_db_error_t err;    /* with LOOM_EDB_CONNECTION: why connecting failed */
  loom_db_conn_t *conn;   /* the connection handed over */
  uint64_t started_ns;    /* its deadline: this plus the acquire timeout */
};

/* conninfo is copied. The pool opens `min` connections right away. */
loom_pool_t *loom_pool_new(loom_loop_t *loop, const loom_db_driver_t *driver,
                           const char *conninfo, const loom_pool_config_t *cfg);
/* 0: req->conn is ready now and no callback follows. LOOM_EAGAIN: queued,
 * the callback brings a connection or an error. Other: failed now. */
int loom_pool_acquire(loom_pool_t *pool, loom_pool_req_t *req);
/* Leaves the queue; no callback follows. */
void loom_pool_cancel(loom_pool_req_t *req);
/* Gives a connection back (reset, validated or closed as it needs). */
void loom_pool_release(loom_pool_t *pool, loom_db_conn_t *conn);
/* Closes the connection instead of reusing it (after a cancel gone wrong). */
void loom_pool_discard(loom_pool_t *pool, loom_db_conn_t *conn);
void loom_pool_stats(const loom_pool_t *pool, loom_pool_stats_t *out);
/* Waiters fail with LOOM_ECLOSED, idle connections close now, ones in use
 * close when released; the pool frees itself when the last one is gone. */
void loom_pool_close(loom_pool_t *pool);

#endif
