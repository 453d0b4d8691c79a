/* One statement in one call (db:_run1): a connection borrowed, or a
 * shared reader joined, the statement run and the connection given back. */
#include <stdlib.h>
#include <string.h>
#include "lm_db.h"

/* A read that was to open a shared reader got its connection, an error,
 * or gave up. */
void lm_db_lease_settled(lm_conn *c) {
  if (!c->make_lease)
    return;
  c->make_lease = 0;
  loom_readers_settled(&c->db->rs, !c->db->ctx->closed);
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
  if (c->make_lease) {
    c->lease = loom_readers_add(&db->rs, c->conn);
    c->long_read = c->lease >= 0;
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
 * its own from the pool, or nowhere yet (while the shared readers are
 * being opened): then it waits for one (core/db/readers.c decides). */
static int run1_route(lua_State *L, lm_conn *c) {
  lm_db *db = c->db;
  loom_readers_t *rs = &db->rs;
  if (db->closed) {
    c->one_shot = 0;
    return lm_error(L, "closed", "the database handle is closed");
  }
  int slot = 0;
  switch (c->reading ? loom_readers_route(rs, &slot) : LOOM_READ_POOL) {
  case LOOM_READ_JOIN:
    c->pool = rs->readers;
    /* With no other task ready to run, a short read may run right here.
     * Like any wait, the call first lets a pending cancel or an expired
     * timeout in. */
    if (db->ctx->ready_head == NULL && loom_readers_can_inline(rs, slot)) {
      if (lm_wait_would_raise(db->ctx))
        lm_wait_abort(lm_wait_prepare(L, db->ctx)); /* raises */
      if (loom_readers_try_inline(rs, slot, &c->req) == 0) {
        c->lease = slot;
        c->conn = rs->conn[slot];
        return lm_conn_query_done_k(L, LUA_OK, 0);
      }
    }
    c->lease = loom_readers_enter(rs, slot, &c->req, &c->long_read);
    c->conn = rs->conn[c->lease];
    return lm_conn_start(L, c, lm_conn_query_done_k);
  case LOOM_READ_WAIT: {
    lm_wait *w = lm_wait_prepare(L, db->ctx);
    loom_waitq_push(&rs->waiters, &w->one);
    return lm_wait_begin(L, w, run1_lease_k);
  }
  case LOOM_READ_GROW:
    c->make_lease = 1;
    break;
  default:
    break;
  }
  c->pool = loom_readers_pool(rs, c->reading);
  return lm_conn_acquire(L, c, run1_acquired_k);
}

/* db:_run1(mode, may_read, sql, cache, ...) -> what conn:_query/_value/_exec
 * give: a connection borrowed (or a shared reader joined), the statement
 * run and the connection given back, in one call from Lua. may_read: a
 * reader may run it if the driver finds that the SQL only reads. */
int lm_db_run1(lua_State *L) {
  lm_db *db = lm_db_check(L);
  int mode = (int)luaL_checkinteger(L, 2);
  size_t len;
  const char *sql = luaL_checklstring(L, 4, &len);
  int reading = lua_toboolean(L, 3) && loom_readers_may_read(&db->rs, sql, len);
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
