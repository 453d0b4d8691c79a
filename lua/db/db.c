/* Databases for Lua: a db is a pool; a conn is one pooled connection lent
 * to a task. Every call that talks to the server waits like any loom call,
 * and a wait that is cancelled (task:cancel, loom.timeout) cancels the
 * statement on the server and drains the connection before the error is
 * raised, so no query keeps running behind the caller's back. */
#include <stdlib.h>
#include <string.h>
#include "lm.h"
#include "pool.h"

#define LM_DB_MT "loom.db"
#define LM_CONN_MT "loom.db.conn"
#define LM_NULL_MT "loom.null"

#define LEASES_MAX 16

typedef struct lm_db {
  lm_ctx *ctx;
  loom_pool_t *pool;      /* every connection, or SQLite's one writer */
  loom_pool_t *readers;   /* SQLite: connections for reads beside the writer */
  const loom_db_driver_t *driver;
  int closed;
  int track_changes;      /* db:changes() has subscribers */
  /* SQLite: reader connections kept out of the pool for single-statement
   * reads of any task, which queue on them (driver start_shared). */
  int lease_target;
  int nleases;
  loom_db_conn_t *leases[LEASES_MAX];
  int lease_inflight[LEASES_MAX];
  int lease_pending;          /* reads acquiring a connection to become a lease */
  loom_waitq_t lease_waiters; /* reads waiting for one of those */
  int lease_long[LEASES_MAX];   /* of those, reads not known to be short */
  lua_Integer inline_reads; /* reads the driver ran on the loop thread */
  /* Pieces of the URL that may be a password, longest first, each ended
   * by a NUL: no error message shows them (a driver's parser or a server
   * may echo a malformed URL). NULL when there are none. */
  char *secrets;
} lm_db;

/* Short reads queue on one reader up to this many at a time. */
#define SHORT_QUEUE 8

/* User values of the db userdata. */
#define DB_ON_CHANGES 1
#define DB_SPARE 2      /* conn userdata given back by <close>, for reuse */
#define SPARE_MAX 8

typedef struct lm_conn {
  lm_ctx *ctx;
  lm_db *db;
  loom_pool_t *pool;      /* the pool conn comes from */
  int lease;              /* >= 0: conn is that shared lease, not pool-owned */
  int one_shot;           /* db:_run1: give back when the statement ends */
  int make_lease;         /* db:_run1: the connection acquired becomes a lease
                           * (counted in db->lease_pending until it comes) */
  int reading;            /* db:_run1: the statement only reads */
  int long_read;          /* a shared read not known to be short */
  loom_db_conn_t *conn;   /* NULL until acquired and after release */
  loom_pool_req_t preq;
  loom_db_req_t req;
  lm_request rq;          /* the waiting of the acquire or request out now */
  int row_ready;          /* a streamed row sits in req.result */
  int stream_done;
  int mode;               /* what a finished query returns (MODE_*) */
  int shielded;           /* the next request's wait ignores cancels and timeouts */
  loom_value_t *params;
  int params_cap;
  loom_db_stmt_t *stmts;
  int nstmts;
} lm_conn;

/* Connection slots of the conn userdata: the db, then the Lua strings
 * (SQL, parameters) a request points into while it runs. */
enum { MODE_ROWS, MODE_VALUE, MODE_EXEC };

#define CONN_DB 1
#define CONN_ANCHOR 2

/* ---- loom.null ------------------------------------------------------------ */

static void push_null(lua_State *L) { lua_getfield(L, LUA_REGISTRYINDEX, "loom.null.value"); }

static int is_null(lua_State *L, int idx) {
  return lua_type(L, idx) == LUA_TUSERDATA && luaL_testudata(L, idx, LM_NULL_MT) != NULL;
}

static int null_tostring(lua_State *L) {
  lua_pushliteral(L, "loom.null");
  return 1;
}

/* ---- errors ------------------------------------------------------------------ */

/* Pushes text with every secret of db replaced by "***". */
static void push_scrubbed(lua_State *L, lm_db *db, const char *text) {
  lua_pushstring(L, text);
  if (db->secrets == NULL)
    return;
  for (const char *s = db->secrets; *s; s += strlen(s) + 1) {
    if (strstr(lua_tostring(L, -1), s)) {
      luaL_gsub(L, lua_tostring(L, -1), s, "***");
      lua_remove(L, -2);
    }
  }
}

static void push_db_error(lua_State *L, lm_db *db, int status, loom_db_error_t *e,
                          const char *sql) {
  const char *kind = "query";
  switch (status) {
  case LOOM_EDB_CONNECTION: case LOOM_ECLOSED: kind = "connection"; break;
  case LOOM_EDB_ARGUMENT: kind = "argument"; break;
  case LOOM_EDB_PROTOCOL: kind = "protocol"; break;
  case LOOM_ENOMEM: kind = "memory"; break;
  default: break;
  }
  push_scrubbed(L, db, e->message ? e->message : loom_strerror(status));
  lm_push_error(L, kind, "%s", lua_tostring(L, -1));
  lua_remove(L, -2);
  if (e->code[0]) {
    /* MySQL's error numbers are numbers (1213, 1064), beside the SQLSTATE. */
    char *end;
    long num = strtol(e->code, &end, 10);
    if (strcmp(db->driver->name, "mysql") == 0 && *end == 0 && num > 0)
      lua_pushinteger(L, num);
    else
      lua_pushstring(L, e->code);
    lua_setfield(L, -2, "code");
  }
  if (e->sqlstate[0]) {
    lua_pushstring(L, e->sqlstate);
    lua_setfield(L, -2, "sqlstate");
  }
  if (e->detail) {
    push_scrubbed(L, db, e->detail);
    lua_setfield(L, -2, "detail");
  }
  if (e->hint) {
    push_scrubbed(L, db, e->hint);
    lua_setfield(L, -2, "hint");
  }
  if (e->position) {
    lua_pushinteger(L, e->position);
    lua_setfield(L, -2, "position");
  }
  if (e->statement) {
    lua_pushinteger(L, e->statement);
    lua_setfield(L, -2, "statement");
  }
  lua_pushstring(L, db->driver->name);
  lua_setfield(L, -2, "driver");
  if (sql) {
    lua_pushstring(L, sql);
    lua_setfield(L, -2, "sql");
  }
  loom_db_error_clear(e);
}

static int raise_db_error(lua_State *L, lm_db *db, int status, loom_db_error_t *e,
                          const char *sql) {
  push_db_error(L, db, status, e, sql);
  return lua_error(L);
}

/* ---- values ---------------------------------------------------------------- */

static void push_value(lua_State *L, loom_value_t *v);

static void push_array(lua_State *L, loom_value_t *cell) {
  loom_db_array_iter_t it;
  loom_value_t elem;
  luaL_checkstack(L, 4, "array nested too deep"); /* a level of nesting each */
  loom_db_array_begin(&it, cell);
  lua_newtable(L);
  int n = 0, r;
  while ((r = loom_db_array_next(&it, &elem)) > 0) {
    push_value(L, &elem);
    lua_rawseti(L, -2, ++n);
  }
  loom_db_array_done(&it);
  if (r < 0) {
    lua_pop(L, 1);
    lua_pushlstring(L, cell->u.s.p, cell->u.s.len);
  }
}

static void push_value(lua_State *L, loom_value_t *v) {
  switch (v->type) {
  case LOOM_VNULL: push_null(L); break;
  case LOOM_VINT: lua_pushinteger(L, v->u.i); break;
  case LOOM_VFLOAT: lua_pushnumber(L, v->u.f); break;
  case LOOM_VBOOL: lua_pushboolean(L, v->u.b); break;
  case LOOM_VARRAY: push_array(L, v); break;
  default: lua_pushlstring(L, v->u.s.p, v->u.s.len); break;
  }
}

/* Pushes an array of rows keyed by column name, then (with_info) an info
 * table with `columns` and `affected`. */
static void push_result_ex(lua_State *L, loom_db_result_t *r, int with_info) {
  int nc = r->ncols, nr = r->nrows;
  luaL_checkstack(L, nc + 8, "too many columns");
  int names = lua_gettop(L) + 1;
  for (int c = 0; c < nc; c++)
    lua_pushstring(L, r->ops->column_name(r, c));
  lua_createtable(L, nr, 0);
  for (int i = 0; i < nr; i++) {
    lua_createtable(L, 0, nc);
    for (int c = 0; c < nc; c++) {
      loom_value_t v;
      r->ops->cell(r, i, c, &v);
      lua_pushvalue(L, names + c);
      push_value(L, &v);
      lua_rawset(L, -3);
    }
    lua_rawseti(L, -2, i + 1);
  }
  if (!with_info) {
    lua_replace(L, names); /* the rows where the names began */
    lua_settop(L, names);
    return;
  }
  lua_createtable(L, 0, 2);
  lua_createtable(L, nc, 0);
  for (int c = 0; c < nc; c++) {
    lua_pushvalue(L, names + c);
    lua_rawseti(L, -2, c + 1);
  }
  lua_setfield(L, -2, "columns");
  if (r->affected >= 0) {
    lua_pushinteger(L, r->affected);
    lua_setfield(L, -2, "affected");
  }
  if (r->last_insert_id) {
    lua_pushinteger(L, r->last_insert_id);
    lua_setfield(L, -2, "last_insert_id");
  }
  /* Drop the names below the two results. */
  lua_rotate(L, names, 2);
  lua_settop(L, names + 1);
}

static void push_result(lua_State *L, loom_db_result_t *r) { push_result_ex(L, r, 1); }

/* Just the rows: what a batch item and a streamed row need. */
static void push_rows(lua_State *L, loom_db_result_t *r) { push_result_ex(L, r, 0); }

/* The value at idx as a parameter; -1 for a type no database takes. */
static int to_value(lua_State *L, int idx, loom_value_t *v) {
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    v->type = LOOM_VNULL;
    return 0;
  case LUA_TBOOLEAN:
    v->type = LOOM_VBOOL;
    v->u.b = lua_toboolean(L, idx);
    return 0;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      v->type = LOOM_VINT;
      v->u.i = lua_tointeger(L, idx);
    } else {
      v->type = LOOM_VFLOAT;
      v->u.f = lua_tonumber(L, idx);
    }
    return 0;
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    /* Text cannot carry NUL bytes; such a string is binary data. */
    v->type = memchr(s, 0, len) ? LOOM_VBLOB : LOOM_VTEXT;
    v->u.s.p = s;
    v->u.s.len = len;
    return 0;
  }
  default:
    if (is_null(L, idx)) {
      v->type = LOOM_VNULL;
      return 0;
    }
    return -1;
  }
}

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
static loom_value_t *reserve_params(lua_State *L, lm_conn *c, int n) {
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
static loom_db_stmt_t *reserve_stmts(lua_State *L, lm_conn *c, int n) {
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
static int read_params(lua_State *L, lm_conn *c, int first, const char *sql, size_t sql_len) {
  int n = lua_gettop(L) - first + 1;
  if (n < 0)
    n = 0;
  int want = param_count(L, c->db->driver, sql, sql_len);
  if (want != n)
    return lm_error(L, "argument",
                    "the statement takes %d parameter%s (%s...) but %d %s given",
                    want, want == 1 ? "" : "s", c->db->driver->placeholder, n,
                    n == 1 ? "was" : "were");
  reserve_params(L, c, n);
  for (int i = 0; i < n; i++) {
    int idx = first + i;
    if (to_value(L, idx, &c->params[i]) != 0)
      return lm_error(L, "argument",
                      "parameter %d is a %s: only nil/loom.null, booleans, numbers "
                      "and strings can be sent",
                      i + 1, luaL_typename(L, idx));
  }
  return n;
}

/* ---- db ------------------------------------------------------------------------ */

/* The methods of db and conn objects hold their metatable as upvalue 1
 * (lm_open_db), so checking self is a pointer compare: luaL_testudata
 * looks the metatable up by name on every call. Called from elsewhere, it
 * falls back to that lookup. */
static void *check_self(lua_State *L, const char *mt, const char *tname) {
  void *p = lua_touserdata(L, 1);
  if (p != NULL && lua_getmetatable(L, 1)) {
    int same = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
    if (same)
      return p;
  }
  return lm_checkudata(L, 1, mt, tname);
}

static lm_db *check_db(lua_State *L) {
  lm_db *db = check_self(L, LM_DB_MT, "loom.db");
  if (db->closed)
    lm_error(L, "closed", "the database handle is closed");
  return db;
}

/* A duration option in seconds. math.huge, or anything as far out, means
 * never: (uint64_t)(s * 1e9) is undefined past 2^64. */
static uint64_t opt_ns(lua_State *L, int t, const char *name, uint64_t def) {
  uint64_t v = def;
  if (lua_getfield(L, t, name) != LUA_TNIL) {
    int ok;
    double s = lua_tonumberx(L, -1, &ok);
    if (!ok || !(s >= 0))
      lm_error(L, "argument", "bad argument #2 to 'loom.db.open' (pool option '%s' must be a "
               "non-negative number of seconds, got %s)", name, ok ? "a negative number or NaN"
               : luaL_typename(L, -1));
    v = s * 1e9 >= (double)LOOM_POOL_NEVER ? LOOM_POOL_NEVER : (uint64_t)(s * 1e9);
  }
  lua_pop(L, 1);
  return v;
}

static int opt_int(lua_State *L, int t, const char *name, int def) {
  int v = def;
  if (lua_getfield(L, t, name) != LUA_TNIL) {
    int ok;
    lua_Integer n = lua_tointegerx(L, -1, &ok);
    if (!ok || n < 0 || n > 100000)
      lm_error(L, "argument", "bad argument #2 to 'loom.db.open' (pool option '%s' must be a "
               "whole number from 0 to 100000)", name);
    v = (int)n;
  }
  lua_pop(L, 1);
  return v;
}

/* The secrets array at idx as one block: each string and its NUL, then a
 * final NUL. Strings holding a NUL cannot be found in C text; the caller
 * passes their part before the NUL as well. */
static char *copy_secrets(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TTABLE)
    return NULL;
  size_t total = 1;
  int n = (int)lua_rawlen(L, idx);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, idx, i);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    if (s && len > 0 && strlen(s) == len)
      total += len + 1;
    lua_pop(L, 1);
  }
  if (total == 1)
    return NULL;
  char *block = malloc(total), *p = block;
  if (block == NULL)
    return NULL;
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, idx, i);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    if (s && len > 0 && strlen(s) == len) {
      memcpy(p, s, len + 1);
      p += len + 1;
    }
    lua_pop(L, 1);
  }
  *p = 0;
  return block;
}

/* core _db_open(driver_name, conninfo, pool_options, secrets) */
static int l_db_open(lua_State *L) {
  lm_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
  const char *driver = luaL_checkstring(L, 1);
  const char *conninfo = luaL_checkstring(L, 2);
  loom_pool_config_t cfg;
  loom_pool_config_default(&cfg);
  if (lua_type(L, 3) == LUA_TTABLE) {
    cfg.min = opt_int(L, 3, "min", cfg.min);
    cfg.max = opt_int(L, 3, "max", cfg.max);
    cfg.acquire_timeout_ns = opt_ns(L, 3, "acquire_timeout", cfg.acquire_timeout_ns);
    cfg.validate_idle_ns = opt_ns(L, 3, "validate_after", cfg.validate_idle_ns);
    cfg.max_lifetime_ns = opt_ns(L, 3, "max_lifetime", cfg.max_lifetime_ns);
    cfg.max_idle_ns = opt_ns(L, 3, "idle_timeout", cfg.max_idle_ns);
    opt_int(L, 3, "readers", 0); /* SQLite's, checked whatever the driver */
    if (cfg.max < 1)
      lm_error(L, "argument", "bad argument #2 to 'loom.db.open' (pool option 'max' must be at least 1)");
  }
  const loom_db_driver_t *drv = NULL;
  if (strcmp(driver, "postgres") == 0)
    drv = &loom_pg_driver;
  else if (strcmp(driver, "sqlite") == 0)
    drv = &loom_sqlite_driver;
  else if (strcmp(driver, "mysql") == 0)
    drv = &loom_mysql_driver;
  if (drv == NULL)
    return lm_error(L, "argument", "no driver named '%s'", driver);
  lm_db *db = lua_newuserdatauv(L, sizeof *db, 2);
  memset(db, 0, sizeof *db);
  lua_newtable(L);
  lua_setiuservalue(L, -2, DB_SPARE);
  db->ctx = ctx;
  db->driver = drv;
  db->closed = 1;
  loom_waitq_init(&db->lease_waiters);
  luaL_setmetatable(L, LM_DB_MT);
  db->secrets = copy_secrets(L, 4);
  if (drv == &loom_sqlite_driver) {
    /* One writer, so writers queue here instead of meeting SQLITE_BUSY;
     * readers beside it (WAL). The writer stays open: an in-memory
     * database lives as long as one connection to it. */
    loom_pool_config_t wcfg = cfg;
    wcfg.min = 1;
    wcfg.max = 1;
    wcfg.max_lifetime_ns = LOOM_POOL_NEVER;
    lua_pushfstring(L, "%s\nrole=writer", conninfo);
    db->pool = loom_pool_new(&ctx->loop, drv, lua_tostring(L, -1), &wcfg);
    lua_pop(L, 1);
    if (db->pool && cfg.max > 0 && !(lua_type(L, 3) == LUA_TTABLE && opt_int(L, 3, "readers", 1) == 0)) {
      loom_pool_config_t rcfg = cfg;
      int readers = lua_type(L, 3) == LUA_TTABLE ? opt_int(L, 3, "readers", 2) : 2;
      if (readers > LEASES_MAX)
        readers = LEASES_MAX;
      /* `readers` connections serve single reads shared by every task; two
       * more serve streams and read-only transactions, which need one
       * connection to themselves. */
      db->lease_target = db->driver->start_shared ? readers : 0;
      rcfg.max = readers + 2;
      if (rcfg.min > rcfg.max)
        rcfg.min = rcfg.max;
      lua_pushfstring(L, "%s\nrole=reader", conninfo);
      db->readers = loom_pool_new(&ctx->loop, drv, lua_tostring(L, -1), &rcfg);
      lua_pop(L, 1);
      if (db->readers == NULL) {
        loom_pool_close(db->pool);
        db->pool = NULL;
      }
    }
  } else {
    db->pool = loom_pool_new(&ctx->loop, drv, conninfo, &cfg);
  }
  if (db->pool == NULL)
    return lm_error(L, "memory", "cannot create the pool");
  db->closed = 0;
  return 1;
}

static void close_pools(lm_db *db) {
  if (db->closed)
    return;
  db->closed = 1;
  if (db->ctx->closed)
    return;
  /* Reads waiting for a shared reader try again and find the db closed. */
  loom_waitq_wake_all(&db->lease_waiters, 0);
  for (int i = 0; i < db->nleases; i++)
    loom_pool_release(db->readers, db->leases[i]);
  db->nleases = 0;
  loom_pool_close(db->pool);
  if (db->readers)
    loom_pool_close(db->readers);
}

static int db_close(lua_State *L) {
  close_pools(lm_checkudata(L, 1, LM_DB_MT, "loom.db"));
  return 0;
}

static int db_gc(lua_State *L) {
  lm_db *db = lua_touserdata(L, 1);
  close_pools(db);
  free(db->secrets);
  db->secrets = NULL;
  return 0;
}

/* db:_on_changes(fn | nil): fn(changes) is called after a request through
 * this db that committed row changes (drivers that track them). */
static int db_on_changes(lua_State *L) {
  lm_db *db = lm_checkudata(L, 1, LM_DB_MT, "loom.db");
  lua_settop(L, 2);
  db->track_changes = !lua_isnil(L, 2);
  lua_setiuservalue(L, 1, DB_ON_CHANGES);
  return 0;
}

/* After a request on c: hands committed row changes to the db's callback. */
static void deliver_changes(lua_State *L, lm_conn *c) {
  if (!c->db->track_changes || c->conn == NULL || c->conn->driver->take_changes == NULL)
    return;
  loom_db_change_t *v;
  int n = c->conn->driver->take_changes(c->conn, &v);
  if (n == 0)
    return;
  int top = lua_gettop(L);
  lua_getiuservalue(L, 1, CONN_DB);
  lua_getiuservalue(L, -1, DB_ON_CHANGES);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_createtable(L, 0, 3);
    lua_pushstring(L, v[i].op == 'i' ? "insert" : v[i].op == 'u' ? "update" : "delete");
    lua_setfield(L, -2, "op");
    lua_pushstring(L, v[i].table);
    lua_setfield(L, -2, "table");
    lua_pushinteger(L, v[i].rowid);
    lua_setfield(L, -2, "rowid");
    lua_rawseti(L, -2, i + 1);
  }
  free(v);
  lua_call(L, 1, 0);
  lua_settop(L, top);
}

static int db_stats(lua_State *L) {
  lm_db *db = lm_checkudata(L, 1, LM_DB_MT, "loom.db");
  loom_pool_stats_t s;
  memset(&s, 0, sizeof s);
  if (!db->closed) {
    loom_pool_stats(db->pool, &s);
    if (db->readers) {
      loom_pool_stats_t r;
      loom_pool_stats(db->readers, &r);
      s.total += r.total;
      s.idle += r.idle;
      s.in_use += r.in_use;
      s.waiting += r.waiting;
      s.connecting += r.connecting;
      s.acquired += r.acquired;
      s.timeouts += r.timeouts;
      s.created += r.created;
      s.closed += r.closed;
      s.failed_connects += r.failed_connects;
      s.wait_ns += r.wait_ns;
      for (int i = 0; i < db->nleases; i++)
        if (db->lease_inflight[i] == 0) {
          s.in_use--;
          s.idle++;
        }
    }
  }
  lua_createtable(L, 0, 12);
#define FIELD(name, value) (lua_pushinteger(L, (lua_Integer)(value)), lua_setfield(L, -2, name))
  FIELD("size", s.total);
  FIELD("total", s.total);
  FIELD("idle", s.idle);
  FIELD("in_use", s.in_use);
  FIELD("waiting", s.waiting);
  FIELD("connecting", s.connecting);
  FIELD("acquired", s.acquired);
  FIELD("timeouts", s.timeouts);
  FIELD("created", s.created);
  FIELD("closed", s.closed);
  FIELD("failed_connects", s.failed_connects);
#undef FIELD
  lua_pushnumber(L, (double)s.wait_ns / 1e9);
  lua_setfield(L, -2, "wait_time");
  if (db->driver->try_inline) {
    lua_pushinteger(L, db->inline_reads);
    lua_setfield(L, -2, "inline_reads");
  }
  return 1;
}

/* ---- acquiring ------------------------------------------------------------------ */

static lm_conn *check_conn(lua_State *L) {
  lm_conn *c = check_self(L, LM_CONN_MT, "loom.db.conn");
  if (c->conn == NULL)
    lm_error(L, "closed", "this connection was released to the pool");
  return c;
}

static void pool_done(loom_pool_req_t *preq) {
  lm_conn *c = preq->data;
  lm_request_complete(&c->rq);
}

static void lease_settled(lm_conn *c);

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
  lease_settled(c);
}

static const lm_request_ops acquire_ops = {acquire_pending, acquire_stop, acquire_drained};

/* Queues c on its pool for a connection; done runs once it came or not. */
static int acquire(lua_State *L, lm_conn *c, lua_KFunction done) {
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
static int acquire_error(lua_State *L, lm_conn *c) {
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
  return raise_db_error(L, c->db, preq->status, &preq->err, NULL);
}

static int acquired(lua_State *L, lm_conn *c) {
  if (c->preq.status != 0)
    return acquire_error(L, c);
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
static lm_conn *new_conn_object(lua_State *L, lm_db *db) {
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
  return new_conn_object(L, db);
}

/* db:_acquire([for_reading]) -> conn; SQLite serves reads beside writes */
static int db_acquire(lua_State *L) {
  lm_db *db = check_db(L);
  int reading = lua_toboolean(L, 2);
  lm_conn *c = push_conn_object(L, db);
  c->pool = reading && db->readers ? db->readers : db->pool;
  return acquire(L, c, acquired_k);
}

/* ---- shared reads (SQLite) ------------------------------------------------------ */

static void give_back(lm_conn *c, int discard);

/* A read acquiring a connection to become a shared reader got one, an
 * error, or gave up: the reads waiting for it try again (they join the new
 * reader, or one of them acquires in its place). */
static void lease_settled(lm_conn *c) {
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

static void give_back(lm_conn *c, int discard) {
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
    if (i < c->db->nleases && c->db->leases[i] == conn) {
      c->db->lease_inflight[i]--;
      c->db->lease_long[i] -= c->long_read;
    }
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
  lm_conn *c = lm_checkudata(L, 1, LM_CONN_MT, "loom.db.conn");
  give_back(c, lua_toboolean(L, 2));
  return 0;
}

/* __close: only DB:_run's borrowed conns are closed this way, and nothing
 * keeps them after, so an idle one goes back to the db's spares. */
/* Gives back the connection of the conn object at idx and, when nothing
 * else can refer to it, keeps the object among the db's spares. The stack
 * is left as it was. */
static void end_borrow(lua_State *L, int idx) {
  lm_conn *c = lua_touserdata(L, idx);
  c->one_shot = 0;
  give_back(c, 0);
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
  check_self(L, LM_CONN_MT, "loom.db.conn");
  end_borrow(L, 1);
  return 0;
}

static int conn_gc(lua_State *L) {
  lm_conn *c = lua_touserdata(L, 1);
  if (c->rq.wait == NULL && c->preq.waiter.queue && !c->ctx->closed)
    loom_pool_cancel(&c->preq);
  c->rq.wait = NULL;
  lease_settled(c);
  give_back(c, 1);
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

/* ---- running requests ----------------------------------------------------------- */

static void req_done(loom_db_req_t *req) {
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
    end_borrow(L, 1);
}

static const lm_request_ops statement_ops = {statement_pending, statement_stop,
                                             statement_drained};

static int start_request(lua_State *L, lm_conn *c, lua_KFunction k) {
  if (c->one_shot && !c->shielded && lm_wait_would_raise(c->ctx)) {
    /* The pool handed the connection over, and a cancel or a timeout came
     * before this task ran again: the statement is not sent. Nothing but
     * this call refers to the connection: give it back before raising, or
     * it stays out of the pool until the collector frees the object, and
     * with nothing left to allocate, nothing collects and every task waits
     * on the pool forever. */
    end_borrow(L, 1);
    lm_wait_abort(lm_wait_prepare(L, c->ctx)); /* raises */
    return lm_error(L, "cancelled", "request interrupted");
  }
  c->req.cb = req_done;
  c->req.data = c;
  lm_request_prepare(L, &c->rq, &statement_ops, c->shielded);
  c->shielded = 0;
  const loom_db_driver_t *drv = c->conn->driver;
  int r = c->lease >= 0 ? drv->start_shared(c->conn, &c->req) : drv->start(c->conn, &c->req);
  if (r != 0) {
    lm_request_abort(&c->rq);
    push_db_error(L, c->db, r, &c->req.err, c->req.sql);
    if (c->one_shot)
      end_borrow(L, 1);
    return lua_error(L);
  }
  return lm_request_wait(L, &c->rq, k);
}

static int query_done_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status; (void)kctx;
  lm_conn *c = lua_touserdata(L, 1);
  loom_db_req_t *req = &c->req;
  if (req->status != 0) {
    loom_db_result_free(req->result);
    req->result = NULL;
    push_db_error(L, c->db, req->status, &req->err, req->sql);
    if (c->one_shot)
      end_borrow(L, 1);
    return lua_error(L);
  }
  loom_db_result_t *r = req->result;
  req->result = NULL;
  deliver_changes(L, c);
  if (c->one_shot)
    end_borrow(L, 1);
  int n = 2;
  switch (c->mode) {
  case MODE_VALUE:
    /* The first column of the first row, without building any table. */
    n = 1;
    if (r && r->nrows > 0 && r->ncols > 0) {
      loom_value_t v;
      r->ops->cell(r, 0, 0, &v);
      push_value(L, &v);
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
    push_result(L, r);
  }
  loom_db_result_free(r);
  return n;
}

static void set_sql(lm_conn *c, loom_db_op_t op, const char *sql, size_t len, int n, int cache) {
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
  lm_conn *c = check_conn(L);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  int cache = lua_toboolean(L, 3);
  int n = read_params(L, c, 4, sql, len);
  c->mode = mode;
  set_sql(c, LOOM_DB_QUERY, sql, len, n, cache);
  return start_request(L, c, query_done_k);
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
  lm_conn *c = check_conn(L);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  lua_settop(L, 2);
  set_sql(c, LOOM_DB_QUERY, sql, len, 0, 0);
  c->mode = MODE_EXEC;
  c->shielded = 1;
  return start_request(L, c, query_done_k);
}

/* ---- one statement in one call ------------------------------------------------ */

/* The connection came (or did not): start the statement, or say why not. */
static int run1_acquired(lua_State *L, lm_conn *c) {
  loom_pool_req_t *preq = &c->preq;
  lm_db *db = c->db;
  if (preq->status != 0) {
    c->one_shot = 0;
    lease_settled(c);
    return acquire_error(L, c);
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
  lease_settled(c);
  return start_request(L, c, query_done_k);
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
          return query_done_k(L, LUA_OK, 0);
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
      return start_request(L, c, query_done_k);
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
  return acquire(L, c, run1_acquired_k);
}

/* db:_run1(mode, reading, sql, cache, ...) -> what conn:_query/_value/_exec
 * give: a connection borrowed (or a shared reader joined), the statement
 * run and the connection given back, in one call from Lua. */
static int db_run1(lua_State *L) {
  lm_db *db = check_db(L);
  int mode = (int)luaL_checkinteger(L, 2);
  int reading = lua_toboolean(L, 3);
  size_t len;
  const char *sql = luaL_checklstring(L, 4, &len);
  int cache = lua_toboolean(L, 5);
  /* Into the layout conn methods have: conn, sql, cache, params... */
  lua_rotate(L, 2, -2);
  lua_pop(L, 2);
  new_conn_object(L, db);
  lua_replace(L, 1);
  lm_conn *c = lua_touserdata(L, 1);
  c->mode = mode;
  int n = read_params(L, c, 4, sql, len);
  set_sql(c, LOOM_DB_QUERY, sql, len, n, cache);
  c->one_shot = 1;
  c->reading = reading;
  return run1_route(L, c);
}

/* ---- streaming ------------------------------------------------------------------- */

static int next_done_k(lua_State *L, int status, lua_KContext kctx);

static int take_row(lua_State *L, lm_conn *c) {
  loom_db_req_t *req = &c->req;
  if (c->row_ready) {
    c->row_ready = 0;
    loom_db_result_t *r = req->result;
    req->result = NULL;
    push_rows(L, r);
    loom_db_result_free(r);
    lua_rawgeti(L, -1, 1);
    /* Ask for the next row while this one is being used. */
    c->conn->driver->next(c->conn, req);
    return 1;
  }
  if (c->stream_done) {
    c->stream_done = 0;
    if (req->status != 0)
      return raise_db_error(L, c->db, req->status, &req->err, req->sql);
    loom_db_result_free(req->result);
    req->result = NULL;
    return 0;
  }
  lm_request_prepare(L, &c->rq, &statement_ops, 0);
  return lm_request_wait(L, &c->rq, next_done_k);
}

static int next_done_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status; (void)kctx;
  return take_row(L, lua_touserdata(L, 1));
}

/* conn:_stream(sql, ...) starts a streamed statement; conn:_next() -> row | nil */
static int conn_stream(lua_State *L) {
  lm_conn *c = check_conn(L);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  int n = read_params(L, c, 3, sql, len);
  set_sql(c, LOOM_DB_STREAM, sql, len, n, 0);
  c->req.cb = req_done;
  c->req.data = c;
  int r = c->conn->driver->start(c->conn, &c->req);
  if (r != 0)
    return raise_db_error(L, c->db, r, &c->req.err, sql);
  /* The SQL and parameters must outlive this call: anchor the SQL. */
  lm_request_anchor(L, 1, CONN_ANCHOR, 2);
  return 0;
}

static int conn_next(lua_State *L) {
  lm_conn *c = check_conn(L);
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
  lm_conn *c = check_conn(L);
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
  lm_request_prepare(L, &c->rq, &statement_ops, 1);
  return lm_request_wait(L, &c->rq, stop_k);
}

/* ---- batches -------------------------------------------------------------------- */

static int batch_done_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status; (void)kctx;
  lm_conn *c = lua_touserdata(L, 1);
  loom_db_req_t *req = &c->req;
  if (req->status != 0)
    return raise_db_error(L, c->db, req->status, &req->err, NULL);
  deliver_changes(L, c);
  for (int i = 0; i < c->nstmts; i++) {
    loom_db_stmt_t *st = &c->stmts[i];
    if (st->status != 0) {
      lua_rawgeti(L, 2, i + 1);
      lua_rawgeti(L, -1, 1);
      push_db_error(L, c->db, st->status, &st->err, lua_tostring(L, -1));
      lua_pushinteger(L, i + 1);
      lua_setfield(L, -2, "batch_index");
      return lua_error(L);
    }
  }
  lua_createtable(L, c->nstmts, 0);
  for (int i = 0; i < c->nstmts; i++) {
    loom_db_result_t *r = c->stmts[i].result;
    c->stmts[i].result = NULL;
    push_rows(L, r); /* info of a batch item is rarely wanted */
    loom_db_result_free(r);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* conn:_batch({ {sql, p1, p2, ...}, ... }, cache) -> { rows1, rows2, ... } */
static int conn_batch(lua_State *L) {
  lm_conn *c = check_conn(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  int cache = lua_toboolean(L, 3);
  lua_settop(L, 2);
  int n = (int)lua_rawlen(L, 2);
  if (n == 0) {
    lua_newtable(L);
    return 1;
  }
  loom_db_stmt_t *stmts = reserve_stmts(L, c, n);
  c->nstmts = n;
  /* One parameter array for all statements; each points into it. */
  int total = 0;
  for (int i = 1; i <= n; i++) {
    if (lua_rawgeti(L, 2, i) != LUA_TTABLE)
      return lm_error(L, "argument", "batch item %d must be a table {sql, params...}", i);
    total += (int)lua_rawlen(L, -1) - 1;
    lua_pop(L, 1);
  }
  reserve_params(L, c, total);
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
    /* Parameters onto the stack so read_params can check and convert. */
    int base = lua_gettop(L);
    luaL_checkstack(L, len, "too many parameters");
    for (int k = 2; k <= len; k++)
      lua_rawgeti(L, item, k);
    loom_value_t *saved = c->params;
    int saved_cap = c->params_cap;
    c->params = saved + used;
    c->params_cap = total - used;
    int np = read_params(L, c, base + 1, sql, sql_len);
    c->params = saved;
    c->params_cap = saved_cap;
    stmts[i].sql = sql; /* the string lives in the batch table (arg 2) */
    stmts[i].sql_len = sql_len;
    stmts[i].params = saved + used;
    stmts[i].nparams = np;
    used += np;
    lua_settop(L, item - 1);
  }
  loom_db_error_clear(&c->req.err);
  c->req.op = LOOM_DB_BATCH;
  c->req.sql = NULL;
  c->req.stmts = stmts;
  c->req.nstmts = n;
  c->req.cache = cache;
  c->req.no_rows = 0;
  return start_request(L, c, batch_done_k);
}

/* ---- bulk inserts without COPY (SQLite) -------------------------------------------- */

static int insert_done_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status; (void)kctx;
  lm_conn *c = lua_touserdata(L, 1);
  loom_db_req_t *req = &c->req;
  if (req->status != 0)
    return raise_db_error(L, c->db, req->status, &req->err, NULL);
  deliver_changes(L, c);
  for (int i = 0; i < c->nstmts; i++) {
    loom_db_stmt_t *st = &c->stmts[i];
    if (st->status != 0) {
      push_db_error(L, c->db, st->status, &st->err, lua_tostring(L, 2));
      lua_pushinteger(L, lua_tointeger(L, 5) + i);
      lua_setfield(L, -2, "row");
      return lua_error(L);
    }
    loom_db_result_free(st->result);
    st->result = NULL;
  }
  lua_pushinteger(L, c->nstmts);
  return 1;
}

/* conn:_insert_rows(sql, columns, rows, first, last) -> count: the one
 * prepared INSERT run for rows[first..last], all in one job. Rows are
 * arrays in column order or tables keyed by column name. */
static int conn_insert_rows(lua_State *L) {
  lm_conn *c = check_conn(L);
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
  loom_db_stmt_t *stmts = reserve_stmts(L, c, n);
  reserve_params(L, c, n * ncols);
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
      if (to_value(L, -1, &vals[k]) != 0)
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
  c->nstmts = n;
  loom_db_error_clear(&c->req.err);
  c->req.op = LOOM_DB_BATCH;
  c->req.sql = NULL;
  c->req.stmts = stmts;
  c->req.nstmts = n;
  c->req.cache = 1;
  c->req.no_rows = 1;
  return start_request(L, c, insert_done_k);
}

/* ---- COPY ------------------------------------------------------------------------ */

static int copy_done_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status; (void)kctx;
  lm_conn *c = lua_touserdata(L, 1);
  loom_db_req_t *req = &c->req;
  if (req->status != 0) {
    loom_db_result_free(req->result);
    req->result = NULL;
    return raise_db_error(L, c->db, req->status, &req->err, NULL);
  }
  if (req->more) {
    lm_copy_chunk_free(L, 2); /* libpq has taken it */
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
  lm_conn *c = check_conn(L);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  lua_settop(L, 2);
  lm_request_anchor(L, 1, CONN_ANCHOR, 2);
  set_sql(c, LOOM_DB_COPY_IN, sql, len, 0, 0);
  return start_request(L, c, copy_done_k);
}

static int conn_copy_data(lua_State *L) {
  lm_conn *c = check_conn(L);
  size_t len = 0;
  const char *buf = lua_isnoneornil(L, 2) ? "" : lm_copy_chunk(L, 2, &len);
  if (buf == NULL)
    return luaL_typeerror(L, 2, "string or COPY chunk");
  lua_settop(L, 2);
  if (!c->req.active || c->req.op != LOOM_DB_COPY_IN)
    return lm_error(L, "usage", "no COPY in progress on this connection");
  lm_request_anchor(L, 1, CONN_ANCHOR, 2); /* libpq may need the chunk until it has room */
  if (len == 0)
    buf = "";
  lm_request_prepare(L, &c->rq, &statement_ops, 0);
  int r = c->conn->driver->copy_data(c->conn, &c->req, buf, len);
  if (r != 0) {
    lm_request_abort(&c->rq);
    return lm_error(L, "usage", "the connection is not ready for COPY data");
  }
  return lm_request_wait(L, &c->rq, copy_done_k);
}

/* ---- small things ----------------------------------------------------------------- */

static int conn_txn(lua_State *L) {
  lm_conn *c = check_conn(L);
  static const char *const names[] = {"idle", "active", "failed", "unknown"};
  lua_pushstring(L, names[c->conn->driver->txn(c->conn)]);
  return 1;
}

static int conn_backend_id(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_conn(L)->conn->backend_id);
  return 1;
}

static int conn_broken(lua_State *L) {
  lm_conn *c = lm_checkudata(L, 1, LM_CONN_MT, "loom.db.conn");
  lua_pushboolean(L, c->conn == NULL || c->conn->broken);
  return 1;
}

static int conn_db(lua_State *L) {
  lm_checkudata(L, 1, LM_CONN_MT, "loom.db.conn");
  lua_getiuservalue(L, 1, CONN_DB);
  return 1;
}

static int conn_tostring(lua_State *L) {
  lm_conn *c = lm_checkudata(L, 1, LM_CONN_MT, "loom.db.conn");
  if (c->conn)
    lua_pushfstring(L, "loom.db.conn (%s, backend %d)", c->db->driver->name,
                    (int)c->conn->backend_id);
  else
    lua_pushliteral(L, "loom.db.conn (released)");
  return 1;
}

static const luaL_Reg db_methods[] = {
  {"_acquire", db_acquire},
  {"_close", db_close},
  {"_stats", db_stats},
  {"_on_changes", db_on_changes},
  {"_run1", db_run1},
  {NULL, NULL}
};

static const luaL_Reg conn_methods[] = {
  {"_query", conn_query},
  {"_value", conn_value},
  {"_exec", conn_exec},
  {"_settle", conn_settle},
  {"_stream", conn_stream},
  {"_next", conn_next},
  {"_stop", conn_stop},
  {"_batch", conn_batch},
  {"_insert_rows", conn_insert_rows},
  {"_copy", conn_copy},
  {"_copy_data", conn_copy_data},
  {"_release", conn_release},
  {"_txn", conn_txn},
  {"_backend_id", conn_backend_id},
  {"_broken", conn_broken},
  {"_db", conn_db},
  {NULL, NULL}
};

const luaL_Reg lm_db_funcs[] = {{"_db_open", l_db_open}, {NULL, NULL}};

/* Registers the methods again, now with their metatable as upvalue 1. */
static void methods_know_mt(lua_State *L, const char *mt, const luaL_Reg *methods) {
  luaL_getmetatable(L, mt);
  lua_getfield(L, -1, "__index");
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, methods, 1);
  lua_pop(L, 2);
}

void lm_open_db(lua_State *L) {
  lm_new_class(L, LM_DB_MT, db_methods, db_gc);
  lm_new_class(L, LM_CONN_MT, conn_methods, conn_gc);
  luaL_getmetatable(L, LM_CONN_MT);
  lua_pushcfunction(L, conn_tostring);
  lua_setfield(L, -2, "__tostring");
  /* `local c <close> = db:_acquire()` gives it back however the scope ends. */
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, conn_release_close, 1);
  lua_setfield(L, -2, "__close");
  lua_pop(L, 1);
  methods_know_mt(L, LM_DB_MT, db_methods);
  methods_know_mt(L, LM_CONN_MT, conn_methods);
  if (luaL_newmetatable(L, LM_NULL_MT)) {
    lua_pushcfunction(L, null_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  lua_getfield(L, LUA_REGISTRYINDEX, "loom.null.value");
  if (lua_isnil(L, -1)) {
    lua_newuserdatauv(L, 0, 0);
    luaL_setmetatable(L, LM_NULL_MT);
    lua_setfield(L, LUA_REGISTRYINDEX, "loom.null.value");
  }
  lua_pop(L, 1);
}
