/* Internal header of the database binding (lua/db/): the db handle, the
 * conn object and what their files share. */
#ifndef LM_DB_H
#define LM_DB_H

#include "lm.h"
#include "readers.h"

#define LM_DB_MT "loom.db"
#define LM_CONN_MT "loom.db.conn"
#define LM_NULL_MT "loom.null"

typedef struct lm_db {
  lm_ctx *ctx;
  loom_readers_t rs;      /* its pools, laid out as the driver declares */
  const loom_db_driver_t *driver;
  int closed;
  int track_changes;      /* db:changes() has subscribers */
  /* Pieces of the URL that may be a password, longest first, each ended
   * by a NUL: no error message shows them (a driver's parser or a server
   * may echo a malformed URL). NULL when there are none. */
  char *secrets;
} lm_db;

/* User values of the db userdata. */
#define DB_ON_CHANGES 1
#define DB_SPARE 2      /* conn userdata given back by <close>, for reuse */
#define SPARE_MAX 8

typedef struct lm_conn {
  lm_ctx *ctx;
  lm_db *db;
  loom_pool_t *pool;      /* the pool conn comes from */
  int lease;              /* >= 0: conn is that shared reader, not pool-owned */
  int one_shot;           /* db:_run1: give back when the statement ends */
  int make_lease;         /* db:_run1: the connection acquired becomes a shared
                           * reader (LOOM_READ_GROW, settled when it comes) */
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

/* What a finished query returns: rows and info, the first value, or the
 * affected count and last insert id. db.lua has them as core._modes. */
enum { MODE_ROWS, MODE_VALUE, MODE_EXEC };

/* Connection slots of the conn userdata: the db, then the Lua strings
 * (SQL, parameters) a request points into while it runs. */
#define CONN_DB 1
#define CONN_ANCHOR 2

/* value.c */
void lm_db_open_null(lua_State *L);
void lm_db_push_null(lua_State *L);
int lm_db_is_null(lua_State *L, int idx);
void lm_db_push_value(lua_State *L, loom_value_t *v);
/* The rows keyed by column name, then an info table (columns, affected,
 * last_insert_id); _rows pushes the rows alone. */
void lm_db_push_result(lua_State *L, loom_db_result_t *r);
void lm_db_push_rows(lua_State *L, loom_db_result_t *r);
/* The value at idx as a parameter; -1 for a type no database takes. */
int lm_db_to_value(lua_State *L, int idx, loom_value_t *v);

/* params.c */
loom_value_t *lm_conn_reserve_params(lua_State *L, lm_conn *c, int n);
loom_db_stmt_t *lm_conn_reserve_stmts(lua_State *L, lm_conn *c, int n);
int lm_conn_read_params(lua_State *L, lm_conn *c, int first, const char *sql, size_t sql_len);

/* db_error.c */
void lm_db_push_error(lua_State *L, lm_db *db, int status, loom_db_error_t *e, const char *sql);
int lm_db_raise_error(lua_State *L, lm_db *db, int status, loom_db_error_t *e, const char *sql);
char *lm_db_copy_secrets(lua_State *L, int idx);

/* handle.c */
lm_db *lm_db_check(lua_State *L);
/* After a request on c: hands committed row changes to the db's callback. */
void lm_conn_deliver_changes(lua_State *L, lm_conn *c);

/* conn.c */
lm_conn *lm_conn_check(lua_State *L);
lm_conn *lm_conn_new(lua_State *L, lm_db *db);
int lm_conn_acquire(lua_State *L, lm_conn *c, lua_KFunction done);
int lm_conn_acquire_error(lua_State *L, lm_conn *c);
void lm_conn_give_back(lm_conn *c, int discard);
void lm_conn_end_borrow(lua_State *L, int idx);
void lm_conn_req_done(loom_db_req_t *req);
void lm_conn_set_sql(lm_conn *c, loom_db_op_t op, const char *sql, size_t len, int n, int cache);
/* Starts the request set up in c->req and waits; k gets its outcome. */
int lm_conn_start(lua_State *L, lm_conn *c, lua_KFunction k);
int lm_conn_query_done_k(lua_State *L, int status, lua_KContext kctx);
/* A request that failed: its partial result dropped, its error pushed. */
void lm_conn_push_failure(lua_State *L, lm_conn *c, const char *sql);
int lm_db_acquire(lua_State *L);
extern const lm_request_ops lm_statement_ops;
void lm_open_conn(lua_State *L);

/* batch.c: a LOOM_DB_BATCH of n statements set up in c->stmts, started;
 * once done, _failed raises the request's own error, hands over row
 * changes and gives the index of the first statement that failed (its
 * error pushed) or -1. */
int lm_conn_start_batch(lua_State *L, lm_conn *c, int n, int cache, int no_rows,
                        lua_KFunction k);
int lm_conn_batch_failed(lua_State *L, lm_conn *c);

/* run1.c, stream.c, batch.c, bulk.c: their methods */
void lm_db_lease_settled(lm_conn *c);
int lm_db_run1(lua_State *L);
extern const luaL_Reg lm_stream_methods[], lm_batch_methods[], lm_bulk_methods[];

#endif
