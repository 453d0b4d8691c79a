/* Bulk loads, the two ways a driver may take many rows: one prepared
 * statement run for every row in one job (conn:_insert_rows), and a
 * COPY-IN stream fed chunk by chunk (conn:_copy, conn:_copy_data). */
#include "lm_db.h"

static int insert_done_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status; (void)kctx;
  lm_conn *c = lua_touserdata(L, 1);
  int failed = lm_conn_batch_failed(L, c);
  if (failed >= 0) {
    lua_pushinteger(L, lua_tointeger(L, 5) + failed);
    lua_setfield(L, -2, "row");
    return lua_error(L);
  }
  lua_pushinteger(L, c->nstmts);
  return 1;
}

/* conn:_insert_rows(sql, columns, rows, first, last) -> count: the one
 * prepared INSERT run for rows[first..last], all in one job. Rows are
 * arrays in column order or tables keyed by column name. */
static int conn_insert_rows(lua_State *L) {
  lm_conn *c = lm_conn_check(L);
  size_t sql_len;
  const char *sql = luaL_checklstring(L, 2, &sql_len);
  luaL_checktype(L, 3, LUA_TTABLE);
  luaL_checktype(L, 4, LUA_TTABLE);
  lua_Integer first = luaL_checkinteger(L, 5), last = luaL_checkinteger(L, 6);
  lua_settop(L, 6);
  int ncols = (int)lua_rawlen(L, 3);
  int n = (int)(last - first + 1);
  if (n <= 0 || ncols <= 0) {
    lua_pushinteger(L, 0);
    return 1;
  }
  loom_db_stmt_t *stmts = lm_conn_reserve_stmts(L, c, n);
  lm_conn_reserve_params(L, c, n * ncols);
  lua_rawgeti(L, 3, 1); /* 7: the first column's name tells keyed rows apart */
  for (int i = 0; i < n; i++) {
    if (lua_rawgeti(L, 4, first + i) != LUA_TTABLE)
      return lm_error(L, "argument", "row %d is a %s, not a table", (int)(first + i),
                      luaL_typename(L, -1));
    int row = lua_gettop(L);
    lua_pushvalue(L, 7);
    int keyed = lua_rawget(L, row) != LUA_TNIL;
    lua_pop(L, 1);
    loom_value_t *vals = c->params + (size_t)i * (size_t)ncols;
    for (int k = 0; k < ncols; k++) {
      if (keyed) {
        lua_rawgeti(L, 3, k + 1);
        lua_rawget(L, row);
      } else {
        lua_rawgeti(L, row, k + 1);
      }
      /* Strings stay alive in the rows table, which this call keeps on its
       * stack until the job is done. */
      if (lm_db_to_value(L, -1, &vals[k]) != 0)
        return lm_error(L, "argument", "row %d, column %d is a %s: only nil/loom.null, "
                        "booleans, numbers and strings can be stored",
                        (int)(first + i), k + 1, luaL_typename(L, -1));
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    stmts[i].sql = sql;
    stmts[i].sql_len = sql_len;
    stmts[i].params = vals;
    stmts[i].nparams = ncols;
  }
  lua_settop(L, 6);
  return lm_conn_start_batch(L, c, n, 1, 1, insert_done_k);
}

/* ---- COPY ------------------------------------------------------------------------ */

static int copy_done_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status; (void)kctx;
  lm_conn *c = lua_touserdata(L, 1);
  loom_db_req_t *req = &c->req;
  if (req->status != 0) {
    lm_conn_push_failure(L, c, NULL);
    return lua_error(L);
  }
  if (req->more) {
    lm_copy_chunk_free(L, 2); /* the driver has taken it */
    return 0; /* ready for (more) data */
  }
  loom_db_result_t *r = req->result;
  req->result = NULL;
  lua_pushinteger(L, r ? r->affected : 0);
  loom_db_result_free(r);
  return 1;
}

/* conn:_copy(sql) starts COPY FROM STDIN; conn:_copy_data(chunk) sends;
 * conn:_copy_data() ends and returns the row count. */
static int conn_copy(lua_State *L) {
  lm_conn *c = lm_conn_check(L);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  lua_settop(L, 2);
  lm_request_anchor(L, 1, CONN_ANCHOR, 2);
  lm_conn_set_sql(c, LOOM_DB_COPY_IN, sql, len, 0, 0);
  return lm_conn_start(L, c, copy_done_k);
}

static int conn_copy_data(lua_State *L) {
  lm_conn *c = lm_conn_check(L);
  size_t len = 0;
  const char *buf = lua_isnoneornil(L, 2) ? "" : lm_copy_chunk(L, 2, &len);
  if (buf == NULL)
    return luaL_typeerror(L, 2, "string or COPY chunk");
  lua_settop(L, 2);
  if (!c->req.active || c->req.op != LOOM_DB_COPY_IN)
    return lm_error(L, "usage", "no COPY in progress on this connection");
  lm_request_anchor(L, 1, CONN_ANCHOR, 2); /* the driver may need the chunk until it has room */
  if (len == 0)
    buf = "";
  lm_request_prepare(L, &c->rq, &lm_statement_ops, 0);
  int r = c->conn->driver->copy_data(c->conn, &c->req, buf, len);
  if (r != 0) {
    lm_request_abort(&c->rq);
    return lm_error(L, "usage", "the connection is not ready for COPY data");
  }
  return lm_request_wait(L, &c->rq, copy_done_k);
}

const luaL_Reg lm_bulk_methods[] = {
  {"_insert_rows", conn_insert_rows},
  {"_copy", conn_copy},
  {"_copy_data", conn_copy_data},
  {NULL, NULL}
};
