/* A database driver with no database: connections live in memory and every
 * request completes on the loop after a delay the test sets, with the
 * outcome the test sets. It lets the pool be tested against db.h alone,
 * with failures no real server produces on demand. */
#ifndef LOOM_TEST_FAKE_DRIVER_H
#define LOOM_TEST_FAKE_DRIVER_H

#include "db.h"

typedef struct fake_conn {
  loom_db_conn_t base;
  loom_timer_t timer;  /* completes the request in flight */
  loom_db_txn_t txn;   /* what txn() answers; a reset makes it idle */
  int id;              /* 1, 2, ... in connecting order */
} fake_conn_t;

/* What the next requests do, and what happened so far. One per process:
 * the runner runs one test per process. */
typedef struct fake_state {
  uint64_t connect_delay_ns;
  uint64_t request_delay_ns;
  int fail_connects;   /* this many next connects fail */
  int fail_pings;      /* this many next pings fail (the connection breaks) */
  int fail_resets;     /* this many next resets fail */
  int connects, closes, pings, resets; /* started (connects: succeeded) */
  int live;            /* connections open now */
} fake_state_t;

extern fake_state_t fake;
extern const loom_db_driver_t fake_driver;

/* Clears the state: no delays, no failures, no counts. */
void fake_reset(void);

#endif
