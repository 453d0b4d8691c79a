/* The pools of one database handle, laid out as its driver declares
 * (loom_db_driver_t.one_writer): every connection in one pool, or one
 * writer beside a set of readers. In the second layout single-statement
 * reads share a few reader connections ("shared readers", kept out of the
 * pool), queueing on them (driver start_shared): this file decides which
 * reader a read joins, when a new one is opened, when a short read runs
 * on the loop thread instead (driver try_inline), and keeps the reads
 * waiting for a reader being opened. It knows no driver and no Lua. */
#ifndef LOOM_READERS_H
#define LOOM_READERS_H

#include "pool.h"

#define LOOM_READERS_MAX 16

typedef struct loom_readers {
  loom_pool_t *pool;     /* the writer, or every connection */
  loom_pool_t *readers;  /* reader connections (one-writer layout), or NULL */
  const loom_db_driver_t *driver;
  int target;            /* shared readers wanted; 0: reads take a reader each */
  int n;
  loom_db_conn_t *conn[LOOM_READERS_MAX];
  int inflight[LOOM_READERS_MAX];
  int long_reads[LOOM_READERS_MAX]; /* of those, reads not known to be short */
  int pending;           /* reads acquiring a connection to become a reader */
  loom_waitq_t waiters;  /* reads waiting for one of those */
  int64_t inline_runs;   /* reads the driver ran on the loop thread */
} loom_readers_t;

/* Opens the pools. readers: connections for single reads shared by every
 * task in the one-writer layout (read-only transactions and streams get two
 * more, which need one to themselves); 0 sends reads to the writer. 0 or
 * LOOM_ENOMEM. */
int loom_readers_open(loom_readers_t *r, loom_loop_t *loop, const loom_db_driver_t *drv,
                      const char *conninfo, const loom_pool_config_t *cfg, int readers);
/* Gives the shared readers back, wakes every waiting read (they find the
 * handle closed) and closes the pools. */
void loom_readers_close(loom_readers_t *r);
/* The pool a connection for reading (reading != 0) or for anything comes from. */
loom_pool_t *loom_readers_pool(const loom_readers_t *r, int reading);
/* 1 when sql may run on a reader: the layout has readers and the driver
 * says the SQL only reads. */
int loom_readers_may_read(const loom_readers_t *r, const char *sql, size_t len);
/* Pool statistics of both pools, shared readers with no read out counted idle. */
void loom_readers_stats(const loom_readers_t *r, loom_pool_stats_t *out);

/* Where a single-statement read goes. */
enum {
  LOOM_READ_POOL,  /* a connection of its own from loom_readers_pool */
  LOOM_READ_JOIN,  /* the shared reader *slot: loom_readers_enter */
  LOOM_READ_WAIT,  /* wait on r->waiters, then route again */
  LOOM_READ_GROW   /* acquire from the pool; the connection becomes a shared
                      reader (loom_readers_add), then loom_readers_settled */
};
int loom_readers_route(loom_readers_t *r, int *slot);
/* With nothing else to run on the loop, a short read may run right here
 * on the idle reader at slot when _can_inline says so (a driver that can;
 * no read out on any reader):
 * _try_inline gives 0 when the driver ran req on the reader at slot
 * (counted as a read out: loom_readers_leave it). */
int loom_readers_can_inline(const loom_readers_t *r, int slot);
int loom_readers_try_inline(loom_readers_t *r, int slot, loom_db_req_t *req);
/* Joins a read to the reader at slot, or to one that runs only short reads
 * when the driver says req is short. Returns the reader's slot; *long_read
 * tells loom_readers_leave how it was counted. */
int loom_readers_enter(loom_readers_t *r, int slot, loom_db_req_t *req, int *long_read);
/* A read on the reader conn at slot ended. */
void loom_readers_leave(loom_readers_t *r, int slot, const loom_db_conn_t *conn, int long_read);
/* A GROW read's connection came: it becomes a shared reader with that read
 * counted on it (long), at the slot returned; -1 when enough exist. */
int loom_readers_add(loom_readers_t *r, loom_db_conn_t *conn);
/* A GROW read got its connection, an error, or gave up: the reads waiting
 * try again (they join the new reader, or one of them grows in its place). */
void loom_readers_settled(loom_readers_t *r, int wake);

#endif
