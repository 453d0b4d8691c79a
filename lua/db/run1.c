/* One statement in one call (db:_run1): a connection borrowed, or a
 * shared reader joined, the statement run and the connection given back. */
#include <stdlib.h>
#include <string.h>
#include "lm_db.h"

/* A read acquiring a connection to become a shared reader got one, an
 * error, or gave up: the reads waiting for it try again (they join the new
 * reader, or one of them acquires in its place). */
void lm_db_lease_settled(lm_conn *c) {
  if (!c->make_lease)
    return;
  c->make_lease = 0;
  lm_db *db = c->db;
  db->lease_pending--;
  if (!db->ctx->closed)
    loom_waitq_wake_all(&db->lease_waiters, 0);
}

static void drop_idle_broken_leases(lm_db *db) {
  for (int i = 0; i < db->nleases; i++) {
    if (db->leases[i]->broken && db->lease_inflight[i] == 0) {
      loom_pool_discard(db->readers, db->leases[i]);
      db->nleases--;
      db->leases[i] = db->leases[db->nleases];
      db->lease_inflight[i] = db->lease_inflight[db->nleases];
      db->lease_long[i] = db->lease_long[db->nleases];
      i--;
    }
  }
}


/* The connection came (or did not): start the statement, or say why not. */
static int run1_acquired(lua_State *L, lm_conn *c) {
  loom_pool_req_t *preq = &c->preq;
  lm_db *db = c->db;
  if (preq->status != 0) {
    c->one_shot = 0;
    lm_db_lease_settled(c);
    return lm_conn_acquire_error(L, c);
  }
  c->conn = preq->conn;
  c->conn->track_changes = db->track_changes;
  if (c->make_lease && db->nleases < db->lease_target) {
    db->leases[db->nleases] = c->conn;
    db->lease_inflight[db->nleases] = 1;
    db->lease_long[db->nleases] = 1;
    c->long_read = 1;
    c->lease = db->nleases++;
  }
  lm_db_lease_settled(c);
  return lm_conn_start(L, c, lm_conn_query_done_k);
}

static int run1_acquired_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status; (void)kctx;
  return run1_acquired(L, lua_touserdata(L, 1));
}

static int run1_route(lua_State *L, lm_conn *c);

static int run1_lease_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lm_wait *w = LM_WAIT_OF(kctx);
  if (w->status != 0) {
    lm_conn *c = lua_touserdata(L, 1);
    c->one_shot = 0;
    lm_wait_check(L, w);
  }
  return run1_route(L, lua_touserdata(L, 1));
}

/* Where the statement of c runs: on a shared reader, on a connection of
 * its own from the pool, or (while the shared readers are being opened)
 * nowhere yet: then it waits for one. Were those reads queued on the pool
 * instead, each would take a reader for itself in turn, and a burst of
 * reads on a fresh handle would run one at a time per connection. */
static int run1_route(lua_State *L, lm_conn *c) {
  lm_db *db = c->db;
  if (db->closed) {
    c->one_shot = 0;
    return lm_error(L, "closed", "the database handle is closed");
  }
  if (c->reading && db->lease_target > 0) {
    drop_idle_broken_leases(db);
    /* The reader with the fewest long reads out, then the fewest reads. */
    int best = -1;
    for (int i = 0; i < db->nleases; i++)
      if (!db->leases[i]->broken &&
          (best < 0 || db->lease_long[i] < db->lease_long[best] ||
           (db->lease_long[i] == db->lease_long[best] &&
            db->lease_inflight[i] < db->lease_inflight[best])))
        best = i;
    int coming = db->nleases + db->lease_pending;
    if (best >= 0 && (db->lease_inflight[best] == 0 || coming >= db->lease_target)) {
      /* With no other task ready to run and no read out on a reader, the
       * loop would only wait for the answer: a short read runs right here
       * instead (the driver says whether it can). Otherwise the loop runs
       * tasks while the readers run statements, in parallel. Like any
       * wait, the call first lets a pending cancel or an expired timeout
       * in. */
      int out = 0;
      for (int i = 0; i < db->nleases; i++)
        out += db->lease_inflight[i];
      int here = out == 0 && db->ctx->ready_head == NULL && db->driver->try_inline != NULL;
      if (here) {
        lm_wait_abort(lm_wait_prepare(L, db->ctx));
        if (db->driver->try_inline(db->leases[best], &c->req) == 0) {
          c->pool = db->readers;
          c->lease = best;
          c->conn = db->leases[best];
          db->lease_inflight[best]++;
          db->inline_reads++;
          return lm_conn_query_done_k(L, LUA_OK, 0);
        }
      }
      /* Reads known to be short queue on the first reader that runs only
       * such reads: one worker thread busy beside the loop instead of
       * several, each spinning for one of a few cores. Others (a long
       * one, one not seen yet) go to the reader chosen above. */
      c->long_read = 1;
      if (db->driver->is_short) {
        for (int i = 0; i < db->nleases; i++) {
          if (!db->leases[i]->broken && db->lease_long[i] == 0 &&
              db->lease_inflight[i] < SHORT_QUEUE) {
            if (db->driver->is_short(db->leases[i], &c->req)) {
              best = i;
              c->long_read = 0;
            }
            break;
          }
        }
      }
      c->pool = db->readers;
      c->lease = best;
      c->conn = db->leases[best];
      db->lease_inflight[best]++;
      db->lease_long[best] += c->long_read;
      return lm_conn_start(L, c, lm_conn_query_done_k);
    }
    if (best < 0 && db->lease_pending >= db->lease_target) {
      lm_wait *w = lm_wait_prepare(L, db->ctx);
      loom_waitq_push(&db->lease_waiters, &w->one);
      return lm_wait_begin(L, w, run1_lease_k);
    }
    c->make_lease = 1;
    db->lease_pending++;
  }
  c->pool = c->reading && db->readers ? db->readers : db->pool;
  return lm_conn_acquire(L, c, run1_acquired_k);
}

/* db:_run1(mode, reading, sql, cache, ...) -> what conn:_query/_value/_exec
 * give: a connection borrowed (or a shared reader joined), the statement
 * run and the connection given back, in one call from Lua. */
int lm_db_run1(lua_State *L) {
  lm_db *db = lm_db_check(L);
  int mode = (int)luaL_checkinteger(L, 2);
  int reading = lua_toboolean(L, 3);
  size_t len;
  const char *sql = luaL_checklstring(L, 4, &len);
  int cache = lua_toboolean(L, 5);
  /* Into the layout conn methods have: conn, sql, cache, params... */
  lua_rotate(L, 2, -2);
  lua_pop(L, 2);
  lm_conn_new(L, db);
  lua_replace(L, 1);
  lm_conn *c = lua_touserdata(L, 1);
  c->mode = mode;
  int n = lm_conn_read_params(L, c, 4, sql, len);
  lm_conn_set_sql(c, LOOM_DB_QUERY, sql, len, n, cache);
  c->one_shot = 1;
  c->reading = reading;
  return run1_route(L, c);
}
