/* The SQLite driver. SQLite calls block (disk, locks, long statements), so
 * every one of them runs on the connection's own lane, a worker thread that
 * stays warm between statements; the loop thread only hands jobs over and
 * takes results back. One job runs at a time per connection, and the
 * connection is opened in multi-thread mode (no SQLite mutexes): it is only
 * ever touched by one thread at a time, the lane, or the loop thread while
 * no job is out.
 *
 * conninfo is "key=value" lines written by the binding:
 *   path=FILE (or a "file:" URI)   (the role comes with the connect request)
 *   busy_timeout=MS                memory=1 (path names a shared memdb)
 *   pragma=TEXT (any number: PRAGMA TEXT on every connection it opens) */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "lane.h"
#include "sqlite.h"
#include "stmt_cache.h"

#define CACHE_SIZE 64
#define HINTS 64
#define CHUNK_ROWS 256
#define CHUNK_BYTES (256 * 1024)
/* A reader's mmap_size: 256 MB of address space, not of memory. */
#define READER_MMAP "268435456"

typedef struct sq_cached {
  loom_stmt_entry_t e;
  sqlite3_stmt *st;
  /* Loop-thread runs of this statement to skip, after one overran its
   * budget (twice as many after each overrun, none after a run within). */
  unsigned inline_skip, inline_backoff;
} sq_cached;

typedef struct sq_change_rec {
  int op;
  char *table;
  int64_t rowid;
} sq_change_rec;

typedef struct sq_changes {
  sq_change_rec *v;
  int n, cap;
} sq_changes;

/* A streamed row handed to the caller: a view into the current chunk. */
typedef struct sq_row {
  loom_db_result_t base;
  sq_result *chunk;
  int row;
} sq_row;

enum job_kind { J_OPEN, J_QUERY, J_STREAM_START, J_STREAM_MORE, J_STREAM_END, J_BATCH,
                J_RESET, J_PING, J_CLOSE };

/* A shared request's own job: its outcome travels in it, not in the conn. */
typedef struct sq_shared {
  loom_job_t job;
  struct sq_conn *c;
  loom_db_req_t *req;
  _Atomic int cancelled;
  int ran;                 /* it ran (not cancelled first) */
  uint64_t steps;          /* SQLite VM steps it took */
  int status;
  loom_db_error_t err;
  sq_result *result;
  void *spare;             /* SQ_SPARE_BYTES for the result, from the loop thread */
} sq_shared;

/* A shared read's result is built on the lane and freed on the loop
 * thread. Were the lane to allocate it, every free would go back to the
 * lane thread's malloc arena under its lock, which the lane takes for the
 * next result: with reads coming one after another the two threads met
 * there on most reads (a futex call per read). So the loop allocates the
 * block with the job and frees it, both on its own thread; a result too
 * large for it gets a block of its own. */
#define SQ_SPARE_BYTES 512

typedef struct sq_conn {
  loom_db_conn_t base;
  loom_lane_t *lane;
  loom_job_t job;
  enum job_kind kind;
  int job_out;              /* a job is on the lane */
  sqlite3 *db;
  char *path;
  char *conninfo;           /* kept for the user's pragma= lines */
  int reader, memory, busy_ms;
  loom_db_req_t *connect_req;
  /* the statement cache, lane side */
  loom_stmt_cache_t cache;
  /* outcome of the job, read on the loop thread after it */
  int status;
  loom_db_error_t err;
  sq_result *result;
  int autocommit;
  /* streaming */
  sqlite3_stmt *stream;     /* the statement being stepped */
  int stream_cached;        /* it belongs to the cache: reset, don't finalize */
  int stream_end;           /* the last row has been read */
  sq_result *chunk, *next_chunk;
  int chunk_pos;
  int want_row;             /* next() was called and nothing was ready */
  int stopping;             /* cancel: end the stream at the next chance */
  sq_row view;
  /* changes: pending until commit (lane side), then committed */
  sq_changes pending, committed;
  /* lane: savepoints open in the transaction, with how many changes were
   * pending when each began, so ROLLBACK TO can drop what it undid */
  struct {
    char name[64];
    int mark;
  } savepoints[32];
  int nsavepoints;
  int shared_out;                  /* shared jobs submitted, not yet done */
  sq_result *scratch;              /* lane: rows of the statement running */
  void *spare;                     /* lane: a shared job's block for its result */
  int batch_left;                  /* lane: shared jobs left in this read transaction */
  int batch_open;                  /* lane: a read transaction spans several jobs */
  sqlite3_stmt *begin_st, *commit_st;
  _Atomic int *_Atomic stop_flag;  /* the running job's cancel flag */
  _Atomic int cancelled;           /* the exclusive request's cancel flag */
  int last_code;                   /* SQLite's code of the last error */
  /* A read run on the loop thread (sq_try_inline): when it must stop */
  uint64_t inline_deadline;        /* 0: no such read is running */
  int inline_turns, inline_over;
  uint64_t last_steps;             /* VM steps of the last statement run */
  /* Loop thread: how many VM steps recent statements took, by a hash of
   * their SQL (a collision only misplaces a read: a hint, never a promise).
   * Steps, not time: a busy or slow machine does not make a read long. */
  struct {
    uint64_t hash;
    size_t len;
    uint64_t steps;
  } hints[HINTS];
} sq_conn;

/* ---- lane side ------------------------------------------------------------ */

/* The job failed with status, for a reason of loom's own. */
static void job_error(sq_conn *c, int status, const char *msg) {
  c->status = status;
  loom_db_error_set(&c->err, NULL, msg);
}

static void set_error(sq_conn *c, int status, int code) {
  c->status = status;
  c->last_code = code;
  const char *msg = c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(code);
  if (code == SQLITE_INTERRUPT)
    c->status = LOOM_ECANCELED;
  loom_db_error_set(&c->err, loom__sq_code_name(code), msg);
  int off = c->db ? sqlite3_error_offset(c->db) : -1;
  if (off >= 0)
    c->err.position = off + 1;
}

static void stmt_free(loom_stmt_entry_t *e) {
  sqlite3_finalize(((sq_cached *)e)->st);
}

static sq_cached *cache_find(sq_conn *c, const char *sql, size_t len) {
  return (sq_cached *)loom_stmt_cache_find(&c->cache, sql, len);
}

/* Past blanks, ';' and comments: what SQLite skips between statements. */
static const char *skip_blank(const char *sql, const char *p, const char *end) {
  for (;;) {
    p = loom_sql_skip_blanks(&loom__sq_dialect, sql, p, end);
    if (p == end || *p != ';')
      return p;
    p++;
  }
}

/* A statement for sql: from the cache when asked to cache, else fresh (the
 * caller finalizes it when *cached is 0). */
static sqlite3_stmt *prepare(sq_conn *c, const char *sql, size_t len, int use_cache, int *cached) {
  *cached = 0;
  if (use_cache) {
    sq_cached *e = cache_find(c, sql, len);
    if (e) {
      *cached = 1;
      return e->st;
    }
  }
  sqlite3_stmt *st = NULL;
  const char *tail = NULL;
  int rc = sqlite3_prepare_v3(c->db, sql, (int)len, use_cache ? SQLITE_PREPARE_PERSISTENT : 0,
                              &st, &tail);
  if (rc != SQLITE_OK) {
    set_error(c, LOOM_EDB_QUERY, rc);
    return NULL;
  }
  if (st == NULL) {
    job_error(c, LOOM_EDB_ARGUMENT, "the SQL holds no statement");
    return NULL;
  }
  if (tail && skip_blank(sql, tail, sql + len) < sql + len) {
    sqlite3_finalize(st);
    job_error(c, LOOM_EDB_ARGUMENT,
              "the SQL holds more than one statement: only db:exec without parameters "
              "runs a script; with parameters, and in query or value, give one at a time");
    return NULL;
  }
  sq_cached *e = use_cache ? (sq_cached *)loom_stmt_cache_add(&c->cache, sql, len) : NULL;
  if (e) {
    e->st = st;
    *cached = 1;
  }
  return st;
}

static int bind_params(sq_conn *c, sqlite3_stmt *st, const loom_value_t *params, int n) {
  int want = sqlite3_bind_parameter_count(st);
  if (want != n) {
    c->status = LOOM_EDB_ARGUMENT;
    char msg[128];
    snprintf(msg, sizeof msg, "the statement takes %d parameter%s but %d %s given", want,
             want == 1 ? "" : "s", n, n == 1 ? "was" : "were");
    loom_db_error_set(&c->err, NULL, msg);
    return -1;
  }
  for (int i = 0; i < n; i++) {
    const loom_value_t *v = &params[i];
    int rc;
    switch (v->type) {
    case LOOM_VNULL: rc = sqlite3_bind_null(st, i + 1); break;
    case LOOM_VINT: rc = sqlite3_bind_int64(st, i + 1, v->u.i); break;
    case LOOM_VFLOAT: rc = sqlite3_bind_double(st, i + 1, v->u.f); break;
    case LOOM_VBOOL: rc = sqlite3_bind_int(st, i + 1, v->u.b != 0); break;
    case LOOM_VBLOB:
      rc = sqlite3_bind_blob64(st, i + 1, v->u.s.p, v->u.s.len, SQLITE_STATIC);
      break;
    case LOOM_VTEXT:
      rc = sqlite3_bind_text64(st, i + 1, v->u.s.p, v->u.s.len, SQLITE_STATIC, SQLITE_UTF8);
      break;
    default:
      job_error(c, LOOM_EDB_ARGUMENT, "arrays cannot be sent to SQLite");
      return -1;
    }
    if (rc != SQLITE_OK) {
      set_error(c, LOOM_EDB_ARGUMENT, rc);
      return -1;
    }
  }
  return 0;
}

static void release_stmt(sqlite3_stmt *st, int cached) {
  if (cached) {
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
  } else {
    sqlite3_finalize(st);
  }
}

static void truncate_changes(sq_changes *p, int n);
static void track_savepoints(sq_conn *c, const char *sql, size_t len);

/* A statement that fails inside a transaction is undone alone, and so are
 * the row changes it made before failing (a failure outside one rolls
 * back, which the rollback hook sees). */
static void changes_after_failure(sq_conn *c, int mark) {
  if (c->base.track_changes && c->db && !sqlite3_get_autocommit(c->db))
    truncate_changes(&c->pending, mark);
}

static void changes_after(sq_conn *c, const char *sql, size_t len) {
  if (c->base.track_changes && !sqlite3_get_autocommit(c->db))
    track_savepoints(c, sql, len);
}

/* Runs one statement to the end into a new result. */
static sq_result *run_one(sq_conn *c, const char *sql, size_t len, const loom_value_t *params,
                          int nparams, int use_cache) {
  int cached;
  sqlite3_stmt *st = prepare(c, sql, len, use_cache, &cached);
  if (st == NULL)
    return NULL;
  if (bind_params(c, st, params, nparams) != 0) {
    release_stmt(st, cached);
    return NULL;
  }
  /* Rows go into a result the lane keeps; a small one then leaves in one
   * allocation, a big one leaves as it is. */
  if (c->scratch == NULL)
    c->scratch = loom__sq_result_new(NULL);
  sq_result *r = c->scratch;
  if (r == NULL || loom__sq_result_reset(r, st) != 0) {
    release_stmt(st, cached);
    job_error(c, LOOM_ENOMEM, "out of memory");
    return NULL;
  }
  int rc;
  int mark = c->pending.n;
  sqlite3_int64 before = sqlite3_total_changes64(c->db);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (loom__sq_result_add_row(r, st) != 0) {
      rc = SQLITE_NOMEM;
      break;
    }
  }
  c->last_steps = (uint64_t)sqlite3_stmt_status(st, SQLITE_STMTSTATUS_VM_STEP, 1);
  if (rc != SQLITE_DONE) {
    set_error(c, LOOM_EDB_QUERY, rc);
    release_stmt(st, cached);
    changes_after_failure(c, mark);
    return NULL;
  }
  changes_after(c, sql, len);
  if (!sqlite3_stmt_readonly(st)) {
    /* SQLite's counts stay those of the last INSERT, UPDATE or DELETE: a
     * statement that changed no row (CREATE, DROP) has none of its own. */
    int changed = sqlite3_total_changes64(c->db) != before;
    r->base.affected = changed ? sqlite3_changes64(c->db) : 0;
    r->base.last_insert_id = changed ? sqlite3_last_insert_rowid(c->db) : 0;
  }
  release_stmt(st, cached);
  if (r->base.nrows > 64 || r->arena_len > 16384) {
    c->scratch = NULL;
    return r;
  }
  sq_result *out = loom__sq_result_compact(r, &c->spare, SQ_SPARE_BYTES);
  if (out == NULL) {
    job_error(c, LOOM_ENOMEM, "out of memory");
  }
  return out;
}

static void script_error(sq_conn *c, int rc, const char *sql, const char *at, int index) {
  set_error(c, LOOM_EDB_QUERY, rc);
  if (c->err.position)
    c->err.position += (int)(at - sql);
  c->err.statement = index;
}

/* exec without parameters: every statement of the script in turn, where
 * SQLite's tail pointer finds them (a ';' in a string, a comment or a
 * trigger's body ends nothing), each committed on its own unless a
 * transaction is open. The first failure stops the script and says which
 * statement failed; the statements before it stay done. The result holds
 * the last statement's counts. */
static sq_result *script_steps(sq_conn *c, loom_db_req_t *req) {
  const char *sql = req->sql, *end = sql + req->sql_len, *p = sql;
  int index = 0;
  int64_t affected = 0, last_id = 0;
  for (;;) {
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v2(c->db, p, (int)(end - p), &st, &tail);
    if (rc != SQLITE_OK) {
      script_error(c, rc, sql, p, index + 1);
      return NULL;
    }
    if (st == NULL)
      break; /* only blanks and comments were left */
    index++;
    if (atomic_load(&c->cancelled)) {
      /* Cancelled between two statements, where SQLite's interrupt does
       * not reach (it is forgotten once no statement runs). */
      sqlite3_finalize(st);
      c->status = LOOM_ECANCELED;
      loom_db_error_set(&c->err, loom__sq_code_name(SQLITE_INTERRUPT), "interrupted");
      c->err.statement = index;
      return NULL;
    }
    int mark = c->pending.n;
    sqlite3_int64 before = sqlite3_total_changes64(c->db);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
      ;
    if (rc != SQLITE_DONE) {
      script_error(c, rc, sql, p, index);
      sqlite3_finalize(st);
      changes_after_failure(c, mark);
      return NULL;
    }
    changes_after(c, p, (size_t)(tail - p));
    int changed = !sqlite3_stmt_readonly(st) && sqlite3_total_changes64(c->db) != before;
    affected = changed ? sqlite3_changes64(c->db) : 0;
    last_id = changed ? sqlite3_last_insert_rowid(c->db) : 0;
    sqlite3_finalize(st);
    p = tail;
  }
  if (index == 0) {
    job_error(c, LOOM_EDB_ARGUMENT, "the SQL holds no statement");
    return NULL;
  }
  sq_result *r = loom__sq_result_new(NULL);
  if (r == NULL) {
    job_error(c, LOOM_ENOMEM, "out of memory");
    return NULL;
  }
  r->base.affected = affected;
  r->base.last_insert_id = last_id;
  return r;
}

static sq_result *run_script(sq_conn *c, loom_db_req_t *req) {
  /* Without a ';' the SQL is one statement, and so is SQL in the cache:
   * the usual way, cached. */
  if (memchr(req->sql, ';', req->sql_len) == NULL ||
      (req->cache && cache_find(c, req->sql, req->sql_len)))
    return run_one(c, req->sql, req->sql_len, NULL, 0, req->cache);
  if (req->cache) {
    /* One statement after all (a ';' at its end or inside it)? Then it
     * goes into the cache like any other. */
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    const char *end = req->sql + req->sql_len;
    if (sqlite3_prepare_v2(c->db, req->sql, (int)req->sql_len, &st, &tail) == SQLITE_OK && st &&
        skip_blank(req->sql, tail, end) == end) {
      sqlite3_finalize(st);
      return run_one(c, req->sql, req->sql_len, NULL, 0, 1);
    }
    sqlite3_finalize(st);
  }
  /* lane_work points the progress handler at c->cancelled meanwhile, so
   * a cancel sent before a statement began still stops it. */
  return script_steps(c, req);
}

/* Like a pipeline: what follows a failed batch item is not run. */
static void skip_rest(loom_db_req_t *req, int from) {
  for (int k = from; k < req->nstmts; k++) {
    req->stmts[k].status = LOOM_ECANCELED;
    loom_db_error_set(&req->stmts[k].err, NULL, "not run: an earlier statement failed");
  }
}

/* A batch whose results nobody reads (insert_many): each statement is
 * bound and stepped, a statement repeated from the one before is not even
 * looked up again, and no result is built. */
static void run_writes(sq_conn *c, loom_db_req_t *req) {
  sqlite3_stmt *st = NULL;
  int cached = 0;
  const char *last_sql = NULL;
  size_t last_len = 0;
  for (int i = 0; i < req->nstmts; i++) {
    loom_db_stmt_t *s = &req->stmts[i];
    c->status = 0;
    if (st == NULL || s->sql != last_sql || s->sql_len != last_len) {
      if (st)
        release_stmt(st, cached);
      st = prepare(c, s->sql, s->sql_len, req->cache, &cached);
      last_sql = s->sql;
      last_len = s->sql_len;
    }
    int mark = c->pending.n;
    if (st && bind_params(c, st, s->params, s->nparams) == 0) {
      int rc;
      while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
      if (rc != SQLITE_DONE) {
        set_error(c, LOOM_EDB_QUERY, rc);
        changes_after_failure(c, mark);
      }
      sqlite3_reset(st);
    }
    s->status = c->status;
    s->err = c->err;
    memset(&c->err, 0, sizeof c->err);
    if (s->status != 0) {
      skip_rest(req, i + 1);
      break;
    }
  }
  if (st)
    release_stmt(st, cached);
  c->status = 0;
}

/* Steps the stream into a fresh chunk, a bounded number of rows or bytes. */
static void fill_chunk(sq_conn *c) {
  sq_result *r = loom__sq_result_new(c->stream);
  if (r == NULL) {
    job_error(c, LOOM_ENOMEM, "out of memory");
    return;
  }
  int rc = SQLITE_ROW;
  while (r->base.nrows < CHUNK_ROWS && r->arena_len < CHUNK_BYTES &&
         (rc = sqlite3_step(c->stream)) == SQLITE_ROW) {
    if (loom__sq_result_add_row(r, c->stream) != 0) {
      rc = SQLITE_NOMEM;
      break;
    }
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    set_error(c, LOOM_EDB_QUERY, rc);
    loom_db_result_free(&r->base);
    c->stream_end = 1;
    return;
  }
  if (rc == SQLITE_DONE)
    c->stream_end = 1;
  c->next_chunk = r;
}

static void end_stream(sq_conn *c) {
  if (c->stream) {
    release_stmt(c->stream, c->stream_cached);
    c->stream = NULL;
  }
  c->stream_end = 1;
}

static void on_update(void *arg, int op, const char *dbname, const char *table, sqlite3_int64 rowid) {
  (void)dbname;
  sq_conn *c = arg;
  if (!c->base.track_changes)
    return;
  sq_changes *p = &c->pending;
  if (p->n == p->cap) {
    int cap = p->cap ? p->cap * 2 : 16;
    sq_change_rec *v = realloc(p->v, (size_t)cap * sizeof *v);
    if (v == NULL)
      return;
    p->v = v;
    p->cap = cap;
  }
  char *t = loom_db_strdup(table);
  if (t == NULL)
    return;
  p->v[p->n].op = op == SQLITE_INSERT ? 'i' : op == SQLITE_UPDATE ? 'u' : 'd';
  p->v[p->n].table = t;
  p->v[p->n].rowid = rowid;
  p->n++;
}

static void clear_changes(sq_changes *p) {
  for (int i = 0; i < p->n; i++)
    free(p->v[i].table);
  p->n = 0;
}

static int on_commit(void *arg) {
  sq_conn *c = arg;
  c->nsavepoints = 0;
  sq_changes *from = &c->pending, *to = &c->committed;
  if (from->n == 0)
    return 0;
  if (to->n + from->n > to->cap) {
    int cap = to->cap ? to->cap : 16;
    while (cap < to->n + from->n)
      cap *= 2;
    sq_change_rec *v = realloc(to->v, (size_t)cap * sizeof *v);
    if (v == NULL) {
      clear_changes(from);
      return 0;
    }
    to->v = v;
    to->cap = cap;
  }
  memcpy(to->v + to->n, from->v, (size_t)from->n * sizeof *from->v);
  to->n += from->n;
  from->n = 0;
  return 0;
}

static void on_rollback(void *arg) {
  sq_conn *c = arg;
  clear_changes(&c->pending);
  c->nsavepoints = 0;
}

/* Keeps only the first n pending changes: the rest were undone. */
static void truncate_changes(sq_changes *p, int n) {
  while (p->n > n)
    free(p->v[--p->n].table);
}

/* The next word of sql at *i (letters, digits, _ or a quoted name). */
static size_t next_word(const char *sql, size_t len, size_t *i, const char **word) {
  while (*i < len && (sql[*i] == ' ' || sql[*i] == '\t' || sql[*i] == '\n' || sql[*i] == '\r'))
    (*i)++;
  size_t start = *i;
  if (*i < len && strchr(loom__sq_dialect.quotes, sql[*i])) {
    *i = (size_t)(loom_sql_skip(&loom__sq_dialect, sql, sql + *i, sql + len) - sql);
  } else {
    while (*i < len && loom_sql_name_char(sql[*i]))
      (*i)++;
  }
  *word = sql + start;
  return *i - start;
}

static int word_is(const char *w, size_t n, const char *kw) {
  return strlen(kw) == n && strncasecmp(w, kw, n) == 0;
}

/* After a statement ran in a transaction: SAVEPOINT, ROLLBACK TO and
 * RELEASE move the marks that say which pending changes still stand. */
static void track_savepoints(sq_conn *c, const char *sql, size_t len) {
  size_t i = 0, n;
  const char *w;
  n = next_word(sql, len, &i, &w);
  int kind = word_is(w, n, "SAVEPOINT") ? 1 : word_is(w, n, "ROLLBACK") ? 2 : word_is(w, n, "RELEASE") ? 3 : 0;
  if (kind == 0)
    return;
  if (kind == 2) {
    n = next_word(sql, len, &i, &w);
    if (word_is(w, n, "TRANSACTION"))
      n = next_word(sql, len, &i, &w);
    if (!word_is(w, n, "TO"))
      return; /* a whole rollback: the hook saw it */
  }
  n = next_word(sql, len, &i, &w);
  if (kind != 1 && word_is(w, n, "SAVEPOINT"))
    n = next_word(sql, len, &i, &w);
  if (n == 0 || n >= sizeof c->savepoints[0].name)
    return;
  if (kind == 1) {
    if (c->nsavepoints < 32) {
      memcpy(c->savepoints[c->nsavepoints].name, w, n);
      c->savepoints[c->nsavepoints].name[n] = 0;
      c->savepoints[c->nsavepoints].mark = c->pending.n;
      c->nsavepoints++;
    }
    return;
  }
  for (int k = c->nsavepoints - 1; k >= 0; k--) {
    if (strlen(c->savepoints[k].name) == n && strncasecmp(c->savepoints[k].name, w, n) == 0) {
      if (kind == 2) {
        truncate_changes(&c->pending, c->savepoints[k].mark);
        c->nsavepoints = k + 1; /* ROLLBACK TO keeps the savepoint itself */
      } else {
        c->nsavepoints = k;
      }
      return;
    }
  }
}

static int exec_sql(sq_conn *c, const char *sql) {
  int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    set_error(c, LOOM_EDB_CONNECTION, rc);
    return -1;
  }
  return 0;
}

/* SQLite's progress handler, every 1000 VM steps: a loop-thread read past
 * its budget stops (and moves to the worker), and so does a shared
 * statement whose request was cancelled. */
#define INLINE_TURNS 20
/* Sanitizer builds run every step several times slower: their time
 * budgets scale with it (CMakeLists.txt and scripts/test.sh set the
 * factor), so the same paths run there as in a release build. */
#ifndef LOOM_TIME_SCALE
#define LOOM_TIME_SCALE 1
#endif
#define INLINE_NS (500000ull * LOOM_TIME_SCALE)

static int stop_requested(void *arg) {
  sq_conn *c = arg;
  if (c->inline_deadline) {
    if (++c->inline_turns > INLINE_TURNS || uv_hrtime() > c->inline_deadline) {
      c->inline_over = 1;
      return 1;
    }
    return 0;
  }
  _Atomic int *flag = atomic_load_explicit(&c->stop_flag, memory_order_acquire);
  return flag && atomic_load_explicit(flag, memory_order_relaxed);
}

static void do_open(sq_conn *c) {
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI;
  int rc = sqlite3_open_v2(c->path, &c->db, flags, NULL);
  if (rc != SQLITE_OK) {
    c->status = LOOM_EDB_CONNECTION;
    char msg[256];
    snprintf(msg, sizeof msg, "cannot open the database: %s",
             c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
    loom_db_error_set(&c->err, loom__sq_code_name(rc), msg);
    sqlite3_close_v2(c->db);
    c->db = NULL;
    return;
  }
  sqlite3_extended_result_codes(c->db, 1);
  sqlite3_busy_timeout(c->db, c->busy_ms);
  /* Stops one shared statement without touching the others queued on this
   * connection (sqlite3_interrupt would hit whatever runs at that moment). */
  sqlite3_progress_handler(c->db, 1000, stop_requested, c);
  /* Reading the schema proves this is a database (a corrupt or foreign file
   * fails here, not at the first query), and WAL lets readers run beside
   * the writer. */
  if (exec_sql(c, "SELECT count(*) FROM sqlite_schema") != 0)
    goto fail;
  if (!c->memory && !c->reader) {
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(c->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
    if (rc == SQLITE_OK)
      rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_READONLY && (rc & 0xff) != SQLITE_READONLY) {
      set_error(c, LOOM_EDB_CONNECTION, rc);
      goto fail;
    }
    if (exec_sql(c, "PRAGMA synchronous=NORMAL") != 0)
      goto fail;
  }
  /* A reader maps the file instead of copying each page it misses out of
   * the OS cache (pread): point selects over a file bigger than SQLite's
   * 2 MB page cache spent most of a reader's time copying pages. Readers
   * are query_only, so nothing writes through the map; WAL frames are
   * still read with pread. Only readers: the writer keeps SQLite's
   * default. The user's pragmas come after and may set another size (0
   * turns it off). */
  if (c->reader && !c->memory && exec_sql(c, "PRAGMA mmap_size=" READER_MMAP) != 0)
    goto fail;
  /* The user's PRAGMAs, on every connection (the readers' page cache,
   * mmap_size, foreign_keys...). */
  for (const char *p = c->conninfo; p && *p;) {
    const char *eol = strchr(p, '\n');
    size_t len = eol ? (size_t)(eol - p) : strlen(p);
    if (len > 7 && strncmp(p, "pragma=", 7) == 0) {
      char sql[512];
      if (len - 7 + 8 < sizeof sql) {
        snprintf(sql, sizeof sql, "PRAGMA %.*s", (int)(len - 7), p + 7);
        if (exec_sql(c, sql) != 0)
          goto fail;
      }
    }
    p = eol ? eol + 1 : NULL;
  }
  if (c->reader && exec_sql(c, "PRAGMA query_only=1") != 0)
    goto fail;
  if (!c->reader) {
    sqlite3_update_hook(c->db, on_update, c);
    sqlite3_commit_hook(c->db, on_commit, c);
    sqlite3_rollback_hook(c->db, on_rollback, c);
  }
  return;
fail:
  if (c->err.message == NULL)
    loom_db_error_set(&c->err, NULL, "cannot open the database");
  else {
    char msg[300];
    snprintf(msg, sizeof msg, "cannot open the database: %s", c->err.message);
    char code[32];
    memcpy(code, c->err.code, sizeof code);
    loom_db_error_set(&c->err, code, msg);
  }
  c->status = LOOM_EDB_CONNECTION;
  sqlite3_close_v2(c->db);
  c->db = NULL;
}

static void do_close(sq_conn *c) {
  end_stream(c);
  sqlite3_finalize(c->begin_st);
  sqlite3_finalize(c->commit_st);
  c->begin_st = c->commit_st = NULL;
  loom_stmt_cache_clear(&c->cache);
  if (c->db)
    sqlite3_close_v2(c->db);
  c->db = NULL;
}

static void batch_leave(sq_conn *c, int force);

static void lane_work(loom_job_t *job) {
  sq_conn *c = job->data;
  loom_db_req_t *req = c->base.req;
  if (c->db)
    batch_leave(c, 1);
  /* A cancel can come before the statement steps, when
   * sqlite3_interrupt would be forgotten (SQLite clears it as the first
   * statement starts): the progress handler sees this flag instead. */
  if (req)
    atomic_store_explicit(&c->stop_flag, &c->cancelled, memory_order_release);
  switch (c->kind) {
  case J_OPEN:
    do_open(c);
    break;
  case J_QUERY:
    if (req->script)
      c->result = run_script(c, req);
    else
      c->result = run_one(c, req->sql, req->sql_len, req->params, req->nparams, req->cache);
    break;
  case J_STREAM_START: {
    int cached;
    c->stream_end = 0;
    c->stream = prepare(c, req->sql, req->sql_len, req->cache, &cached);
    c->stream_cached = cached;
    if (c->stream == NULL) {
      c->stream_end = 1;
      break;
    }
    if (bind_params(c, c->stream, req->params, req->nparams) != 0) {
      end_stream(c);
      break;
    }
    fill_chunk(c);
    if (c->stream_end)
      end_stream(c);
    break;
  }
  case J_STREAM_MORE:
    fill_chunk(c);
    if (c->stream_end)
      end_stream(c);
    break;
  case J_STREAM_END:
    end_stream(c);
    break;
  case J_BATCH:
    if (req->no_rows) {
      run_writes(c, req);
      break;
    }
    for (int i = 0; i < req->nstmts; i++) {
      loom_db_stmt_t *s = &req->stmts[i];
      c->status = 0;
      sq_result *r = run_one(c, s->sql, s->sql_len, s->params, s->nparams, req->cache);
      s->status = c->status;
      s->err = c->err;
      memset(&c->err, 0, sizeof c->err);
      s->result = r ? &r->base : NULL;
      if (s->status != 0) {
        skip_rest(req, i + 1);
        break;
      }
    }
    c->status = 0;
    break;
  case J_RESET:
    end_stream(c);
    if (!sqlite3_get_autocommit(c->db)) {
      int rc = sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
      if (rc != SQLITE_OK)
        set_error(c, LOOM_EDB_CONNECTION, rc);
    }
    clear_changes(&c->pending);
    break;
  case J_PING:
    break;
  case J_CLOSE:
    do_close(c);
    break;
  }
  atomic_store_explicit(&c->stop_flag, NULL, memory_order_release);
  c->autocommit = c->db ? sqlite3_get_autocommit(c->db) : 1;
}

/* ---- loop side ----------------------------------------------------------- */

static void lane_done(loom_job_t *job);

static void submit(sq_conn *c, enum job_kind kind) {
  c->kind = kind;
  c->status = 0;
  c->job_out = 1;
  c->job.work = lane_work;
  c->job.done = lane_done;
  c->job.data = c;
  loom_lane_submit(c->lane, &c->job);
}

static void free_conn(sq_conn *c) {
  if (c->lane)
    loom_lane_stop(c->lane);
  loom_db_result_free(c->chunk ? &c->chunk->base : NULL);
  loom_db_result_free(c->next_chunk ? &c->next_chunk->base : NULL);
  loom_db_result_free(c->result ? &c->result->base : NULL);
  loom__sq_result_destroy(c->scratch);
  clear_changes(&c->pending);
  clear_changes(&c->committed);
  free(c->pending.v);
  free(c->committed.v);
  loom_db_error_clear(&c->err);
  free(c->path);
  free(c->conninfo);
  free(c);
}

static void complete(sq_conn *c, int status) {
  loom_db_req_t *req = c->base.req;
  if (req == NULL)
    return;
  c->base.req = NULL;
  req->status = status;
  if (status != 0 && req->err.message == NULL && c->err.message) {
    req->err = c->err;
    memset(&c->err, 0, sizeof c->err);
  }
  loom_db_error_clear(&c->err);
  req->more = 0;
  req->active = 0;
  req->cb(req);
}

static void view_free(loom_db_result_t *r) { (void)r; }

static const char *view_name(loom_db_result_t *base, int col) {
  sq_row *v = (sq_row *)base;
  return v->chunk->base.ops->column_name(&v->chunk->base, col);
}

static void view_cell(loom_db_result_t *base, int row, int col, loom_value_t *out) {
  (void)row;
  sq_row *v = (sq_row *)base;
  loom__sq_cell(v->chunk, v->row, col, out);
}

static const loom_db_result_ops_t view_ops = {view_name, view_cell, view_free};

/* Hands the next streamed row over, asks for more, or ends the stream. */
static void deliver(sq_conn *c) {
  loom_db_req_t *req = c->base.req;
  if (c->chunk && c->chunk_pos >= c->chunk->base.nrows) {
    loom_db_result_free(&c->chunk->base);
    c->chunk = NULL;
  }
  /* While a read-ahead is out, the lane owns next_chunk, stream_end and
   * status: the loop thread reads them only once its answer is back. */
  if (c->chunk == NULL && !c->job_out && c->next_chunk) {
    c->chunk = c->next_chunk;
    c->next_chunk = NULL;
    c->chunk_pos = 0;
  }
  if (c->chunk && c->chunk_pos < c->chunk->base.nrows) {
    /* Read ahead while the caller works through this chunk. */
    if (c->chunk_pos == 0 && !c->job_out && !c->stream_end && c->next_chunk == NULL)
      submit(c, J_STREAM_MORE);
    c->view.base.ops = &view_ops;
    c->view.base.nrows = 1;
    c->view.base.ncols = c->chunk->base.ncols;
    c->view.base.affected = -1;
    c->view.chunk = c->chunk;
    c->view.row = c->chunk_pos++;
    c->want_row = 0;
    req->result = &c->view.base;
    req->more = 1;
    req->cb(req);
    return;
  }
  if (c->job_out) {
    /* The read-ahead's answer delivers. */
    c->want_row = 1;
    return;
  }
  c->want_row = 0;
  if (c->status != 0) {
    complete(c, c->status);
    return;
  }
  if (c->stream_end) {
    req->result = NULL;
    complete(c, 0);
    return;
  }
  c->want_row = 1;
  submit(c, J_STREAM_MORE);
}

static void finish_stop(sq_conn *c) {
  loom_db_result_free(c->chunk ? &c->chunk->base : NULL);
  loom_db_result_free(c->next_chunk ? &c->next_chunk->base : NULL);
  c->chunk = c->next_chunk = NULL;
  c->stopping = 0;
  loom_db_error_clear(&c->err);
  loom_db_req_t *req = c->base.req;
  if (req)
    req->result = NULL;
  complete(c, LOOM_ECANCELED);
}

static void lane_done(loom_job_t *job) {
  sq_conn *c = job->data;
  c->job_out = 0;
  enum job_kind kind = c->kind;
  if (kind == J_CLOSE) {
    free_conn(c);
    return;
  }
  if (kind == J_OPEN) {
    loom_db_req_t *req = c->connect_req;
    c->connect_req = NULL;
    req->active = 0;
    req->status = c->status;
    if (c->status == 0) {
      req->conn = &c->base;
    } else {
      req->err = c->err;
      memset(&c->err, 0, sizeof c->err);
      req->conn = NULL;
      c->base.closing = 1;
      submit(c, J_CLOSE);
    }
    req->cb(req);
    return;
  }
  if (c->base.closing) {
    if (c->base.req) {
      loom_db_error_set(&c->err, NULL, "the connection was closed");
      complete(c, LOOM_ECLOSED);
    }
    if (c->shared_out == 0)
      submit(c, J_CLOSE);
    return;
  }
  loom_db_req_t *req = c->base.req;
  if (req == NULL)
    return;
  switch (kind) {
  case J_QUERY:
    req->result = c->result ? &c->result->base : NULL;
    c->result = NULL;
    complete(c, c->status);
    break;
  case J_STREAM_START:
  case J_STREAM_MORE:
    if (c->stopping) {
      if (c->stream)
        submit(c, J_STREAM_END);
      else
        finish_stop(c);
      break;
    }
    if (c->want_row || kind == J_STREAM_START)
      deliver(c);
    break;
  case J_STREAM_END:
    finish_stop(c);
    break;
  case J_BATCH:
  case J_RESET:
  case J_PING:
    complete(c, c->status);
    break;
  default:
    break;
  }
}

static int sq_start(loom_db_conn_t *base, loom_db_req_t *req) {
  sq_conn *c = (sq_conn *)base;
  int refused = loom_db_req_refuse(req, c->base.closing || c->db == NULL, NULL, base->req || c->job_out);
  if (refused)
    return refused;
  enum job_kind kind;
  switch (req->op) {
  case LOOM_DB_QUERY: kind = J_QUERY; break;
  case LOOM_DB_STREAM: kind = J_STREAM_START; break;
  case LOOM_DB_BATCH: kind = J_BATCH; break;
  case LOOM_DB_RESET: kind = J_RESET; break;
  case LOOM_DB_PING: kind = J_PING; break;
  default:
    loom_db_error_set(&req->err, NULL, "SQLite has no COPY: use insert_many");
    return req->status = LOOM_EDB_ARGUMENT;
  }
  loom_db_req_begin(base, req, NULL);
  loom_db_error_clear(&c->err);
  c->stopping = 0;
  c->want_row = 0;
  c->stream_end = 0;
  c->chunk_pos = 0;
  atomic_store(&c->cancelled, 0);
  submit(c, kind);
  return 0;
}

static int sq_next(loom_db_conn_t *base, loom_db_req_t *req) {
  sq_conn *c = (sq_conn *)base;
  if (base->req != req || req->op != LOOM_DB_STREAM || c->stopping)
    return LOOM_EDB_ARGUMENT;
  req->result = NULL;
  req->more = 0;
  deliver(c);
  return 0;
}

static int sq_copy_data(loom_db_conn_t *base, loom_db_req_t *req, const char *buf, size_t len) {
  (void)base; (void)buf; (void)len;
  loom_db_error_set(&req->err, NULL, "SQLite has no COPY: use insert_many");
  return LOOM_EDB_ARGUMENT;
}

/* ---- shared requests ------------------------------------------------------- */

static void exec_cached(sq_conn *c, sqlite3_stmt **st, const char *sql) {
  if (*st == NULL && sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK)
    return;
  sqlite3_step(*st);
  sqlite3_reset(*st);
}

/* Reads already queued behind this one run in one read transaction with
 * it: one round of file locking for the lot instead of one per statement.
 * Only jobs submitted before the transaction began join it, so each still
 * sees every write that finished before it was asked for. */
static void batch_enter(sq_conn *c) {
  if (c->batch_open) {
    c->batch_left--;
    return;
  }
  int behind = loom_lane_queued(c->lane);
  if (behind > 0 && sqlite3_get_autocommit(c->db)) {
    exec_cached(c, &c->begin_st, "BEGIN");
    c->batch_open = !sqlite3_get_autocommit(c->db);
    c->batch_left = behind;
  }
}

static void batch_leave(sq_conn *c, int force) {
  if (c->batch_open && (c->batch_left == 0 || force)) {
    exec_cached(c, &c->commit_st, "COMMIT");
    c->batch_open = 0;
    c->batch_left = 0;
  }
}

static void shared_work(loom_job_t *job) {
  sq_shared *sh = job->data;
  sq_conn *c = sh->c;
  loom_db_req_t *req = sh->req;
  if (atomic_load(&sh->cancelled) || c->db == NULL) {
    sh->status = LOOM_ECANCELED;
    loom_db_error_set(&sh->err, NULL, "cancelled before it ran");
    if (c->db) {
      batch_enter(c);
      batch_leave(c, 0);
    }
    return;
  }
  /* The conn's outcome fields are this job's scratch: keep what an
   * exclusive job before it left for the loop thread to read. */
  int saved_status = c->status;
  loom_db_error_t saved_err = c->err;
  memset(&c->err, 0, sizeof c->err);
  batch_enter(c);
  atomic_store_explicit(&c->stop_flag, &sh->cancelled, memory_order_release);
  c->status = 0;
  c->last_steps = 0;
  c->spare = sh->spare;
  sh->result = run_one(c, req->sql, req->sql_len, req->params, req->nparams, req->cache);
  sh->spare = c->spare;
  c->spare = NULL;
  sh->steps = c->last_steps;
  sh->ran = 1;
  atomic_store_explicit(&c->stop_flag, NULL, memory_order_release);
  batch_leave(c, 0);
  sh->status = c->status;
  sh->err = c->err;
  c->status = saved_status;
  c->err = saved_err;
}

static void note_steps(sq_conn *c, const loom_db_req_t *req, uint64_t h, uint64_t steps) {
  if (!req->cache)
    return;
  c->hints[h % HINTS].hash = h;
  c->hints[h % HINTS].len = req->sql_len;
  c->hints[h % HINTS].steps = steps;
}

static void shared_done(loom_job_t *job) {
  sq_shared *sh = job->data;
  sq_conn *c = sh->c;
  loom_db_req_t *req = sh->req;
  c->shared_out--;
  if (sh->ran)
    note_steps(c, req, loom_hash_bytes(req->sql, req->sql_len), sh->steps);
  req->status = sh->status;
  req->err = sh->err;
  req->result = sh->result ? &sh->result->base : NULL;
  req->more = 0;
  req->active = 0;
  free(sh->spare);
  free(sh);
  req->driver_data = NULL;
  req->cb(req);
  if (c->base.closing && c->shared_out == 0 && !c->job_out)
    submit(c, J_CLOSE);
}

static int sq_start_shared(loom_db_conn_t *base, loom_db_req_t *req) {
  sq_conn *c = (sq_conn *)base;
  if (c->base.closing || c->db == NULL) {
    loom_db_error_set(&req->err, NULL, "the connection is closed");
    return req->status = LOOM_EDB_CONNECTION;
  }
  if (req->op != LOOM_DB_QUERY) {
    loom_db_error_set(&req->err, NULL, "only single statements run shared");
    return req->status = LOOM_EDB_ARGUMENT;
  }
  sq_shared *sh = calloc(1, sizeof *sh);
  if (sh == NULL) {
    loom_db_error_set(&req->err, NULL, "out of memory");
    return req->status = LOOM_ENOMEM;
  }
  sh->spare = malloc(SQ_SPARE_BYTES); /* NULL: the lane allocates one */
  sh->c = c;
  sh->req = req;
  sh->job.work = shared_work;
  sh->job.done = shared_done;
  sh->job.data = sh;
  loom_db_req_begin_shared(base, req);
  req->driver_data = sh;
  c->shared_out++;
  loom_lane_submit(c->lane, &sh->job);
  return 0;
}

static int sq_cancel_shared(loom_db_conn_t *base, loom_db_req_t *req) {
  (void)base;
  sq_shared *sh = req->driver_data;
  if (req->active && sh)
    atomic_store(&sh->cancelled, 1);
  return 0;
}

static int sq_shared_pending(loom_db_conn_t *base) { return ((sq_conn *)base)->shared_out; }

static int sq_is_short(loom_db_conn_t *base, loom_db_req_t *req) {
  sq_conn *c = (sq_conn *)base;
  if (!req->cache)
    return 0;
  uint64_t h = loom_hash_bytes(req->sql, req->sql_len);
  return c->hints[h % HINTS].hash == h && c->hints[h % HINTS].len == req->sql_len &&
         c->hints[h % HINTS].steps <= INLINE_TURNS * 1000;
}

/* ---- short reads on the loop thread ------------------------------------------ */

/* A point select takes a few microseconds in SQLite; handing it to the
 * reader's thread and taking the answer back costs more on a busy
 * machine (two wake-ups, or two threads spinning for cores). So a read
 * whose statement is cached on an idle reader runs here first, under a
 * budget of INLINE_TURNS thousand VM steps and INLINE_NS: past either, it
 * stops and the worker runs it from the start. That is safe because no
 * row has left yet (rows are collected, then handed over at the end), and
 * a reader is query_only: running a read twice changes nothing. A lock it
 * would wait for (SQLITE_BUSY) also sends it to the worker, whose busy
 * timeout may sleep; here the busy handler is off.
 *
 * The reader is idle (no job out, no shared job queued), so its lane
 * thread does not touch it: the hand-off through the lane's queue and the
 * loop's post queue orders everything either side did before. The loop
 * takes this path only while no other thread's answer waits for it (else
 * the task waits on the worker path and the loop runs those answers
 * first) and when libuv polled less than INLINE_FAIR_NS ago: a task
 * reading in a loop still lets timers and sockets in, as it would on the
 * worker path. */
#define INLINE_FAIR_NS (1000000ull * LOOM_TIME_SCALE)
#define INLINE_BACKOFF_MAX 1024

static int sq_try_inline(loom_db_conn_t *base, loom_db_req_t *req) {
  sq_conn *c = (sq_conn *)base;
  loom_loop_t *loop = base->loop;
  if (!c->reader || c->base.closing || c->db == NULL || c->job_out || c->shared_out || base->req ||
      req->op != LOOM_DB_QUERY || !req->cache ||
      atomic_load_explicit(&loop->post_stack, memory_order_relaxed) != NULL)
    return LOOM_EAGAIN;
  uint64_t now = uv_hrtime();
  if (now - loop->last_run_ns > INLINE_FAIR_NS)
    return LOOM_EAGAIN;
  sq_cached *e = cache_find(c, req->sql, req->sql_len);
  if (e == NULL || !sqlite3_stmt_readonly(e->st))
    return LOOM_EAGAIN;
  if (e->inline_skip > 0) {
    e->inline_skip--;
    return LOOM_EAGAIN;
  }
  int saved_status = c->status;
  loom_db_error_t saved_err = c->err;
  memset(&c->err, 0, sizeof c->err);
  c->status = 0;
  c->last_code = 0;
  c->inline_turns = c->inline_over = 0;
  c->last_steps = 0;
  c->inline_deadline = now + INLINE_NS;
  sqlite3_busy_handler(c->db, NULL, NULL);
  sq_result *r = run_one(c, req->sql, req->sql_len, req->params, req->nparams, 1);
  sqlite3_busy_timeout(c->db, c->busy_ms);
  c->inline_deadline = 0;
  int code = c->last_code & 0xff;
  int gave_up = r == NULL && (c->inline_over || code == SQLITE_BUSY || code == SQLITE_LOCKED);
  /* The statement ran from the cache, which evicts only on a miss: e is
   * still its entry. */
  if (c->inline_over) {
    unsigned b = e->inline_backoff ? e->inline_backoff * 2 : 1;
    e->inline_backoff = b > INLINE_BACKOFF_MAX ? INLINE_BACKOFF_MAX : b;
    e->inline_skip = e->inline_backoff;
    note_steps(c, req, e->e.hash, c->inline_turns > INLINE_TURNS ? UINT64_MAX : c->last_steps);
  } else if (r) {
    e->inline_backoff = 0;
    note_steps(c, req, e->e.hash, c->last_steps);
  }
  if (gave_up) {
    loom_db_error_clear(&c->err);
  } else {
    req->conn = base;
    req->status = c->status;
    req->err = c->err;
    memset(&c->err, 0, sizeof c->err);
    req->result = r ? &r->base : NULL;
    req->more = 0;
    req->active = 0;
    base->last_used_ns = now;
  }
  c->status = saved_status;
  c->err = saved_err;
  return gave_up ? LOOM_EAGAIN : 0;
}

static int sq_cancel(loom_db_conn_t *base) {
  sq_conn *c = (sq_conn *)base;
  loom_db_req_t *req = base->req;
  if (req == NULL || c->db == NULL)
    return 0;
  if (req->op == LOOM_DB_STREAM) {
    if (c->stopping)
      return 0;
    c->stopping = 1;
    c->want_row = 0;
    if (c->job_out) {
      atomic_store(&c->cancelled, 1);
      sqlite3_interrupt(c->db);
      return 0;
    }
    if (c->stream)
      submit(c, J_STREAM_END);
    else
      finish_stop(c);
    return 0;
  }
  /* Thread-safe by design: the statement on the lane stops at its next
   * step with SQLITE_INTERRUPT, and the request completes as cancelled. A
   * late interrupt is harmless: SQLite clears it once no statement runs.
   * One that comes before the statement steps is forgotten the same way:
   * the flag stops it at the progress handler's next call. */
  if (c->job_out) {
    atomic_store(&c->cancelled, 1);
    sqlite3_interrupt(c->db);
  }
  return 0;
}

static void sq_close(loom_db_conn_t *base) {
  sq_conn *c = (sq_conn *)base;
  if (!loom_db_close_once(base))
    return;
  if (c->job_out || c->shared_out) {
    /* The answer to the last job out closes the connection after it. */
    if (c->db)
      sqlite3_interrupt(c->db);
    return;
  }
  if (base->req) {
    loom_db_error_set(&c->err, NULL, "the connection was closed");
    complete(c, LOOM_ECLOSED);
  }
  submit(c, J_CLOSE);
}

static loom_db_txn_t sq_txn(loom_db_conn_t *base) {
  sq_conn *c = (sq_conn *)base;
  if (c->db == NULL || base->broken)
    return LOOM_TXN_UNKNOWN;
  return c->autocommit ? LOOM_TXN_IDLE : LOOM_TXN_ACTIVE;
}

static int sq_take_changes(loom_db_conn_t *base, loom_db_change_t **out) {
  sq_conn *c = (sq_conn *)base;
  *out = NULL;
  sq_changes *p = &c->committed;
  if (p->n == 0)
    return 0;
  size_t bytes = (size_t)p->n * sizeof(loom_db_change_t);
  for (int i = 0; i < p->n; i++)
    bytes += strlen(p->v[i].table) + 1;
  loom_db_change_t *v = malloc(bytes);
  if (v == NULL)
    return 0;
  char *s = (char *)(v + p->n);
  for (int i = 0; i < p->n; i++) {
    size_t len = strlen(p->v[i].table) + 1;
    memcpy(s, p->v[i].table, len);
    v[i].op = p->v[i].op;
    v[i].table = s;
    v[i].rowid = p->v[i].rowid;
    s += len;
  }
  int n = p->n;
  clear_changes(p);
  *out = v;
  return n;
}

static char *conf_get(const char *conninfo, const char *key) {
  size_t klen = strlen(key);
  const char *p = conninfo;
  while (p && *p) {
    const char *eol = strchr(p, '\n');
    size_t len = eol ? (size_t)(eol - p) : strlen(p);
    if (len > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
      char *v = malloc(len - klen);
      if (v) {
        memcpy(v, p + klen + 1, len - klen - 1);
        v[len - klen - 1] = 0;
      }
      return v;
    }
    p = eol ? eol + 1 : NULL;
  }
  return NULL;
}

static int conf_int(const char *conninfo, const char *key, int def) {
  char *v = conf_get(conninfo, key);
  if (v == NULL)
    return def;
  int n = atoi(v);
  free(v);
  return n;
}

/* Once per process, before SQLite initializes itself: with memory
 * statistics on (its default), every allocation of every connection takes
 * one process-wide mutex, and readers on two threads running
 * allocation-heavy statements (a recursive CTE, a sort) spend their time
 * handing it back and forth instead of running side by side. The cost:
 * sqlite3_memory_used() reads 0 and the soft heap limit is not enforced.
 * When SQLite is already initialized (another library in the process was
 * first), the call fails harmlessly and the statistics stay on. */
static uv_once_t sqlite_once = UV_ONCE_INIT;

static void sqlite_setup(void) {
  sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  sqlite3_initialize();
}

static int sq_connect(loom_loop_t *loop, const char *conninfo, loom_db_req_t *req) {
  uv_once(&sqlite_once, sqlite_setup);
  req->conn = NULL;
  req->status = 0;
  sq_conn *c = calloc(1, sizeof *c);
  if (c == NULL) {
    loom_db_error_set(&req->err, NULL, "out of memory");
    return req->status = LOOM_ENOMEM;
  }
  c->base.driver = &loom_sqlite_driver;
  c->base.loop = loop;
  c->base.created_ns = c->base.last_used_ns = loom_now_ns();
  c->autocommit = 1;
  loom_stmt_cache_init(&c->cache, sizeof(sq_cached), CACHE_SIZE, 1, stmt_free);
  c->path = conf_get(conninfo, "path");
  c->conninfo = loom_db_strdup(conninfo);
  c->reader = req->role == LOOM_DB_ROLE_READER;
  c->memory = conf_int(conninfo, "memory", 0);
  c->busy_ms = conf_int(conninfo, "busy_timeout", 5000);
  if (c->path == NULL) {
    free(c->conninfo);
    free(c);
    loom_db_error_set(&req->err, NULL, "no database path given");
    return req->status = LOOM_EDB_ARGUMENT;
  }
  c->lane = loom_lane_start(loop);
  if (c->lane == NULL) {
    free(c->path);
    free(c->conninfo);
    free(c);
    loom_db_error_set(&req->err, NULL, "cannot start a worker thread");
    return req->status = LOOM_EDB_CONNECTION;
  }
  /* SQLite has no server session: the address tells connections apart in
   * logs, with no global counter. */
  c->base.backend_id = (int64_t)(((uintptr_t)c >> 4) & 0xffffff);
  c->connect_req = req;
  req->active = 1;
  submit(c, J_OPEN);
  return 0;
}

const loom_db_driver_t loom_sqlite_driver = {
  .name = "sqlite",
  .connect = sq_connect,
  .start = sq_start,
  .next = sq_next,
  .copy_data = sq_copy_data,
  .cancel = sq_cancel,
  .close = sq_close,
  .txn = sq_txn,
  .param_count = loom__sq_param_count,
  .placeholder = "?",
  .take_changes = sq_take_changes,
  .start_shared = sq_start_shared,
  .cancel_shared = sq_cancel_shared,
  .shared_pending = sq_shared_pending,
  .try_inline = sq_try_inline,
  .is_short = sq_is_short,
  .one_writer = 1,
  .only_reads = loom__sq_only_reads,
};
