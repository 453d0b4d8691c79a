/* A statement's parameters: checked against its placeholders and read
 * from Lua into the conn's parameter array (kept between statements). */
#include <stdlib.h>
#include <string.h>
#include "lm_db.h"


/* Placeholder counts of recently used SQL texts, one table per driver (in
 * the registry under the driver's address): the same statement runs again
 * and again, and its text need not be parsed every time. A slot is found
 * by the text's address and checked against a copy of the text. */
#define PC_SLOTS 32
#define PC_MAX_SQL 240

typedef struct pc_entry {
  size_t len;
  int count;
  char text[PC_MAX_SQL];
} pc_entry;

static int param_count(lua_State *L, const loom_db_driver_t *drv, const char *sql, size_t len) {
  if (len > PC_MAX_SQL)
    return drv->param_count(sql, len);
  pc_entry *memo;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, drv) == LUA_TUSERDATA) {
    memo = lua_touserdata(L, -1);
    lua_pop(L, 1);
  } else {
    lua_pop(L, 1);
    memo = lua_newuserdatauv(L, PC_SLOTS * sizeof *memo, 0);
    for (int i = 0; i < PC_SLOTS; i++) {
      memo[i].len = 0;
      memo[i].count = drv->param_count("", 0);
    }
    lua_rawsetp(L, LUA_REGISTRYINDEX, drv);
  }
  uintptr_t a = (uintptr_t)sql;
  pc_entry *e = &memo[((a >> 4) ^ (a >> 11)) & (PC_SLOTS - 1)];
  if (e->len == len && memcmp(e->text, sql, len) == 0)
    return e->count;
  int n = drv->param_count(sql, len);
  e->len = len;
  memcpy(e->text, sql, len);
  e->count = n;
  return n;
}

/* Room for n parameters in c->params. */
loom_value_t *lm_conn_reserve_params(lua_State *L, lm_conn *c, int n) {
  if (n > c->params_cap) {
    loom_value_t *p = realloc(c->params, (size_t)n * sizeof *p);
    if (p == NULL)
      lm_error(L, "memory", "out of memory");
    c->params = p;
    c->params_cap = n;
  }
  return c->params;
}

/* n cleared statement slots in c->stmts, the last batch's results freed. */
loom_db_stmt_t *lm_conn_reserve_stmts(lua_State *L, lm_conn *c, int n) {
  for (int i = 0; i < c->nstmts; i++) {
    loom_db_result_free(c->stmts[i].result);
    loom_db_error_clear(&c->stmts[i].err);
  }
  c->nstmts = 0;
  loom_db_stmt_t *stmts = realloc(c->stmts, (size_t)n * sizeof *stmts);
  if (stmts == NULL)
    lm_error(L, "memory", "out of memory");
  c->stmts = stmts;
  memset(stmts, 0, (size_t)n * sizeof *stmts);
  return stmts;
}

/* Reads parameters first..top into c->params. nil and loom.null are NULL. */
int lm_conn_read_params(lua_State *L, lm_conn *c, int first, const char *sql, size_t sql_len) {
  int n = lua_gettop(L) - first + 1;
  if (n < 0)
    n = 0;
  int want = param_count(L, c->db->driver, sql, sql_len);
  if (want != n)
    return lm_error(L, "argument",
                    "the statement takes %d parameter%s (%s...) but %d %s given",
                    want, want == 1 ? "" : "s", c->db->driver->placeholder, n,
                    n == 1 ? "was" : "were");
  lm_conn_reserve_params(L, c, n);
  for (int i = 0; i < n; i++) {
    int idx = first + i;
    if (lm_db_to_value(L, idx, &c->params[i]) != 0)
      return lm_error(L, "argument",
                      "parameter %d is a %s: only nil/loom.null, booleans, numbers "
                      "and strings can be sent",
                      i + 1, luaL_typename(L, idx));
  }
  return n;
}
