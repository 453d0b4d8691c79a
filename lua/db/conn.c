/* A conn: one pooled connection lent to a task. Every call that talks to
 * the server is a request (lua/request.c): it waits like any loom call,
 * and a wait that is cancelled (task:cancel, loom.timeout) cancels the
 * statement on the server and drains the connection before the error is
 * raised, so no query keeps running behind the caller's back. */
#include <stdlib.h>
#include <string.h>
#include "lm_db.h"

lm_conn *lm_conn_check(lua_State *L) {
  lm_conn *c = lm_check_self(L, LM_CONN_MT, "loom.db.conn");
  if (c->conn == NULL)
    lm_error(L, "closed", "this connection was released to the pool");
  return c;
}

static void pool_done(loom_pool_req_t *preq) {
  lm_conn *c = preq->data;
  lm_request_complete(&c->rq);
}

/* An acquire is out while queued on the pool or while the connection it
 * brought is not taken yet; stopping it gives back what came. */
static int acquire_pending(lm_request *r) {
  lm_conn *c = LM_CONTAINER_OF(r, lm_conn, rq);
  return loom_waiter_queued(&c->preq.waiter) || c->preq.conn != NULL;
}

static void acquire_stop(lm_request *r) {
  lm_conn *c = LM_CONTAINER_OF(r, lm_conn, rq);
  loom_pool_cancel(&c->preq);
  if (c->preq.conn) {
    loom_pool_release(c->pool, c->preq.conn);
    c->preq.conn = NULL;
  }
}

static void acquire_drained(lua_State *L, lm_request *r) {
  (void)L;
  lm_conn *c = LM_CONTAINER_OF(r, lm_conn, rq);
  c->one_shot = 0;
  lm_db_lease_settled(c);
}

static const lm_request_ops acquire_ops = {acquire_pending, acquire_stop, acquire_drained};

/* Queues c on its pool for a connection; done runs once it came or not. */
int lm_conn_acquire(lua_State *L, lm_conn *c, lua_KFunction done) {
  c->preq.cb = pool_done;
  c->preq.data = c;
  int r = loom_pool_acquire(c->pool, &c->preq);
  if (r != LOOM_EAGAIN) {
    c->preq.status = r;
    return done(L, LUA_OK, 0);
  }
  lm_request_prepare(L, &c->rq, &acquire_ops, 0);
  return lm_request_wait(L, &c->rq, done);
}

/* Raises why the pool gave no connection. */
int lm_conn_acquire_error(lua_State *L, lm_conn *c) {
  loom_pool_req_t *preq = &c->preq;
  if (preq->status == LOOM_ETIMEDOUT) {
    loom_pool_stats_t s;
    loom_pool_stats(c->pool, &s);
    return lm_error(L, "pool_timeout",
                    "no connection free within the acquire timeout (%d in use, %d waiting)",
                    (int)s.in_use, (int)s.waiting);
  }
  if (preq->status == LOOM_ECLOSED)
    return lm_error(L, "closed", "the database handle was closed while waiting for a connection");
  return lm_db_raise_error(L, c->db, preq->status, &preq->err, NULL);
}

static int acquired(lua_State *L, lm_conn *c) {
  if (c->preq.status != 0)
    return lm_conn_acquire_error(L, c);
  c->conn = c->preq.conn;
  c->conn->track_changes = c->db->track_changes;
  lua_settop(L, 2);
  return 1;
}

static int acquired_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status; (void)kctx;
  return acquired(L, lua_touserdata(L, 2));
}

/* Pushes a conn object for db (at index 1) as index 2. A statement
 * borrows one per call: reuse one given back rather than make garbage on
 * every query. */
lm_conn *lm_conn_new(lua_State *L, lm_db *db) {
  lm_conn *c = NULL;
  int top = lua_gettop(L);
  lua_getiuservalue(L, 1, DB_SPARE);
  lua_Integer spare = (lua_Integer)lua_rawlen(L, top + 1);
  if (spare > 0) {
    lua_rawgeti(L, top + 1, spare);
    lua_pushnil(L);
    lua_rawseti(L, top + 1, spare);
    lua_remove(L, top + 1);
    c = lua_touserdata(L, top + 1);
    loom_value_t *params = c->params;
    int params_cap = c->params_cap;
    loom_db_stmt_t *stmts = c->stmts;
    int nstmts = c->nstmts;
    memset(c, 0, sizeof *c);
    c->params = params;
    c->params_cap = params_cap;
    c->stmts = stmts;
    c->nstmts = nstmts;
  } else {
    lua_settop(L, top);
    c = lua_newuserdatauv(L, sizeof *c, 2);
    memset(c, 0, sizeof *c);
    luaL_setmetatable(L, LM_CONN_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, top + 1, CONN_DB);
  }
  c->ctx = db->ctx;
  c->rq.ctx = db->ctx;
  c->db = db;
  c->lease = -1;
  return c;
}

static lm_conn *push_conn_object(lua_State *L, lm_db *db) {
  lua_settop(L, 1);
  return lm_conn_new(L, db);
}

/* db:_acquire([for_reading]) -> conn; a one-writer layout serves reads
 * beside the writer. for_reading: true, or the SQL the connection is for
 * (a reader if the driver finds that it only reads). */
int lm_db_acquire(lua_State *L) {
  lm_db *db = lm_db_check(L);
  size_t len;
  const char *sql = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &len) : NULL;
  int reading = sql ? loom_readers_may_read(&db->rs, sql, len) : lua_toboolean(L, 2);
  lm_conn *c = push_conn_object(L, db);
  c->pool = loom_readers_pool(&db->rs, reading);
  return lm_conn_acquire(L, c, acquired_k);
}

void lm_conn_give_back(lm_conn *c, int discard) {
  if (c->conn == NULL)
    return;
  loom_db_conn_t *conn = c->conn;
  c->conn = NULL;
  if (c->lease >= 0) {
    int i = c->lease;
    c->lease = -1;
    if (c->req.active) {
      /* Collected with its statement queued: it is stopped, and its
       * completion finds nobody to tell. */
      c->req.data = NULL;
      if (!c->db->ctx->closed)
        conn->driver->cancel_shared(conn, &c->req);
    }
    loom_readers_leave(&c->db->rs, i, conn, c->long_read);
    c->long_read = 0;
    return;
  }
  if (c->db->ctx->closed)
    return;
  if (conn->req) {
    /* Released mid-request (collected with a query in flight): the
     * connection cannot be trusted; close it. */
    conn->req->data = NULL;
    discard = 1;
  }
  if (discard)
    loom_pool_discard(c->pool, conn);
  else
    loom_pool_release(c->pool, conn);
}

static int conn_release(lua_State *L) {
  lm_conn *c = lm_check_self(L, LM_CONN_MT, "loom.db.conn");
  lm_conn_give_back(c, lua_toboolean(L, 2));
  return 0;
}

/* Gives back the connection of the conn object at idx and, when nothing
 * else can refer to it (DB:_run's and _run1's borrowed conns, which
 * nothing keeps after), keeps the object among the db's spares. The stack
 * is left as it was. */
void lm_conn_end_borrow(lua_State *L, int idx) {
  lm_conn *c = lua_touserdata(L, idx);
  c->one_shot = 0;
  lm_conn_give_back(c, 0);
  if (c->rq.wait || c->req.active || loom_waiter_queued(&c->preq.waiter) || c->db->closed)
    return;
  loom_db_result_free(c->req.result);
  c->req.result = NULL;
  loom_db_error_clear(&c->req.err);
  idx = lua_absindex(L, idx);
  int top = lua_gettop(L);
  lua_pushnil(L);
  lua_setiuservalue(L, idx, CONN_ANCHOR);
  lua_getiuservalue(L, idx, CONN_DB);
  lua_getiuservalue(L, -1, DB_SPARE);
  lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
  if (n < SPARE_MAX) {
    lua_pushvalue(L, idx);
    lua_rawseti(L, -2, n + 1);
  }
  lua_settop(L, top);
}

static int conn_release_close(lua_State *L) {
  lm_check_self(L, LM_CONN_MT, "loom.db.conn");
  lm_conn_end_borrow(L, 1);
  return 0;
}

static int conn_gc(lua_State *L) {
  lm_conn *c = lua_touserdata(L, 1);
  if (c->rq.wait == NULL && c->preq.waiter.queue && !c->ctx->closed)
    loom_pool_cancel(&c->preq);
  c->rq.wait = NULL;
  lm_db_lease_settled(c);
  lm_conn_give_back(c, 1);
  for (int i = 0; i < c->nstmts; i++) {
    loom_db_result_free(c->stmts[i].result);
    loom_db_error_clear(&c->stmts[i].err);
  }
  free(c->stmts);
  free(c->params);
  loom_db_result_free(c->req.result);
  c->req.result = NULL;
  loom_db_error_clear(&c->req.err);
  return 0;
}

void lm_conn_req_done(loom_db_req_t *req) {
  lm_conn *c = req->data;
  if (c == NULL)
    return;
  if (req->op == LOOM_DB_STREAM) {
    if (req->more)
      c->row_ready = 1;
    else
      c->stream_done = 1;
  }
  lm_request_complete(&c->rq);
}

static int statement_pending(lm_request *r) {
  return LM_CONTAINER_OF(r, lm_conn, rq)->req.active;
}

/* Cancels on the server too; the statement still completes. */
static void statement_stop(lm_request *r) {
  lm_conn *c = LM_CONTAINER_OF(r, lm_conn, rq);
  if (c->lease >= 0)
    c->conn->driver->cancel_shared(c->conn, &c->req);
  else
    c->conn->driver->cancel(c->conn);
}

static void statement_drained(lua_State *L, lm_request *r) {
  lm_conn *c = LM_CONTAINER_OF(r, lm_conn, rq);
  loom_db_result_free(c->req.result);
  c->req.result = NULL;
  loom_db_error_clear(&c->req.err);
  c->row_ready = 0;
  c->stream_done = 1;
  if (c->one_shot)
    lm_conn_end_borrow(L, 1);
}

const lm_request_ops lm_statement_ops = {statement_pending, statement_stop,
                                             statement_drained};

int lm_conn_start(lua_State *L, lm_conn *c, lua_KFunction k) {
  if (c->one_shot && !c->shielded && lm_wait_would_raise(c->ctx)) {
    /* The pool handed the connection over, and a cancel or a timeout came
     * before this task ran again: the statement is not sent. Nothing but
     * this call refers to the connection: give it back before raising, or
     * it stays out of the pool until the collector frees the object, and
     * with nothing left to allocate, nothing collects and every task waits
     * on the pool forever. */
    lm_conn_end_borrow(L, 1);
    lm_wait_abort(lm_wait_prepare(L, c->ctx)); /* raises */
    return lm_error(L, "cancelled", "request interrupted");
  }
  c->req.cb = lm_conn_req_done;
  c->req.data = c;
  lm_request_prepare(L, &c->rq, &lm_statement_ops, c->shielded);
  c->shielded = 0;
  const loom_db_driver_t *drv = c->conn->driver;
  int r = c->lease >= 0 ? drv->start_shared(c->conn, &c->req) : drv->start(c->conn, &c->req);
  if (r != 0) {
    lm_request_abort(&c->rq);
    lm_db_push_error(L, c->db, r, &c->req.err, c->req.sql);
    if (c->one_shot)
      lm_conn_end_borrow(L, 1);
    return lua_error(L);
  }
  return lm_request_wait(L, &c->rq, k);
}

void lm_conn_push_failure(lua_State *L, lm_conn *c, const char *sql) {
  loom_db_result_free(c->req.result);
  c->req.result = NULL;
  lm_db_push_error(L, c->db, c->req.status, &c->req.err, sql);
}

int lm_conn_query_done_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status; (void)kctx;
  lm_conn *c = lua_touserdata(L, 1);
  loom_db_req_t *req = &c->req;
  if (req->status != 0) {
    lm_conn_push_failure(L, c, req->sql);
    if (c->one_shot)
      lm_conn_end_borrow(L, 1);
    return lua_error(L);
  }
  loom_db_result_t *r = req->result;
  req->result = NULL;
  lm_conn_deliver_changes(L, c);
  if (c->one_shot)
    lm_conn_end_borrow(L, 1);
  int n = 2;
  switch (c->mode) {
  case MODE_VALUE:
    /* The first column of the first row, without building any table. */
    n = 1;
    if (r && r->nrows > 0 && r->ncols > 0) {
      loom_value_t v;
      r->ops->cell(r, 0, 0, &v);
      lm_db_push_value(L, &v);
    } else {
      lua_pushnil(L);
    }
    break;
  case MODE_EXEC:
    n = 2;
    lua_pushinteger(L, r && r->affected > 0 ? r->affected : 0);
    if (r && r->last_insert_id)
      lua_pushinteger(L, r->last_insert_id);
    else
      lua_pushnil(L);
    break;
  default:
    lm_db_push_result(L, r);
  }
  loom_db_result_free(r);
  return n;
}

void lm_conn_set_sql(lm_conn *c, loom_db_op_t op, const char *sql, size_t len, int n, int cache) {
  loom_db_error_clear(&c->req.err);
  c->req.op = op;
  c->req.sql = sql;
  c->req.sql_len = len;
  c->req.params = c->params;
  c->req.nparams = n;
  c->req.cache = cache;
  /* exec with no parameters may run a script of several statements. */
  c->req.script = op == LOOM_DB_QUERY && c->mode == MODE_EXEC && n == 0;
  c->row_ready = c->stream_done = 0;
}

/* conn:_query(sql, cache, ...) -> rows, info */
static int run_query(lua_State *L, int mode) {
  lm_conn *c = lm_conn_check(L);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  int cache = lua_toboolean(L, 3);
  int n = lm_conn_read_params(L, c, 4, sql, len);
  c->mode = mode;
  lm_conn_set_sql(c, LOOM_DB_QUERY, sql, len, n, cache);
  return lm_conn_start(L, c, lm_conn_query_done_k);
}

static int conn_query(lua_State *L) { return run_query(L, MODE_ROWS); }

/* conn:_value(sql, cache, ...) -> the first column of the first row */
static int conn_value(lua_State *L) { return run_query(L, MODE_VALUE); }

/* conn:_exec(sql, cache, ...) -> affected, last insert id */
static int conn_exec(lua_State *L) { return run_query(L, MODE_EXEC); }

/* conn:_settle(sql) runs a statement whose outcome the caller must know,
 * like COMMIT: once sent it is waited for, whatever happens meanwhile. A
 * cancel or a timeout that arrives during it ends the next wait instead;
 * interrupting it would leave "was it committed?" without an answer. */
static int conn_settle(lua_State *L) {
  lm_conn *c = lm_conn_check(L);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  lua_settop(L, 2);
  lm_conn_set_sql(c, LOOM_DB_QUERY, sql, len, 0, 0);
  c->mode = MODE_EXEC;
  c->shielded = 1;
  return lm_conn_start(L, c, lm_conn_query_done_k);
}

static int conn_txn(lua_State *L) {
  lm_conn *c = lm_conn_check(L);
  static const char *const names[] = {"idle", "active", "failed", "unknown"};
  lua_pushstring(L, names[c->conn->driver->txn(c->conn)]);
  return 1;
}

static int conn_backend_id(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)lm_conn_check(L)->conn->backend_id);
  return 1;
}

static int conn_broken(lua_State *L) {
  lm_conn *c = lm_check_self(L, LM_CONN_MT, "loom.db.conn");
  lua_pushboolean(L, c->conn == NULL || c->conn->broken);
  return 1;
}

static int conn_db(lua_State *L) {
  lm_check_self(L, LM_CONN_MT, "loom.db.conn");
  lua_getiuservalue(L, 1, CONN_DB);
  return 1;
}

static int conn_tostring(lua_State *L) {
  lm_conn *c = lm_check_self(L, LM_CONN_MT, "loom.db.conn");
  if (c->conn)
    lua_pushfstring(L, "loom.db.conn (%s, backend %d)", c->db->driver->name,
                    (int)c->conn->backend_id);
  else
    lua_pushliteral(L, "loom.db.conn (released)");
  return 1;
}

static const luaL_Reg conn_methods[] = {
  {"_query", conn_query},
  {"_value", conn_value},
  {"_exec", conn_exec},
  {"_settle", conn_settle},
  {"_release", conn_release},
  {"_txn", conn_txn},
  {"_backend_id", conn_backend_id},
  {"_broken", conn_broken},
  {"_db", conn_db},
  {NULL, NULL}
};

static const luaL_Reg conn_metamethods[] = {
  {"__gc", conn_gc},
  {"__tostring", conn_tostring},
  /* `local c <close> = db:_acquire()` gives it back however the scope ends. */
  {"__close", conn_release_close},
  {NULL, NULL}
};

void lm_open_conn(lua_State *L) {
  lm_new_class(L, LM_CONN_MT, conn_methods, conn_metamethods);
}

void lm_db_push_modes(lua_State *L) {
  static const struct { const char *name; int mode; } modes[] = {
    {"rows", MODE_ROWS}, {"value", MODE_VALUE}, {"exec", MODE_EXEC}};
  lua_createtable(L, 0, 3);
  for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
    lua_pushinteger(L, modes[i].mode);
    lua_setfield(L, -2, modes[i].name);
  }
}
