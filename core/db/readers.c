/* The pools of a database handle and its shared readers (readers.h). */
#include <string.h>
#include "readers.h"

/* Short reads queue on one reader up to this many at a time. */
#define SHORT_QUEUE 8

int loom_readers_open(loom_readers_t *r, loom_loop_t *loop, const loom_db_driver_t *drv,
                      const char *conninfo, const loom_pool_config_t *cfg, int readers) {
  memset(r, 0, sizeof *r);
  r->driver = drv;
  loom_waitq_init(&r->waiters);
  if (!drv->one_writer) {
    r->pool = loom_pool_new(loop, drv, conninfo, cfg);
    return r->pool ? 0 : LOOM_ENOMEM;
  }
  /* One writer, so writers queue here instead of meeting a busy database;
   * readers beside it. The writer stays open: an in-memory database lives
   * as long as one connection to it. */
  loom_pool_config_t wcfg = *cfg;
  wcfg.min = 1;
  wcfg.max = 1;
  wcfg.max_lifetime_ns = LOOM_POOL_NEVER;
  wcfg.role = LOOM_DB_ROLE_WRITER;
  r->pool = loom_pool_new(loop, drv, conninfo, &wcfg);
  if (r->pool == NULL)
    return LOOM_ENOMEM;
  if (readers == 0)
    return 0;
  if (readers > LOOM_READERS_MAX)
    readers = LOOM_READERS_MAX;
  loom_pool_config_t rcfg = *cfg;
  r->target = drv->start_shared ? readers : 0;
  rcfg.max = readers + 2;
  if (rcfg.min > rcfg.max)
    rcfg.min = rcfg.max;
  rcfg.role = LOOM_DB_ROLE_READER;
  r->readers = loom_pool_new(loop, drv, conninfo, &rcfg);
  if (r->readers == NULL) {
    loom_pool_close(r->pool);
    r->pool = NULL;
    return LOOM_ENOMEM;
  }
  return 0;
}

void loom_readers_close(loom_readers_t *r) {
  loom_waitq_wake_all(&r->waiters, 0);
  for (int i = 0; i < r->n; i++)
    loom_pool_release(r->readers, r->conn[i]);
  r->n = 0;
  loom_pool_close(r->pool);
  if (r->readers)
    loom_pool_close(r->readers);
}

loom_pool_t *loom_readers_pool(const loom_readers_t *r, int reading) {
  return reading && r->readers ? r->readers : r->pool;
}

void loom_readers_stats(const loom_readers_t *r, loom_pool_stats_t *s) {
  loom_pool_stats(r->pool, s);
  if (r->readers == NULL)
    return;
  loom_pool_stats_t t;
  loom_pool_stats(r->readers, &t);
  s->total += t.total;
  s->idle += t.idle;
  s->in_use += t.in_use;
  s->waiting += t.waiting;
  s->connecting += t.connecting;
  s->acquired += t.acquired;
  s->timeouts += t.timeouts;
  s->created += t.created;
  s->closed += t.closed;
  s->failed_connects += t.failed_connects;
  s->wait_ns += t.wait_ns;
  for (int i = 0; i < r->n; i++)
    if (r->inflight[i] == 0) {
      s->in_use--;
      s->idle++;
    }
}

static void drop_idle_broken(loom_readers_t *r) {
  for (int i = 0; i < r->n; i++) {
    if (r->conn[i]->broken && r->inflight[i] == 0) {
      loom_pool_discard(r->readers, r->conn[i]);
      r->n--;
      r->conn[i] = r->conn[r->n];
      r->inflight[i] = r->inflight[r->n];
      r->long_reads[i] = r->long_reads[r->n];
      i--;
    }
  }
}

/* While the shared readers are being opened, a read waits for one: were
 * those reads queued on the pool instead, each would take a reader for
 * itself in turn, and a burst of reads on a fresh handle would run one at
 * a time per connection. */
int loom_readers_route(loom_readers_t *r, int *slot) {
  if (r->target == 0)
    return LOOM_READ_POOL;
  drop_idle_broken(r);
  /* The reader with the fewest long reads out, then the fewest reads. */
  int best = -1;
  for (int i = 0; i < r->n; i++)
    if (!r->conn[i]->broken &&
        (best < 0 || r->long_reads[i] < r->long_reads[best] ||
         (r->long_reads[i] == r->long_reads[best] && r->inflight[i] < r->inflight[best])))
      best = i;
  int coming = r->n + r->pending;
  if (best >= 0 && (r->inflight[best] == 0 || coming >= r->target)) {
    *slot = best;
    return LOOM_READ_JOIN;
  }
  if (best < 0 && r->pending >= r->target)
    return LOOM_READ_WAIT;
  r->pending++;
  return LOOM_READ_GROW;
}

int loom_readers_may_read(const loom_readers_t *r, const char *sql, size_t len) {
  return r->readers != NULL && r->driver->only_reads != NULL && r->driver->only_reads(sql, len);
}

/* With reads out, the loop runs tasks while a reader runs statements, a
 * pipeline on two cores; with none out and nothing else to run it would
 * only wait for the answer, so it runs the read itself. Never beside a
 * busy reader: two connections to one file reading at once meet at every
 * read transaction in SQLite's lock on the shared-memory index (one per
 * process and file), and most such meetings cost both threads a futex
 * call. Measured (bench/RESULTS.md, 4 tasks on 2 readers): 270k/s with
 * the loop reading beside a reader that had 3 reads out, 600k/s without. */
int loom_readers_can_inline(const loom_readers_t *r, int slot) {
  if (r->driver->try_inline == NULL || r->inflight[slot] != 0)
    return 0;
  for (int i = 0; i < r->n; i++)
    if (r->inflight[i] != 0)
      return 0;
  return 1;
}

int loom_readers_try_inline(loom_readers_t *r, int slot, loom_db_req_t *req) {
  int rc = r->driver->try_inline(r->conn[slot], req);
  if (rc == 0) {
    r->inflight[slot]++;
    r->inline_runs++;
  }
  return rc;
}

/* Reads known to be short queue on the first reader that runs only such
 * reads: one worker thread busy beside the loop instead of several, each
 * spinning for one of a few cores. Others (a long one, one not seen yet)
 * go to the reader route chose. */
int loom_readers_enter(loom_readers_t *r, int slot, loom_db_req_t *req, int *long_read) {
  *long_read = 1;
  if (r->driver->is_short) {
    for (int i = 0; i < r->n; i++) {
      if (!r->conn[i]->broken && r->long_reads[i] == 0 && r->inflight[i] < SHORT_QUEUE) {
        if (r->driver->is_short(r->conn[i], req)) {
          slot = i;
          *long_read = 0;
        }
        break;
      }
    }
  }
  r->inflight[slot]++;
  r->long_reads[slot] += *long_read;
  return slot;
}

void loom_readers_leave(loom_readers_t *r, int slot, const loom_db_conn_t *conn, int long_read) {
  if (slot < r->n && r->conn[slot] == conn) {
    r->inflight[slot]--;
    r->long_reads[slot] -= long_read;
  }
}

int loom_readers_add(loom_readers_t *r, loom_db_conn_t *conn) {
  if (r->n >= r->target)
    return -1;
  r->conn[r->n] = conn;
  r->inflight[r->n] = 1;
  r->long_reads[r->n] = 1;
  return r->n++;
}

void loom_readers_settled(loom_readers_t *r, int wake) {
  r->pending--;
  if (wake)
    loom_waitq_wake_all(&r->waiters, 0);
}
