/* Batches: several statements, each with its parameters, in one round
 * trip (conn:_batch). */
#include <string.h>
#include "lm_db.h"

int lm_conn_start_batch(lua_State *L, lm_conn *c, int n, int cache, int no_rows,
                        lua_KFunction k) {
  c->nstmts = n;
  loom_db_error_clear(&c->req.err);
  c->req.op = LOOM_DB_BATCH;
  c->req.sql = NULL;
  c->req.stmts = c->stmts;
  c->req.nstmts = n;
  c->req.cache = cache;
  c->req.no_rows = no_rows;
  return lm_conn_start(L, c, k);
}

int lm_conn_batch_failed(lua_State *L, lm_conn *c) {
  loom_db_req_t *req = &c->req;
  if (req->status != 0)
    return lm_db_raise_error(L, c->db, req->status, &req->err, NULL);
  lm_conn_deliver_changes(L, c);
  for (int i = 0; i < c->nstmts; i++) {
    loom_db_stmt_t *st = &c->stmts[i];
    if (st->status != 0) {
      /* Each statement's SQL is a Lua string the call keeps on its stack. */
      lm_db_push_error(L, c->db, st->status, &st->err, st->sql);
      return i;
    }
  }
  return -1;
}

static int batch_done_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status; (void)kctx;
  lm_conn *c = lua_touserdata(L, 1);
  int failed = lm_conn_batch_failed(L, c);
  if (failed >= 0) {
    lua_pushinteger(L, failed + 1);
    lua_setfield(L, -2, "batch_index");
    return lua_error(L);
  }
  lua_createtable(L, c->nstmts, 0);
  for (int i = 0; i < c->nstmts; i++) {
    loom_db_result_t *r = c->stmts[i].result;
    c->stmts[i].result = NULL;
    lm_db_push_rows(L, r); /* info of a batch item is rarely wanted */
    loom_db_result_free(r);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* conn:_batch({ {sql, p1, p2, ...}, ... }, cache) -> { rows1, rows2, ... } */
static int conn_batch(lua_State *L) {
  lm_conn *c = lm_conn_check(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  int cache = lua_toboolean(L, 3);
  lua_settop(L, 2);
  int n = (int)lua_rawlen(L, 2);
  if (n == 0) {
    lua_newtable(L);
    return 1;
  }
  loom_db_stmt_t *stmts = lm_conn_reserve_stmts(L, c, n);
  c->nstmts = n;
  /* One parameter array for all statements; each points into it. */
  int total = 0;
  for (int i = 1; i <= n; i++) {
    if (lua_rawgeti(L, 2, i) != LUA_TTABLE)
      return lm_error(L, "argument", "batch item %d must be a table {sql, params...}", i);
    total += (int)lua_rawlen(L, -1) - 1;
    lua_pop(L, 1);
  }
  lm_conn_reserve_params(L, c, total);
  int used = 0;
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, 2, i + 1);
    int item = lua_gettop(L);
    int len = (int)lua_rawlen(L, item);
    lua_rawgeti(L, item, 1);
    size_t sql_len;
    const char *sql = lua_tolstring(L, -1, &sql_len);
    if (sql == NULL)
      return lm_error(L, "argument", "batch item %d: SQL string expected first", i + 1);
    lua_pop(L, 1);
    /* Parameters onto the stack so lm_conn_read_params can check and convert. */
    int base = lua_gettop(L);
    luaL_checkstack(L, len, "too many parameters");
    for (int k = 2; k <= len; k++)
      lua_rawgeti(L, item, k);
    loom_value_t *saved = c->params;
    int saved_cap = c->params_cap;
    c->params = saved + used;
    c->params_cap = total - used;
    int np = lm_conn_read_params(L, c, base + 1, sql, sql_len);
    c->params = saved;
    c->params_cap = saved_cap;
    stmts[i].sql = sql; /* the string lives in the batch table (arg 2) */
    stmts[i].sql_len = sql_len;
    stmts[i].params = saved + used;
    stmts[i].nparams = np;
    used += np;
    lua_settop(L, item - 1);
  }
  return lm_conn_start_batch(L, c, n, cache, 0, batch_done_k);
}

const luaL_Reg lm_batch_methods[] = {
  {"_batch", conn_batch},
  {NULL, NULL}
};
