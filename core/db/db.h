/* loom's database layer in the core: one adapter interface every driver
 * implements, one value and result model, and requests in libuv's style.
 *
 * A connection runs one request at a time (the pool guarantees it). Every
 * request completes through its callback exactly once, also when the
 * connection breaks or is closed under it (status LOOM_ECLOSED or
 * LOOM_EDB_CONNECTION). Callbacks only record outcomes; no user code runs
 * inside them. Nothing here knows about Lua. */
#ifndef LOOM_DB_H
#define LOOM_DB_H

#include "loom.h"

/* ---- values ----------------------------------------------------------- */

typedef enum loom_vtype {
  LOOM_VNULL,
  LOOM_VINT,   /* 64-bit integer */
  LOOM_VFLOAT,
  LOOM_VBOOL,
  LOOM_VTEXT,  /* text, numeric/decimal (exact), json, dates as ISO 8601 */
  LOOM_VBLOB,  /* binary, NUL bytes included */
  LOOM_VARRAY  /* elements through loom_db_array_next; a sub-array of a
                  multi-dimensional one is an element of type LOOM_VARRAY */
} loom_vtype_t;

typedef struct loom_db_array_ops loom_db_array_ops_t;

/* A parameter going in, or a cell coming out. Text and blob bytes of a cell
 * point into the driver's result and live as long as the result. */
typedef struct loom_value {
  loom_vtype_t type;
  loom_vtype_t elem; /* for arrays: the element type */
  const loom_db_array_ops_t *array; /* for arrays: how the driver reads
                                       its text of them */
  union {
    int64_t i;
    double f;
    int b;
    struct {
      const char *p;
      size_t len;
    } s;
  } u;
} loom_value_t;

/* ---- errors ----------------------------------------------------------- */

enum {
  LOOM_EDB_QUERY = -200001,      /* the server refused the statement */
  LOOM_EDB_CONNECTION = -200002, /* cannot connect, or the connection broke */
  LOOM_EDB_ARGUMENT = -200003,   /* bad input caught before sending */
  LOOM_EDB_PROTOCOL = -200004    /* the driver got something it cannot use */
};

/* What the server (or the driver) said. Strings are owned by the error. */
typedef struct loom_db_error {
  char code[32];  /* SQLSTATE, the driver's error number or name as text */
  char *message;
  char *detail;
  char *hint;
  int position;   /* 1-based character position in the SQL, 0 if none */
  char sqlstate[8]; /* SQLSTATE where code holds the driver's number (MySQL) */
  int statement;  /* in a script: the 1-based index of the statement that
                     failed, 0 if unknown */
} loom_db_error_t;

void loom_db_error_clear(loom_db_error_t *e);
/* A malloc'd copy of s (NULL for NULL, or when out of memory). */
char *loom_db_strdup(const char *s);
void loom_db_error_set(loom_db_error_t *e, const char *code, const char *message);

/* ---- results ------------------------------------------------------------ */

typedef struct loom_db_result loom_db_result_t;
typedef struct loom_db_array_iter {
  const char *pos, *end;
  loom_vtype_t elem;
  const loom_db_array_ops_t *ops;
  char *scratch; /* unescaped element text */
  size_t scratch_cap;
} loom_db_array_iter_t;

/* A driver whose array cells are text in its own format reads them: begin
 * (optional) moves it->pos past what precedes the first element; next
 * gives one element as loom_db_array_next does, a sub-array as a cell of
 * type LOOM_VARRAY (with array set). Unescaped element text goes into the
 * iterator's scratch (loom_db_array_reserve). */
struct loom_db_array_ops {
  void (*begin)(loom_db_array_iter_t *it);
  int (*next)(loom_db_array_iter_t *it, loom_value_t *out);
};
int loom_db_array_reserve(loom_db_array_iter_t *it, size_t n);

typedef struct loom_db_result_ops {
  const char *(*column_name)(loom_db_result_t *r, int col);
  /* Fills *out for row, col (both 0-based). Call it at most once per cell:
   * text drivers decode some values (binary strings) in place. */
  void (*cell)(loom_db_result_t *r, int row, int col, loom_value_t *out);
  void (*free)(loom_db_result_t *r);
} loom_db_result_ops_t;

struct loom_db_result {
  const loom_db_result_ops_t *ops;
  int nrows;
  int ncols;
  int64_t affected;       /* rows changed, -1 if the statement says nothing */
  int64_t last_insert_id; /* 0 where the driver has none */
};

void loom_db_result_free(loom_db_result_t *r);

/* Starts iterating an array cell; loom_db_array_next gives 1 per element,
 * 0 at the end, <0 on malformed input. loom_db_array_done frees scratch. */
void loom_db_array_begin(loom_db_array_iter_t *it, const loom_value_t *cell);
int loom_db_array_next(loom_db_array_iter_t *it, loom_value_t *out);
void loom_db_array_done(loom_db_array_iter_t *it);

/* ---- connections and requests ----------------------------------------- */

typedef struct loom_db_driver loom_db_driver_t;
typedef struct loom_db_conn loom_db_conn_t;
typedef struct loom_db_req loom_db_req_t;
typedef void (*loom_db_cb)(loom_db_req_t *req);
typedef void (*loom_db_notify_cb)(loom_db_conn_t *c, const char *channel,
                                  const char *payload, int pid);

/* A row changed by a committed write: op is 'i', 'u' or 'd'. */
typedef struct loom_db_change {
  int op;
  const char *table;
  int64_t rowid;
} loom_db_change_t;

/* What a connection is for, in a layout with roles (one_writer below). */
typedef enum loom_db_role {
  LOOM_DB_ROLE_ANY,
  LOOM_DB_ROLE_WRITER,
  LOOM_DB_ROLE_READER
} loom_db_role_t;

typedef enum loom_db_op {
  LOOM_DB_CONNECT,
  LOOM_DB_QUERY,     /* one statement, with parameters */
  LOOM_DB_STREAM,    /* one statement; rows arrive one by one (loom_db_next) */
  LOOM_DB_BATCH,     /* several statements in one round trip */
  LOOM_DB_COPY_IN,   /* COPY ... FROM STDIN: start, then loom_db_copy_data */
  LOOM_DB_RESET,     /* make the session clean for the next user */
  LOOM_DB_PING
} loom_db_op_t;

/* Transaction state after the last request, as the pool needs it. */
typedef enum loom_db_txn {
  LOOM_TXN_IDLE,
  LOOM_TXN_ACTIVE, /* inside BEGIN ... */
  LOOM_TXN_FAILED, /* inside a transaction that must be rolled back */
  LOOM_TXN_UNKNOWN /* broken, or the driver cannot tell */
} loom_db_txn_t;

/* Batch item: one statement of a LOOM_DB_BATCH. */
typedef struct loom_db_stmt {
  const char *sql;
  size_t sql_len;
  const loom_value_t *params;
  int nparams;
  loom_db_result_t *result; /* set on success */
  int status;
  loom_db_error_t err;
} loom_db_stmt_t;

struct loom_db_req {
  loom_db_op_t op;
  loom_db_conn_t *conn;
  loom_db_cb cb;
  void *data;
  int status;            /* 0 when done well; LOOM_EDB_* or LOOM_E* otherwise */
  loom_db_error_t err;
  /* LOOM_DB_QUERY / LOOM_DB_STREAM / LOOM_DB_COPY_IN */
  const char *sql;
  size_t sql_len;
  const loom_value_t *params;
  int nparams;
  int cache;             /* prepare and keep the statement for next time */
  int script;            /* LOOM_DB_QUERY with no parameters whose SQL may
                            hold several statements (exec): run them all */
  int no_rows;           /* LOOM_DB_BATCH: only success or failure is wanted */
  loom_db_result_t *result; /* the caller takes it (and frees it) */
  int more;              /* LOOM_DB_STREAM: a row is in result, more may follow */
  /* LOOM_DB_BATCH */
  loom_db_stmt_t *stmts;
  int nstmts;
  int active;            /* between start and the final callback */
  void *driver_data;
  loom_db_role_t role;   /* LOOM_DB_CONNECT: what the connection is for */
};

struct loom_db_driver {
  const char *name;
  /* Opens a connection described by conninfo (the driver's own URL or
   * key=value form); completes req (op LOOM_DB_CONNECT) with req->conn set. */
  int (*connect)(loom_loop_t *loop, const char *conninfo, loom_db_req_t *req);
  /* Starts req on c: QUERY, STREAM, BATCH, COPY_IN, RESET or PING. */
  int (*start)(loom_db_conn_t *c, loom_db_req_t *req);
  /* LOOM_DB_STREAM: ask for the next row; req's callback fires again. */
  int (*next)(loom_db_conn_t *c, loom_db_req_t *req);
  /* LOOM_DB_COPY_IN: send a chunk (len > 0) or finish (len == 0); req's
   * callback fires when the chunk is taken or the copy has ended. */
  int (*copy_data)(loom_db_conn_t *c, loom_db_req_t *req, const char *buf, size_t len);
  /* Stops the running request: on the server too, where the protocol
   * allows. The request still completes through its callback, and the
   * connection is left idle or marked broken. */
  int (*cancel)(loom_db_conn_t *c);
  /* Closes; a running request completes with LOOM_ECLOSED first. The
   * driver frees c once its handles are closed. */
  void (*close)(loom_db_conn_t *c);
  loom_db_txn_t (*txn)(loom_db_conn_t *c);
  /* Optional, for servers that notify (PostgreSQL LISTEN): keeps reading
   * while idle so notifications arrive. */
  int (*watch)(loom_db_conn_t *c, loom_db_notify_cb cb);
  /* How many parameters the SQL takes, read from its placeholders. */
  int (*param_count)(const char *sql, size_t len);
  const char *placeholder; /* "$1" or "?", for messages */
  /* Optional. Hands over the row changes committed through c since the
   * last call while c->track_changes was set: *out is one malloc'd block
   * (array and strings) for the caller to free. Returns the count. */
  int (*take_changes)(loom_db_conn_t *c, loom_db_change_t **out);
  /* Optional. Runs a LOOM_DB_QUERY on c beside other shared requests: they
   * queue on the connection and run in order, each completing through its
   * own callback. For drivers whose connections have a queue of their own
   * (SQLite's worker thread), so several tasks' reads keep it busy with no
   * gap between statements. c->req stays NULL meanwhile. */
  int (*start_shared)(loom_db_conn_t *c, loom_db_req_t *req);
  /* Stops one shared request, and only that one. */
  int (*cancel_shared)(loom_db_conn_t *c, loom_db_req_t *req);
  /* Shared requests not completed yet. */
  int (*shared_pending)(loom_db_conn_t *c);
  /* Optional. Runs a LOOM_DB_QUERY that only reads right here, on the loop
   * thread, when c is idle and the statement is short: 0 when it ran (req
   * holds status, error and result; no callback fires), LOOM_EAGAIN when
   * it did not run or gave up within a small budget, with nothing of it
   * seen by anyone: then start it with start_shared as usual. For drivers
   * whose statements otherwise cross to a worker thread and back (SQLite),
   * where the hop costs more than a short statement. */
  int (*try_inline)(loom_db_conn_t *c, loom_db_req_t *req);
  /* Optional. 1 when req was short on c last time: several such shared
   * requests may queue on one connection (one worker thread busy instead
   * of several, each spinning for cores), where a long one gets its own. */
  int (*is_short)(loom_db_conn_t *c, loom_db_req_t *req);
  /* 1 when err.code holds the server's error number (1213), which Lua
   * then gets as a number; 0 for names and SQLSTATEs. */
  int numeric_codes;
  /* 1: the database takes one writer at a time beside readers (SQLite in
   * WAL mode). A handle then keeps one writer connection and reader
   * connections beside it (core/db/readers.c), each connected with its
   * role (loom_db_req_t.role). */
  int one_writer;
  /* With one_writer: 1 when the SQL only reads, so a reader may run it (a
   * misjudged write fails on a reader, which is read-only; it never
   * corrupts anything). */
  int (*only_reads)(const char *sql, size_t len);
};

/* Fields every driver's connection starts with. */
struct loom_db_conn {
  const loom_db_driver_t *driver;
  loom_loop_t *loop;
  loom_db_req_t *req;    /* the request in flight, if any */
  int broken;            /* unusable: the pool must discard it */
  int dirty;             /* session state a reset must clear */
  void *data;            /* the owner's (the pool's) */
  uint64_t created_ns, last_used_ns;
  int64_t backend_id;    /* server's id of this session, for logs and KILL */
  int track_changes;     /* record committed row changes (take_changes) */
  int closing;           /* close was called: the driver frees it once its
                            handles and work are done */
};

/* For a driver's start: the checks every one makes first. closed: the
 * connection cannot take a request (closed_code is the driver's code for
 * that); busy: another one runs. 0, or the status req fails with (its
 * error set). */
int loom_db_req_refuse(loom_db_req_t *req, int closed, const char *closed_code, int busy);
/* Then: req runs on c from now on, a batch's statements with no outcome
 * yet. one, when given, becomes the request's single statement (what a
 * driver's batch code runs for a plain query). */
void loom_db_req_begin(loom_db_conn_t *c, loom_db_req_t *req, loom_db_stmt_t *one);
/* At the end: the single statement's outcome (status, error, result)
 * becomes the request's, where the request has none of its own. */
void loom_db_req_take_one(loom_db_req_t *req, loom_db_stmt_t *one);
/* The same for a request that runs beside others (start_shared): c->req
 * stays as it is. */
void loom_db_req_begin_shared(loom_db_conn_t *c, loom_db_req_t *req);
/* For a driver's close: 1 the first time (c is closing from then on), 0
 * after. */
int loom_db_close_once(loom_db_conn_t *c);

#endif
