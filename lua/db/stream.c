/* Streams: a statement whose rows arrive one by one (conn:_stream,
 * conn:_next), or end early (conn:_stop). */
#include "lm_db.h"

static int next_done_k(lua_State *L, int status, lua_KContext kctx);

static int take_row(lua_State *L, lm_conn *c) {
  loom_db_req_t *req = &c->req;
  if (c->row_ready) {
    c->row_ready = 0;
    loom_db_result_t *r = req->result;
    req->result = NULL;
    lm_db_push_rows(L, r);
    loom_db_result_free(r);
    lua_rawgeti(L, -1, 1);
    /* Ask for the next row while this one is being used. */
    c->conn->driver->next(c->conn, req);
    return 1;
  }
  if (c->stream_done) {
    c->stream_done = 0;
    if (req->status != 0)
      return lm_db_raise_error(L, c->db, req->status, &req->err, req->sql);
    loom_db_result_free(req->result);
    req->result = NULL;
    return 0;
  }
  lm_request_prepare(L, &c->rq, &lm_statement_ops, 0);
  return lm_request_wait(L, &c->rq, next_done_k);
}

static int next_done_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status; (void)kctx;
  return take_row(L, lua_touserdata(L, 1));
}

/* conn:_stream(sql, ...) starts a streamed statement; conn:_next() -> row | nil */
static int conn_stream(lua_State *L) {
  lm_conn *c = lm_conn_check(L);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  int n = lm_conn_read_params(L, c, 3, sql, len);
  lm_conn_set_sql(c, LOOM_DB_STREAM, sql, len, n, 0);
  c->req.cb = lm_conn_req_done;
  c->req.data = c;
  int r = c->conn->driver->start(c->conn, &c->req);
  if (r != 0)
    return lm_db_raise_error(L, c->db, r, &c->req.err, sql);
  /* The SQL and parameters must outlive this call: anchor the SQL. */
  lm_request_anchor(L, 1, CONN_ANCHOR, 2);
  return 0;
}

static int conn_next(lua_State *L) {
  lm_conn *c = lm_conn_check(L);
  lua_settop(L, 1);
  if (c->req.op != LOOM_DB_STREAM)
    return 0;
  return take_row(L, c);
}

static int stop_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status; (void)kctx;
  lm_conn *c = lua_touserdata(L, 1);
  loom_db_result_free(c->req.result);
  c->req.result = NULL;
  loom_db_error_clear(&c->req.err);
  c->row_ready = 0;
  c->stream_done = 0;
  lua_pushboolean(L, c->req.status == 0 || c->req.status == LOOM_ECANCELED ||
                     c->req.status == LOOM_EDB_QUERY);
  return 1;
}

/* conn:_stop() ends a stream early: cancel, drop the rest, wait for idle. */
static int conn_stop(lua_State *L) {
  lm_conn *c = lm_conn_check(L);
  lua_settop(L, 1);
  if (!c->req.active)
    return stop_k(L, LUA_OK, 0);
  c->conn->driver->cancel(c->conn);
  if (c->row_ready) {
    c->row_ready = 0;
    loom_db_result_free(c->req.result);
    c->req.result = NULL;
    c->conn->driver->next(c->conn, &c->req);
  }
  lm_request_prepare(L, &c->rq, &lm_statement_ops, 1);
  return lm_request_wait(L, &c->rq, stop_k);
}

const luaL_Reg lm_stream_methods[] = {
  {"_stream", conn_stream},
  {"_next", conn_next},
  {"_stop", conn_stop},
  {NULL, NULL}
};
