/* The db handle: the pools behind loom.db.open, its options, statistics
 * and the row changes it reports. */
#include <stdlib.h>
#include <string.h>
#include "lm_db.h"
#include "driver.h"

lm_db *lm_db_check(lua_State *L) {
  lm_db *db = lm_check_self(L, LM_DB_MT, "loom.db");
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

/* core _db_open(driver, conninfo, pool_options, secrets): driver as
 * require "loom.driver.<name>" gives it. */
static int l_db_open(lua_State *L) {
  lm_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
  const loom_db_driver_t *drv = lm_to_driver(L, 1);
  if (drv == NULL)
    return lm_error(L, "argument", "bad argument #1 to '_db_open' (driver expected, got %s)",
                    luaL_typename(L, 1));
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
    opt_int(L, 3, "readers", 0); /* the one-writer layout's, checked whatever the driver */
    if (cfg.max < 1)
      lm_error(L, "argument", "bad argument #2 to 'loom.db.open' (pool option 'max' must be at least 1)");
  }
  lm_db *db = lua_newuserdatauv(L, sizeof *db, 2);
  memset(db, 0, sizeof *db);
  lua_newtable(L);
  lua_setiuservalue(L, -2, DB_SPARE);
  db->ctx = ctx;
  db->driver = drv;
  db->closed = 1;
  luaL_setmetatable(L, LM_DB_MT);
  db->secrets = lm_db_copy_secrets(L, 4);
  int readers = lua_type(L, 3) == LUA_TTABLE ? opt_int(L, 3, "readers", 2) : 2;
  if (loom_readers_open(&db->rs, &ctx->loop, drv, conninfo, &cfg, readers) != 0)
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
  loom_readers_close(&db->rs);
}

static int db_close(lua_State *L) {
  close_pools(lm_check_self(L, LM_DB_MT, "loom.db"));
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
  lm_db *db = lm_check_self(L, LM_DB_MT, "loom.db");
  lua_settop(L, 2);
  db->track_changes = !lua_isnil(L, 2);
  lua_setiuservalue(L, 1, DB_ON_CHANGES);
  return 0;
}

/* After a request on c: hands committed row changes to the db's callback. */
void lm_conn_deliver_changes(lua_State *L, lm_conn *c) {
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
  lm_db *db = lm_check_self(L, LM_DB_MT, "loom.db");
  loom_pool_stats_t s;
  memset(&s, 0, sizeof s);
  if (!db->closed)
    loom_readers_stats(&db->rs, &s);
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
    lua_pushinteger(L, db->rs.inline_runs);
    lua_setfield(L, -2, "inline_reads");
  }
  return 1;
}

static const luaL_Reg db_methods[] = {
  {"_acquire", lm_db_acquire},
  {"_close", db_close},
  {"_stats", db_stats},
  {"_on_changes", db_on_changes},
  {"_run1", lm_db_run1},
  {NULL, NULL}
};

static const luaL_Reg db_metamethods[] = {{"__gc", db_gc}, {NULL, NULL}};

const luaL_Reg lm_db_funcs[] = {{"_db_open", l_db_open}, {NULL, NULL}};

void lm_open_db(lua_State *L) {
  lm_new_class(L, LM_DB_MT, db_methods, db_metamethods);
  lm_open_conn(L);
  lm_class_add(L, LM_CONN_MT, lm_stream_methods);
  lm_class_add(L, LM_CONN_MT, lm_batch_methods);
  lm_class_add(L, LM_CONN_MT, lm_bulk_methods);
  lm_db_open_null(L);
}
