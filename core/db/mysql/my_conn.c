/* The MySQL/MariaDB driver: MariaDB Connector/C's non-blocking API on
 * loom's loop.
 *
 * Every library call is a `_start` that either finishes or returns what it
 * waits for (socket readable/writable, a timeout); the loop polls the socket
 * with libuv, arms a loom timer for MYSQL_WAIT_TIMEOUT, and calls the
 * matching `_cont`. One operation runs at a time, and drive() chains them:
 * prepare, execute, fetch row after row (copied out as they come, so a
 * streamed statement is never buffered whole), close a temporary statement.
 *
 * Host names are resolved on libuv's thread pool first (the library would
 * block in getaddrinfo), into every address they have, each tried in turn
 * as libpq does (see "connect" below). Statements with parameters, and
 * repeated ones, are server-side prepared statements kept in a
 * per-connection cache.
 * Cancelling sends KILL QUERY <thread id> from a second, short-lived
 * connection (opened non-blocking too), and the request completes only after
 * that KILL has been answered, so it can never hit the next query. A
 * cancelled request that does not come back within MY_DRAIN_MS ends anyway
 * and its connection is given up: a cancel never waits on nothing. */
#define _GNU_SOURCE /* dladdr */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <errmsg.h>
#include <mysqld_error.h>
#include "my.h"
#include "resolve.h"
#include "stmt_cache.h"
#include "watcher.h"

#define MY_CACHE_MAX 256
/* How long a cancelled request may take to come back (KILL sent and
 * answered, the rest of the statement's answer read and dropped) before the
 * connection is given up as in an unknown state. Both take milliseconds on
 * a working server; the bound is only there so a cancel can never wait on
 * nothing. */
#define MY_DRAIN_MS 5000

typedef struct my_stmt {
  loom_stmt_entry_t e;
  MYSQL_STMT *stmt; /* NULL once handed back to the request running it */
} my_stmt;

typedef enum {
  OP_NONE, OP_CONNECT, OP_SETTINGS, OP_SETTINGS_STORE, OP_REAL_QUERY, OP_FETCH_ROW,
  OP_FREE_RESULT, OP_NEXT_RESULT, OP_PREPARE, OP_EXECUTE, OP_STMT_FETCH, OP_STMT_NEXT_RESULT,
  OP_STMT_CLOSE, OP_RESET, OP_PING, OP_SET_OPTION
} my_op;

/* Read once per connection, right after connecting: the server drops a
 * connection that sends a packet larger than this, so a statement that
 * would need one is refused before anything is sent. */
static const char SETTINGS_SQL[] = "SELECT @@max_allowed_packet";

enum { K_NONE, K_CONNECTING, K_KILLING };

/* Whether the server splits COM_QUERY text at ';' into statements
 * (MYSQL_OPTION_MULTI_STATEMENTS_ON). Off on a new connection; unknown
 * after a reset or a failed switch. */
enum { MULTI_OFF, MULTI_ON, MULTI_UNKNOWN };

typedef struct my_conn my_conn;
struct my_conn {
  loom_db_conn_t base;
  MYSQL *m;
  my_opts opts;
  char *conninfo;     /* kept for the KILL connection */
  char ip[64];        /* the address being tried, "" for a socket path */
  loom_watcher_t watch; /* the socket */
  loom_timer_t timer; /* MYSQL_WAIT_TIMEOUT */
  loom_timer_t drain_timer; /* bounds a cancelled request (MY_DRAIN_MS) */
  int refs;           /* lookups and stack frames using c */
  int connecting;
  int killer_only;    /* opened to send one KILL: no settings to read */
  unsigned long long max_packet; /* the server's max_allowed_packet, 0 if unknown */
  MYSQL_RES *settings;
  loom_db_req_t *connect_req;
  /* connecting: the addresses to try, and what each attempt came to */
  loom_resolve_t resolve;
  int from_list;      /* the addresses come from resolve (a host name) */
  int attempts;       /* addresses tried so far */
  int timed_out;      /* the attempt under way ran out of connect_timeout */
  loom_timer_t connect_timer; /* connect_timeout, per address */
  char *errors;       /* one line per failed attempt */
  int nerrors;
  unsigned last_no;   /* the last failure: its number, SQLSTATE, message */
  char last_sqlstate[8];
  char *last_msg;
  /* prepared statements */
  loom_stmt_cache_t cache;
  /* the library call in flight */
  my_op op;
  int wait;
  int iret;
  my_bool bret;
  MYSQL *mret;
  MYSQL_ROW row;
  /* the request in flight */
  loom_db_stmt_t one;   /* the statement of a single-statement request */
  loom_db_stmt_t *cur;  /* the statement running */
  int stmt_index;
  MYSQL_STMT *ps;       /* its prepared statement */
  my_stmt *cached;      /* its cache entry; NULL: closed after use */
  int to_cache;         /* being prepared to go into the cache */
  MYSQL_RES *res;       /* text protocol result being read */
  my_result *result;    /* rows gathered */
  my_op fetch_op;       /* how the next row is read */
  my_binds binds;
  MYSQL_BIND *pbind;
  char *pbool;
  int pcap;
  int discard;          /* rows are dropped: extra result sets, or cancelled */
  int paused;           /* a streamed row was handed over; waiting for next() */
  int draining;         /* cancelled */
  /* a script: exec's text, several statements in one COM_QUERY */
  int script;
  int script_index;     /* statements answered so far */
  int script_tail_blank; /* the text ends in a comment after its last ';' */
  int64_t script_rows;  /* rows of the current result set (dropped) */
  int64_t script_affected, script_id; /* the last statement's counts */
  int multi, multi_want; /* MULTI_*: the server's setting, the one asked */
  /* KILL QUERY */
  my_conn *killer;
  loom_db_req_t kill_req;
  int kill_state;
  int done_after_kill;
  char kill_sql[48];
};

static void drive(my_conn *c, int st);
static void on_poll(loom_watcher_t *w, int status, int events);
static int step(my_conn *c, my_op done);
static void finish(my_conn *c);
static void start_connect(my_conn *c);
static void my_close(loom_db_conn_t *base);

/* ---- small helpers ------------------------------------------------------ */

/* Client errors (2000-2999) and the server's ways of saying the session is
 * gone: the connection cannot be used again. */
static int is_conn_error(unsigned no) {
  return (no >= 2000 && no < 3000) || no == ER_CONNECTION_KILLED || no == ER_SERVER_SHUTDOWN ||
         no == ER_NET_READ_ERROR || no == ER_NET_READ_INTERRUPTED || no == ER_NET_ERROR_ON_WRITE ||
         no == ER_NET_WRITE_INTERRUPTED || no == ER_NET_PACKET_TOO_LARGE || no == 4031;
}

static void set_error(loom_db_error_t *e, unsigned no, const char *sqlstate, const char *msg) {
  char code[16];
  snprintf(code, sizeof code, "%u", no);
  loom_db_error_set(e, code, msg && *msg ? msg : "unknown MySQL error");
  if (sqlstate) {
    strncpy(e->sqlstate, sqlstate, sizeof e->sqlstate - 1);
    e->sqlstate[sizeof e->sqlstate - 1] = 0;
  }
}

/* Records the first error of the running statement. */
static void stmt_error(my_conn *c, unsigned no, const char *sqlstate, const char *msg) {
  loom_db_stmt_t *st = c->cur;
  if (is_conn_error(no))
    c->base.broken = 1;
  if (st == NULL || st->status != 0)
    return;
  set_error(&st->err, no, sqlstate, msg);
  st->status = is_conn_error(no) ? LOOM_EDB_CONNECTION : LOOM_EDB_QUERY;
}

static void conn_error(my_conn *c) {
  stmt_error(c, mysql_errno(c->m), mysql_sqlstate(c->m), mysql_error(c->m));
}

static void ps_error(my_conn *c) {
  stmt_error(c, mysql_stmt_errno(c->ps), mysql_stmt_sqlstate(c->ps), mysql_stmt_error(c->ps));
}

static void want(my_conn *c, int events) {
  /* Idle, the socket stays registered for reading without keeping the loop
   * alive: a server closing it (wait_timeout, KILL, shutdown) is noticed. */
  int idle = events == 0 && c->op == OP_NONE && c->base.req == NULL && !c->connecting &&
             !c->base.broken && !c->base.closing;
  loom_watcher_want(&c->watch, idle ? UV_READABLE : events, !idle);
}

static void maybe_free(my_conn *c) {
  if (!c->base.closing || c->refs > 0 || loom_watcher_busy(&c->watch))
    return;
  loom_stmt_cache_clear(&c->cache);
  loom__my_binds_free(&c->binds);
  free(c->pbind);
  free(c->pbool);
  loom__my_opts_free(&c->opts);
  free(c->conninfo);
  loom_resolve_free(&c->resolve);
  free(c->errors);
  free(c->last_msg);
  loom_db_error_clear(&c->one.err);
  loom_db_result_free(c->one.result);
  free(c);
}

static void on_watch_closed(loom_watcher_t *w) {
  maybe_free(w->data);
}

static int track_socket(my_conn *c) {
  return loom_watcher_track(c->base.loop, &c->watch, (int)mysql_get_socket(c->m), 0);
}

/* The library closes the socket itself when the connection fails (and
 * its number may come back for another connection): stop polling it at
 * once, before libuv would act on a number that is no longer ours. */
static void check_socket(my_conn *c) {
  if (c->m == NULL || (int)mysql_get_socket(c->m) != c->watch.fd)
    loom_watcher_close(&c->watch);
}

/* ---- statement cache ---------------------------------------------------- */

/* Only once the server has forgotten the statements (after a reset or
 * close, which invalidate them in the library): no I/O happens here. */
static void stmt_free(loom_stmt_entry_t *e) {
  my_stmt *s = (my_stmt *)e;
  if (s->stmt)
    mysql_stmt_close(s->stmt);
}

static int cache_add(my_conn *c, const char *sql, size_t len, MYSQL_STMT *stmt) {
  my_stmt *s = (my_stmt *)loom_stmt_cache_add(&c->cache, sql, len);
  if (s == NULL)
    return -1;
  s->stmt = stmt;
  c->cached = s;
  return 0;
}

/* ---- library calls ------------------------------------------------------ */

static int op_start(my_conn *c, my_op op) {
  MYSQL *m = c->m;
  loom_db_stmt_t *st = c->cur;
  c->op = op;
  switch (op) {
  case OP_CONNECT: {
    my_opts *o = &c->opts;
    return mysql_real_connect_start(&c->mret, m, c->ip[0] ? c->ip : NULL, o->user,
                                    o->password ? o->password : "", o->db, o->port,
                                    o->socket, CLIENT_MULTI_RESULTS | CLIENT_FOUND_ROWS);
  }
  case OP_SETTINGS:
    return mysql_real_query_start(&c->iret, m, SETTINGS_SQL, sizeof SETTINGS_SQL - 1);
  case OP_SETTINGS_STORE: return mysql_store_result_start(&c->settings, m);
  case OP_REAL_QUERY: return mysql_real_query_start(&c->iret, m, st->sql, st->sql_len);
  case OP_FETCH_ROW: return mysql_fetch_row_start(&c->row, c->res);
  case OP_FREE_RESULT: return mysql_free_result_start(c->res);
  case OP_NEXT_RESULT: return mysql_next_result_start(&c->iret, m);
  case OP_PREPARE: return mysql_stmt_prepare_start(&c->iret, c->ps, st->sql, st->sql_len);
  case OP_EXECUTE: return mysql_stmt_execute_start(&c->iret, c->ps);
  case OP_STMT_FETCH: return mysql_stmt_fetch_start(&c->iret, c->ps);
  case OP_STMT_NEXT_RESULT: return mysql_stmt_next_result_start(&c->iret, c->ps);
  case OP_STMT_CLOSE: return mysql_stmt_close_start(&c->bret, c->ps);
  case OP_RESET: return mysql_reset_connection_start(&c->iret, m);
  case OP_PING: return mysql_ping_start(&c->iret, m);
  case OP_SET_OPTION:
    return mysql_set_server_option_start(&c->iret, m, c->multi_want == MULTI_ON
                                                          ? MYSQL_OPTION_MULTI_STATEMENTS_ON
                                                          : MYSQL_OPTION_MULTI_STATEMENTS_OFF);
  default: return 0;
  }
}

static int op_cont(my_conn *c, int ready) {
  MYSQL *m = c->m;
  switch (c->op) {
  case OP_CONNECT: return mysql_real_connect_cont(&c->mret, m, ready);
  case OP_SETTINGS: return mysql_real_query_cont(&c->iret, m, ready);
  case OP_SETTINGS_STORE: return mysql_store_result_cont(&c->settings, m, ready);
  case OP_REAL_QUERY: return mysql_real_query_cont(&c->iret, m, ready);
  case OP_FETCH_ROW: return mysql_fetch_row_cont(&c->row, c->res, ready);
  case OP_FREE_RESULT: return mysql_free_result_cont(c->res, ready);
  case OP_NEXT_RESULT: return mysql_next_result_cont(&c->iret, m, ready);
  case OP_PREPARE: return mysql_stmt_prepare_cont(&c->iret, c->ps, ready);
  case OP_EXECUTE: return mysql_stmt_execute_cont(&c->iret, c->ps, ready);
  case OP_STMT_FETCH: return mysql_stmt_fetch_cont(&c->iret, c->ps, ready);
  case OP_STMT_NEXT_RESULT: return mysql_stmt_next_result_cont(&c->iret, c->ps, ready);
  case OP_STMT_CLOSE: return mysql_stmt_close_cont(&c->bret, c->ps, ready);
  case OP_RESET: return mysql_reset_connection_cont(&c->iret, m, ready);
  case OP_PING: return mysql_ping_cont(&c->iret, m, ready);
  case OP_SET_OPTION: return mysql_set_server_option_cont(&c->iret, m, ready);
  default: return 0;
  }
}

/* Ends a suspended library call at once, as failed: with the socket shut
 * down every read and write fails, so each _cont returns without waiting.
 * c->op stays set: the caller steps it or drops it. */
static void force_complete(my_conn *c) {
  if (c->op == OP_NONE || c->m == NULL)
    return;
  c->base.broken = 1;
  if (c->wait == 0)
    return;
  int sock = (int)mysql_get_socket(c->m);
  if (sock >= 0)
    shutdown(sock, SHUT_RDWR);
  loom_timer_stop(c->base.loop, &c->timer);
  int st = c->wait;
  for (int i = 0; st != 0 && i < 1000; i++)
    st = op_cont(c, MYSQL_WAIT_READ | MYSQL_WAIT_WRITE | MYSQL_WAIT_TIMEOUT);
  c->wait = 0;
  check_socket(c);
}

/* 1: waiting; 0: the call could not wait and was completed as failed. */
static int wait_for(my_conn *c, int st) {
  c->wait = st;
  if ((st & (MYSQL_WAIT_READ | MYSQL_WAIT_WRITE | MYSQL_WAIT_EXCEPT)) && track_socket(c) != 0) {
    force_complete(c);
    return 0;
  }
  int ev = 0;
  if (st & (MYSQL_WAIT_READ | MYSQL_WAIT_EXCEPT))
    ev |= UV_READABLE;
  if (st & MYSQL_WAIT_WRITE)
    ev |= UV_WRITABLE;
  if (st & MYSQL_WAIT_TIMEOUT)
    loom_timer_start(c->base.loop, &c->timer,
                     (uint64_t)mysql_get_timeout_value_ms(c->m) * 1000000ull);
  want(c, ev);
  return 1;
}

/* Runs library calls until one has to wait or the request is done. st is
 * what the last started call returned: a wait mask, 0 (finished) or -1
 * (nothing started). */
static void drive(my_conn *c, int st) {
  c->refs++;
  for (;;) {
    if (st < 0)
      break;
    if (st > 0 && wait_for(c, st))
      break;
    my_op done = c->op;
    c->op = OP_NONE;
    check_socket(c);
    st = step(c, done);
  }
  c->refs--;
  maybe_free(c);
}

static void resume(my_conn *c, int ready) {
  loom_timer_stop(c->base.loop, &c->timer);
  c->wait = 0;
  int st = op_cont(c, ready);
  drive(c, st);
}

static void on_timer(loom_timer_t *t) {
  my_conn *c = t->data;
  if (c->wait & MYSQL_WAIT_TIMEOUT)
    resume(c, MYSQL_WAIT_TIMEOUT);
}

/* A readable socket between requests: the server closed it or sent an
 * error before closing (wait_timeout, KILL, shutdown). */
static void idle_readable(my_conn *c) {
  char b;
  ssize_t n = recv(c->watch.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
    return;
  c->base.broken = 1;
  want(c, 0);
}

static void on_poll(loom_watcher_t *w, int status, int events) {
  my_conn *c = w->data;
  if (c->op == OP_NONE) {
    if (!c->connecting && c->base.req == NULL && !c->base.closing)
      idle_readable(c);
    else
      want(c, 0);
    return;
  }
  if (c->wait == 0)
    return;
  int ready = 0;
  if (status < 0) {
    ready = c->wait & (MYSQL_WAIT_READ | MYSQL_WAIT_WRITE);
  } else {
    if (events & UV_READABLE)
      ready |= MYSQL_WAIT_READ;
    if (events & UV_WRITABLE)
      ready |= MYSQL_WAIT_WRITE;
  }
  ready &= c->wait | MYSQL_WAIT_EXCEPT;
  if (ready == 0)
    return;
  resume(c, ready);
}

/* ---- statements ----------------------------------------------------------- */

static int bind_params(my_conn *c) {
  loom_db_stmt_t *st = c->cur;
  int n = st->nparams;
  if ((unsigned)n != mysql_stmt_param_count(c->ps)) {
    char msg[160];
    snprintf(msg, sizeof msg, "the server counts %lu parameters (?) in the statement, but %d were given",
             mysql_stmt_param_count(c->ps), n);
    if (st->status == 0) {
      loom_db_error_set(&st->err, NULL, msg);
      st->status = LOOM_EDB_ARGUMENT;
    }
    return -1;
  }
  if (n == 0)
    return 0;
  if (n > c->pcap) {
    MYSQL_BIND *b = realloc(c->pbind, (size_t)n * sizeof *b);
    if (b)
      c->pbind = b;
    char *pb = realloc(c->pbool, (size_t)n);
    if (pb)
      c->pbool = pb;
    if (b == NULL || pb == NULL) {
      loom_db_error_set(&st->err, NULL, "out of memory");
      st->status = LOOM_ENOMEM;
      return -1;
    }
    c->pcap = n;
  }
  memset(c->pbind, 0, (size_t)n * sizeof *c->pbind);
  for (int i = 0; i < n; i++) {
    const loom_value_t *v = &st->params[i];
    MYSQL_BIND *b = &c->pbind[i];
    switch (v->type) {
    case LOOM_VNULL:
      b->buffer_type = MYSQL_TYPE_NULL;
      break;
    case LOOM_VINT:
      b->buffer_type = MYSQL_TYPE_LONGLONG;
      b->buffer = (void *)&v->u.i;
      break;
    case LOOM_VFLOAT:
      b->buffer_type = MYSQL_TYPE_DOUBLE;
      b->buffer = (void *)&v->u.f;
      break;
    case LOOM_VBOOL:
      c->pbool[i] = (char)(v->u.b != 0);
      b->buffer_type = MYSQL_TYPE_TINY;
      b->buffer = &c->pbool[i];
      break;
    case LOOM_VBLOB:
      b->buffer_type = MYSQL_TYPE_BLOB;
      b->buffer = (void *)v->u.s.p;
      b->buffer_length = (unsigned long)v->u.s.len;
      break;
    default:
      b->buffer_type = MYSQL_TYPE_STRING;
      b->buffer = (void *)v->u.s.p;
      b->buffer_length = (unsigned long)v->u.s.len;
      break;
    }
  }
  if (mysql_stmt_bind_param(c->ps, c->pbind)) {
    ps_error(c);
    return -1;
  }
  return 0;
}

static int end_stmt(my_conn *c);

static int after_ps(my_conn *c);

static unsigned lenenc_size(unsigned long long n) {
  return n < 251 ? 1 : n < 65536 ? 3 : n < 16777216 ? 4 : 9;
}

/* Refuses a statement whose packet the server would not take (a payload
 * of max_allowed_packet bytes or more): it would answer by dropping the
 * connection, or go away while the packet is still being written, which
 * says nothing of the cause. The packets are the statement's text
 * (COM_QUERY, COM_STMT_PREPARE) and, with parameters, COM_STMT_EXECUTE:
 * a fixed header, the NULL bitmap, two type bytes and the value of each. */
static int too_large(my_conn *c) {
  loom_db_stmt_t *st = c->cur;
  if (c->max_packet == 0)
    return 0;
  unsigned long long text = 1 + (unsigned long long)st->sql_len;
  unsigned long long exec = 0, largest_len = 0;
  int largest = 0;
  if (st->nparams > 0) {
    unsigned long long n = (unsigned long long)st->nparams;
    exec = 1 + 4 + 1 + 4 + (n + 7) / 8 + 1 + 2 * n;
    for (int i = 0; i < st->nparams; i++) {
      const loom_value_t *v = &st->params[i];
      unsigned long long len;
      switch (v->type) {
      case LOOM_VNULL: len = 0; break;
      case LOOM_VINT: case LOOM_VFLOAT: len = 8; break;
      case LOOM_VBOOL: len = 1; break;
      default:
        len = (unsigned long long)v->u.s.len;
        exec += lenenc_size(len);
      }
      exec += len;
      if (len > largest_len) {
        largest_len = len;
        largest = i + 1;
      }
    }
  }
  unsigned long long need = exec > text ? exec : text;
  if (need < c->max_packet)
    return 0;
  char msg[256];
  if (exec > text)
    snprintf(msg, sizeof msg,
             "the statement's parameters (%llu bytes in all; the largest, parameter %d, is %llu "
             "bytes) do not fit in the server's max_allowed_packet (%llu bytes)",
             need, largest, largest_len, c->max_packet);
  else
    snprintf(msg, sizeof msg,
             "the statement (%llu bytes) does not fit in the server's max_allowed_packet (%llu bytes)",
             (unsigned long long)st->sql_len, c->max_packet);
  loom_db_error_set(&st->err, NULL, msg);
  st->status = LOOM_EDB_ARGUMENT;
  return 1;
}

/* Sends the statement's text (COM_QUERY). The server splits text at ';'
 * only while multi statements are on, and only a script asks for that:
 * other text holding a ';' runs with them off, so it stays one statement
 * (nothing can smuggle a second one into a query). Text without a ';' is
 * one statement either way, and a switch costs a round trip, so the
 * setting changes only when it matters. */
static int start_text(my_conn *c) {
  int multi = c->script ? MULTI_ON
              : memchr(c->cur->sql, ';', c->cur->sql_len) ? MULTI_OFF : c->multi;
  if (multi != c->multi) {
    c->multi_want = multi;
    return op_start(c, OP_SET_OPTION);
  }
  return op_start(c, OP_REAL_QUERY);
}

static void cancelled_before_sent(my_conn *c) {
  stmt_error(c, ER_QUERY_INTERRUPTED, "70100", "Query execution was interrupted");
}

static int begin_stmt(my_conn *c) {
  loom_db_req_t *req = c->base.req;
  loom_db_stmt_t *st = c->cur;
  st->status = 0;
  st->result = NULL;
  c->discard = c->draining;
  c->ps = NULL;
  c->cached = NULL;
  c->to_cache = 0;
  /* Only exec's text holding a ';' may be several statements; any other
   * exec goes the usual way (prepared, and cached). */
  c->script = req->op == LOOM_DB_QUERY && req->script && st->nparams == 0 &&
              memchr(st->sql, ';', st->sql_len) != NULL;
  c->script_index = 0;
  c->script_affected = c->script_id = 0;
  c->script_tail_blank = c->script && loom__my_ends_in_comment(st->sql, st->sql_len);
  if (c->draining) {
    /* A batch cancelled between two statements: the KILL may already be
     * done with, and would not stop the next one. */
    cancelled_before_sent(c);
    return end_stmt(c);
  }
  if (too_large(c))
    return end_stmt(c);
  if (loom__my_dirties_session(st->sql, st->sql_len))
    c->base.dirty = 1;
  int cache = req->cache && req->op != LOOM_DB_STREAM;
  if (c->script || (st->nparams == 0 && !cache))
    return start_text(c);
  if (cache) {
    my_stmt *s = (my_stmt *)loom_stmt_cache_find(&c->cache, st->sql, st->sql_len);
    if (s) {
      c->cached = s;
      c->ps = s->stmt;
      if (bind_params(c) != 0)
        return end_stmt(c);
      return op_start(c, OP_EXECUTE);
    }
    c->to_cache = loom_stmt_cache_has_room(&c->cache);
  }
  c->ps = mysql_stmt_init(c->m);
  if (c->ps == NULL) {
    loom_db_error_set(&st->err, NULL, "out of memory");
    st->status = LOOM_ENOMEM;
    return end_stmt(c);
  }
  return op_start(c, OP_PREPARE);
}

static int prepared(my_conn *c) {
  loom_db_stmt_t *st = c->cur;
  if (c->iret != 0) {
    unsigned no = mysql_stmt_errno(c->ps);
    /* Some statements cannot be prepared; without parameters they can
     * still run as plain text. No I/O: the statement never existed. */
    if (no == ER_UNSUPPORTED_PS && st->nparams == 0) {
      mysql_stmt_close(c->ps);
      c->ps = NULL;
      return start_text(c);
    }
    ps_error(c);
    mysql_stmt_close(c->ps);
    c->ps = NULL;
    return end_stmt(c);
  }
  if (bind_params(c) != 0)
    return after_ps(c);
  if (c->to_cache && cache_add(c, st->sql, st->sql_len, c->ps) != 0)
    c->to_cache = 0;
  return op_start(c, OP_EXECUTE);
}

static my_result *new_result(my_conn *c, int binary) {
  if (binary)
    return loom__my_result_new(c->ps->fields, mysql_stmt_field_count(c->ps));
  return loom__my_result_new(mysql_fetch_fields(c->res), mysql_num_fields(c->res));
}

/* Takes the fetched row: into the result, or handed over alone (stream).
 * 1 when the request paused. */
static int take_row(my_conn *c, int binary) {
  loom_db_req_t *req = c->base.req;
  if (c->discard)
    return 0;
  int stream = req->op == LOOM_DB_STREAM;
  my_result *r = stream ? new_result(c, binary) : c->result;
  int rc = r == NULL ? LOOM_ENOMEM
           : binary  ? loom__my_result_bin_row(r, &c->binds, c->ps)
                     : loom__my_result_text_row(r, c->row, mysql_fetch_lengths(c->res));
  if (rc != 0) {
    if (stream && r)
      loom_db_result_free(loom__my_result_base(r));
    if (c->cur->status == 0) {
      loom_db_error_set(&c->cur->err, NULL, rc == LOOM_ENOMEM ? "out of memory" : "cannot read a column");
      c->cur->status = rc;
    }
    c->discard = 1;
    return 0;
  }
  if (!stream)
    return 0;
  loom__my_result_set_counts(r, 1, 0);
  req->result = loom__my_result_base(r);
  req->more = 1;
  c->paused = 1;
  want(c, 0);
  req->cb(req);
  return 1;
}

static int executed(my_conn *c) {
  if (c->iret != 0) {
    ps_error(c);
    if (c->cached && mysql_stmt_errno(c->ps) == ER_UNKNOWN_STMT_HANDLER) {
      /* The server lost it: prepare again next time; this one is closed
       * after use. */
      c->cached->stmt = NULL;
      loom_stmt_cache_remove(&c->cache, &c->cached->e);
      c->cached = NULL;
    }
    return after_ps(c);
  }
  unsigned n = mysql_stmt_field_count(c->ps);
  if (n > 0) {
    if (loom__my_binds_setup(&c->binds, c->ps) != 0) {
      ps_error(c);
      c->discard = 1;
    }
    if (!c->discard && c->base.req->op != LOOM_DB_STREAM) {
      c->result = new_result(c, 1);
      if (c->result == NULL) {
        loom_db_error_set(&c->cur->err, NULL, "out of memory");
        c->cur->status = LOOM_ENOMEM;
        c->discard = 1;
      }
    }
    c->fetch_op = OP_STMT_FETCH;
    return op_start(c, OP_STMT_FETCH);
  }
  c->result = loom__my_result_new(NULL, 0);
  if (c->result)
    loom__my_result_set_counts(c->result, (int64_t)mysql_stmt_affected_rows(c->ps),
                               (int64_t)mysql_stmt_insert_id(c->ps));
  return after_ps(c);
}

static int stmt_fetched(my_conn *c) {
  if (c->iret == 0 || c->iret == MYSQL_DATA_TRUNCATED) {
    if (take_row(c, 1))
      return -1;
    return op_start(c, OP_STMT_FETCH);
  }
  if (c->iret != MYSQL_NO_DATA)
    ps_error(c);
  if (c->result)
    loom__my_result_set_counts(c->result, loom__my_result_base(c->result)->nrows, 0);
  return after_ps(c);
}

/* After a prepared statement's rows: skip further result sets (CALL), close
 * it unless cached. */
static int after_ps(my_conn *c) {
  if (!c->base.broken && c->ps && c->ps->mysql &&
      (c->m->server_status & SERVER_MORE_RESULTS_EXIST) && c->cur->status == 0) {
    c->discard = 1;
    return op_start(c, OP_STMT_NEXT_RESULT);
  }
  if (c->ps && c->cached == NULL) {
    if (c->base.broken) {
      mysql_stmt_close(c->ps); /* nothing to tell a server that is gone */
      c->ps = NULL;
      return end_stmt(c);
    }
    return op_start(c, OP_STMT_CLOSE);
  }
  return end_stmt(c);
}

static int stmt_next_result(my_conn *c) {
  if (c->iret > 0) {
    ps_error(c);
    return after_ps(c);
  }
  if (c->iret < 0 || mysql_stmt_field_count(c->ps) == 0)
    return after_ps(c);
  if (loom__my_binds_setup(&c->binds, c->ps) != 0) {
    ps_error(c);
    return after_ps(c);
  }
  c->fetch_op = OP_STMT_FETCH;
  return op_start(c, OP_STMT_FETCH);
}

/* ---- the text protocol ---------------------------------------------------- */

/* Where a script failed: index is the statement whose answer was awaited.
 * The statements before it are done (each commits on its own outside a
 * transaction); the server runs none after it. */
static void script_failed_at(my_conn *c, int index) {
  if (c->script && c->cur->status != 0 && c->cur->err.statement == 0)
    c->cur->err.statement = index;
}

/* exec returns the last statement's counts. A comment after the last ';'
 * comes back as one more, empty statement, which does not count. */
static void script_counts(my_conn *c, int64_t affected, int64_t id) {
  if (c->script_tail_blank && c->script_index > 1 && !mysql_more_results(c->m))
    return;
  c->script_affected = affected;
  c->script_id = id;
}

static int after_text(my_conn *c) {
  /* Every result is read, also after a failure of the driver's own (out of
   * memory): one left unread would answer the connection's next request. */
  if (!c->base.broken && mysql_more_results(c->m)) {
    c->discard = 1;
    return op_start(c, OP_NEXT_RESULT);
  }
  if (c->script && c->cur->status == 0 && !c->draining) {
    c->result = loom__my_result_new(NULL, 0);
    if (c->result)
      loom__my_result_set_counts(c->result, c->script_affected, c->script_id);
  }
  return end_stmt(c);
}

static int text_result(my_conn *c) {
  if (c->script) {
    /* exec gives counts: a script's rows are read and dropped. */
    c->script_index++;
    c->script_rows = 0;
    c->discard = 1;
  }
  if (mysql_field_count(c->m) == 0) {
    if (c->script) {
      script_counts(c, (int64_t)mysql_affected_rows(c->m), (int64_t)mysql_insert_id(c->m));
    } else if (c->result == NULL && !c->discard) {
      c->result = loom__my_result_new(NULL, 0);
      if (c->result)
        loom__my_result_set_counts(c->result, (int64_t)mysql_affected_rows(c->m),
                                   (int64_t)mysql_insert_id(c->m));
    }
    return after_text(c);
  }
  c->res = mysql_use_result(c->m);
  if (c->res == NULL) {
    conn_error(c);
    script_failed_at(c, c->script_index);
    return end_stmt(c);
  }
  if (!c->discard && c->base.req->op != LOOM_DB_STREAM && c->result == NULL) {
    c->result = new_result(c, 0);
    if (c->result == NULL) {
      loom_db_error_set(&c->cur->err, NULL, "out of memory");
      c->cur->status = LOOM_ENOMEM;
      c->discard = 1;
    }
  }
  c->fetch_op = OP_FETCH_ROW;
  return op_start(c, OP_FETCH_ROW);
}

static int row_fetched(my_conn *c) {
  if (c->row == NULL) {
    if (mysql_errno(c->m)) {
      conn_error(c);
      script_failed_at(c, c->script_index);
    } else if (c->script) {
      script_counts(c, c->script_rows, 0);
    }
    if (c->result)
      loom__my_result_set_counts(c->result, loom__my_result_base(c->result)->nrows, 0);
    return op_start(c, OP_FREE_RESULT);
  }
  c->script_rows++;
  if (take_row(c, 0))
    return -1;
  return op_start(c, OP_FETCH_ROW);
}

/* ---- requests ------------------------------------------------------------- */

static int end_stmt(my_conn *c) {
  loom_db_req_t *req = c->base.req;
  loom_db_stmt_t *st = c->cur;
  if (c->result) {
    loom_db_result_t *r = loom__my_result_base(c->result);
    c->result = NULL;
    /* The rows of the first result set; the discard flag only says
     * later sets (a CALL's) are dropped, not this one. */
    if (st->status == 0 && !c->draining && req->op != LOOM_DB_STREAM)
      st->result = r;
    else
      loom_db_result_free(r);
  }
  c->ps = NULL;
  c->cached = NULL;
  if (req->op == LOOM_DB_BATCH && !c->base.broken) {
    if (st->status != 0) {
      for (int i = c->stmt_index + 1; i < req->nstmts; i++) {
        loom_db_error_set(&req->stmts[i].err, "", "not run: an earlier statement of the batch failed");
        req->stmts[i].status = LOOM_EDB_QUERY;
      }
    } else if (c->stmt_index + 1 < req->nstmts) {
      c->cur = &req->stmts[++c->stmt_index];
      return begin_stmt(c);
    }
  }
  finish(c);
  return -1;
}

static void abort_killer(my_conn *c);

static void finish(my_conn *c) {
  loom_db_req_t *req = c->base.req;
  if (req == NULL)
    return;
  if (c->kill_state == K_CONNECTING) {
    abort_killer(c); /* done before the KILL went out: no need for it */
  } else if (c->kill_state == K_KILLING) {
    /* Complete only once the KILL has been answered. */
    c->done_after_kill = 1;
    want(c, 0);
    return;
  }
  if (req->op != LOOM_DB_BATCH) {
    loom_db_req_take_one(req, &c->one);
    if (c->draining && req->status == LOOM_EDB_QUERY && strcmp(req->err.code, "1317") == 0)
      req->status = LOOM_ECANCELED;
  }
  if (req->status != 0 && req->result) {
    loom_db_result_free(req->result);
    req->result = NULL;
  }
  loom_db_result_free(c->one.result);
  c->one.result = NULL;
  loom_timer_stop(c->base.loop, &c->drain_timer);
  c->cur = NULL;
  c->paused = 0;
  c->base.req = NULL;
  req->active = 0;
  req->more = 0;
  want(c, 0);
  req->cb(req);
}

static int reset_done(my_conn *c) {
  if (c->iret != 0) {
    conn_error(c);
    c->base.broken = 1;
  } else {
    /* The server dropped the prepared statements; the library invalidated
     * its handles, which now close without I/O. */
    loom_stmt_cache_clear(&c->cache);
    c->base.dirty = 0;
    c->multi = MULTI_UNKNOWN;
    /* The reset rolled back and restored autocommit, but the library
     * keeps the status flags of the last statement before it. */
    c->m->server_status &= ~(unsigned)(SERVER_STATUS_IN_TRANS | SERVER_STATUS_IN_TRANS_READONLY);
    c->m->server_status |= SERVER_STATUS_AUTOCOMMIT;
  }
  finish(c);
  return -1;
}

static int try_next(my_conn *c);

/* Ends the attempt under way. Nothing is worth sending (the connection
 * never opened, or broke or ran out of time before it was usable): the
 * socket is shut down, so the library's close cannot wait. The poll goes
 * first, while the socket is still open: the next attempt's socket may get
 * the same number, and must not inherit a registration the kernel dropped. */
static void drop_attempt(my_conn *c) {
  loom_timer_stop(c->base.loop, &c->connect_timer);
  loom_timer_stop(c->base.loop, &c->timer);
  loom_watcher_close(&c->watch);
  if (c->m) {
    int sock = c->mret ? (int)mysql_get_socket(c->m) : -1;
    if (sock >= 0)
      shutdown(sock, SHUT_RDWR);
    mysql_close(c->m);
    c->m = NULL;
  }
  c->op = OP_NONE;
  c->wait = 0;
}

/* The connect request ends: ok (status 0), or failed with what the
 * attempts came to: the one failure as the library put it, or, when several
 * addresses were tried, a line for each naming it. The number and SQLSTATE
 * are the last attempt's. */
static int connect_done(my_conn *c, int status) {
  loom_db_req_t *req = c->connect_req;
  loom_timer_stop(c->base.loop, &c->connect_timer);
  c->connecting = 0;
  c->connect_req = NULL;
  req->active = 0;
  if (status == 0) {
    c->base.backend_id = (int64_t)mysql_thread_id(c->m);
    req->status = 0;
    req->conn = &c->base;
    want(c, 0);
  } else {
    if (c->nerrors > 0)
      set_error(&req->err, c->last_no, c->last_sqlstate, c->nerrors == 1 ? c->last_msg : c->errors);
    else if (req->err.message == NULL)
      loom_db_error_set(&req->err, "2002", "could not connect to the server");
    req->status = status;
    req->conn = NULL;
    c->base.closing = 1;
    drop_attempt(c);
  }
  req->cb(req);
  return -1;
}

/* Keeps one failed attempt for the error: msg as the library put it, line
 * naming the address as well. */
static void note_line(my_conn *c, unsigned no, const char *sqlstate, const char *msg,
                      const char *line) {
  c->last_no = no;
  snprintf(c->last_sqlstate, sizeof c->last_sqlstate, "%s", sqlstate ? sqlstate : "");
  free(c->last_msg);
  c->last_msg = loom_db_strdup(msg && *msg ? msg : "unknown MySQL error");
  size_t have = c->errors ? strlen(c->errors) : 0, n = strlen(line);
  char *e = realloc(c->errors, have + n + 2);
  if (e) { /* else the message is shorter, nothing worse */
    if (have)
      e[have++] = '\n';
    memcpy(e + have, line, n + 1);
    c->errors = e;
  }
  c->nerrors++;
}

/* The current attempt failed with msg. A reason of our own (a timeout)
 * names the address even when it is the only line. */
static void note_failure(my_conn *c, unsigned no, const char *sqlstate, const char *msg, int ours) {
  char line[1024];
  if (c->opts.socket)
    snprintf(line, sizeof line, "connection to server on socket \"%.300s\" failed: %.512s",
             c->opts.socket, msg);
  else if (strcmp(c->ip, c->opts.host) == 0)
    snprintf(line, sizeof line, "connection to server at \"%s\", port %u failed: %.512s", c->ip,
             c->opts.port, msg);
  else
    snprintf(line, sizeof line, "connection to server at \"%.200s\" (%s), port %u failed: %.512s",
             c->opts.host, c->ip, c->opts.port, msg);
  note_line(c, no, sqlstate, ours ? line : msg, line);
}

/* Errors that say this address cannot be reached or gave up before the
 * server said anything of its own: another address may do better. */
static int unreachable(unsigned no) {
  return no == CR_CONNECTION_ERROR || no == CR_CONN_HOST_ERROR || no == CR_SERVER_GONE_ERROR ||
         no == CR_SERVER_LOST || no == CR_SERVER_LOST_EXTENDED;
}

/* The attempt at the current address failed. An address that could not be
 * reached or did not answer in time is given up for the next one; a server
 * that answered and refused (the login, the database, TLS) ends the
 * connect, as in libpq. */
static int attempt_failed(my_conn *c) {
  unsigned no;
  if (c->timed_out) {
    char msg[64];
    snprintf(msg, sizeof msg, "timeout expired (connect_timeout=%u)", c->opts.connect_timeout);
    no = CR_CONN_HOST_ERROR;
    note_failure(c, no, "HY000", msg, 1);
  } else {
    no = mysql_errno(c->m);
    note_failure(c, no, mysql_sqlstate(c->m), mysql_error(c->m), 0);
  }
  if (!c->timed_out && !unreachable(no))
    return connect_done(c, LOOM_EDB_CONNECTION);
  drop_attempt(c);
  return try_next(c);
}

/* After the settings query: a server that cannot answer it is not usable;
 * one that refuses it (it never should) leaves the limit unknown. */
static int settings_read(my_conn *c) {
  if (c->settings) {
    MYSQL_ROW row = mysql_fetch_row(c->settings); /* stored: no I/O */
    if (row && row[0])
      c->max_packet = strtoull(row[0], NULL, 10);
    mysql_free_result(c->settings);
    c->settings = NULL;
  }
  if (c->timed_out)
    return attempt_failed(c);
  if (is_conn_error(mysql_errno(c->m))) {
    note_failure(c, mysql_errno(c->m), mysql_sqlstate(c->m), mysql_error(c->m), 0);
    return connect_done(c, LOOM_EDB_CONNECTION);
  }
  return connect_done(c, 0);
}

static int step(my_conn *c, my_op done) {
  switch (done) {
  case OP_CONNECT:
    if (c->mret == NULL || c->timed_out)
      return attempt_failed(c);
    if (c->killer_only)
      return connect_done(c, 0);
    return op_start(c, OP_SETTINGS);
  case OP_SETTINGS:
    if (c->iret != 0)
      return settings_read(c);
    return op_start(c, OP_SETTINGS_STORE);
  case OP_SETTINGS_STORE: return settings_read(c);
  case OP_SET_OPTION:
    if (c->iret != 0) {
      c->multi = MULTI_UNKNOWN;
      conn_error(c);
      return end_stmt(c);
    }
    c->multi = c->multi_want;
    if (c->draining) {
      cancelled_before_sent(c);
      return end_stmt(c);
    }
    return op_start(c, OP_REAL_QUERY);
  case OP_REAL_QUERY:
    if (c->iret != 0) {
      conn_error(c);
      script_failed_at(c, 1);
      return end_stmt(c);
    }
    return text_result(c);
  case OP_FETCH_ROW: return row_fetched(c);
  case OP_FREE_RESULT:
    c->res = NULL;
    return after_text(c);
  case OP_NEXT_RESULT:
    if (c->iret > 0) {
      conn_error(c);
      script_failed_at(c, c->script_index + 1);
      return end_stmt(c);
    }
    if (c->iret < 0)
      return end_stmt(c);
    return text_result(c);
  case OP_PREPARE: return prepared(c);
  case OP_EXECUTE: return executed(c);
  case OP_STMT_FETCH: return stmt_fetched(c);
  case OP_STMT_NEXT_RESULT: return stmt_next_result(c);
  case OP_STMT_CLOSE:
    c->ps = NULL;
    return end_stmt(c);
  case OP_RESET: return reset_done(c);
  case OP_PING:
    if (c->iret != 0)
      conn_error(c);
    finish(c);
    return -1;
  default:
    return -1;
  }
}

static int my_start(loom_db_conn_t *base, loom_db_req_t *req) {
  my_conn *c = (my_conn *)base;
  int refused = loom_db_req_refuse(req, c->base.closing || base->broken || c->m == NULL, "2006",
                                   base->req || c->kill_state != K_NONE || c->op != OP_NONE);
  if (refused)
    return refused;
  if (req->op == LOOM_DB_COPY_IN || (req->op != LOOM_DB_QUERY && req->op != LOOM_DB_STREAM &&
                                     req->op != LOOM_DB_BATCH && req->op != LOOM_DB_RESET &&
                                     req->op != LOOM_DB_PING)) {
    loom_db_error_set(&req->err, NULL, "not supported by the MySQL driver");
    return req->status = LOOM_EDB_ARGUMENT;
  }
  c->draining = c->discard = c->paused = 0;
  c->script = 0;
  c->result = NULL;
  loom_db_req_begin(base, req, &c->one);
  c->cur = &c->one;
  c->stmt_index = 0;
  int st;
  switch (req->op) {
  case LOOM_DB_QUERY:
  case LOOM_DB_STREAM:
    st = begin_stmt(c);
    break;
  case LOOM_DB_BATCH:
    if (req->nstmts == 0) {
      finish(c);
      return 0;
    }
    c->cur = &req->stmts[0];
    st = begin_stmt(c);
    break;
  case LOOM_DB_RESET:
    if (!base->dirty && (c->m->server_status & SERVER_STATUS_IN_TRANS)) {
      /* Only a transaction to end: keep the prepared statements. */
      c->one.sql = "ROLLBACK";
      c->one.sql_len = 8;
      st = op_start(c, OP_REAL_QUERY);
    } else {
      st = op_start(c, OP_RESET);
    }
    break;
  default:
    st = op_start(c, OP_PING);
    break;
  }
  drive(c, st);
  return 0;
}

static int my_next(loom_db_conn_t *base, loom_db_req_t *req) {
  my_conn *c = (my_conn *)base;
  if (base->req != req || !c->paused)
    return LOOM_EDB_ARGUMENT;
  req->result = NULL;
  req->more = 0;
  c->paused = 0;
  drive(c, op_start(c, c->fetch_op));
  return 0;
}

/* ---- cancel: KILL QUERY from a second connection ---------------------------- */

static my_conn *conn_new(loom_loop_t *loop, const char *conninfo, loom_db_req_t *req,
                         char *err, size_t errlen);

static void kill_done(loom_db_req_t *req);

static void abort_killer(my_conn *c) {
  my_conn *k = c->killer;
  c->kill_state = K_NONE;
  c->killer = NULL;
  if (k)
    my_close(&k->base); /* its connect completes (ECLOSED) into kill_connected */
}

static void kill_connected(loom_db_req_t *req) {
  my_conn *c = req->data;
  if (c->kill_state != K_CONNECTING || req->status != 0) {
    if (c->kill_state == K_CONNECTING) {
      /* Could not reach the server to stop the query: the connection
       * cannot be trusted to come back soon; give up on it. */
      c->kill_state = K_NONE;
      c->killer = NULL;
      if (c->base.req) {
        c->base.broken = 1;
        if (c->op != OP_NONE) {
          force_complete(c);
          drive(c, 0);
        } else {
          stmt_error(c, CR_SERVER_LOST, "08S01", "cancelled, and KILL QUERY could not be sent");
          finish(c);
        }
      }
    }
    loom_db_error_clear(&req->err);
    c->refs--;
    maybe_free(c);
    return;
  }
  c->kill_state = K_KILLING;
  c->killer = (my_conn *)req->conn;
  int n = snprintf(c->kill_sql, sizeof c->kill_sql, "KILL QUERY %lld",
                   (long long)c->base.backend_id);
  memset(req, 0, sizeof *req);
  req->op = LOOM_DB_QUERY;
  req->sql = c->kill_sql;
  req->sql_len = (size_t)n;
  req->cb = kill_done;
  req->data = c;
  if (my_start(&c->killer->base, req) != 0)
    kill_done(req);
}

static void kill_done(loom_db_req_t *req) {
  my_conn *c = req->data;
  loom_db_result_free(req->result);
  req->result = NULL;
  loom_db_error_clear(&req->err);
  my_conn *k = c->killer;
  c->killer = NULL;
  c->kill_state = K_NONE;
  if (k)
    my_close(&k->base);
  if (c->done_after_kill) {
    c->done_after_kill = 0;
    finish(c);
  }
  c->refs--;
  maybe_free(c);
}

/* A cancelled request that did not come back in time: whatever it waits
 * for (a KILL not answered, a server that went quiet), the connection's
 * state is unknown. The request completes now, and the connection is
 * marked broken for the pool to close, so a KILL still on its way can only
 * hit a session nobody uses any more. */
static void drain_expired(loom_timer_t *t) {
  my_conn *c = t->data;
  if (c->base.req == NULL || c->base.closing)
    return;
  c->refs++;
  c->base.broken = 1;
  if (c->kill_state != K_NONE)
    abort_killer(c); /* finishes a request that only waited for the KILL */
  if (c->base.req) {
    if (c->op != OP_NONE) {
      force_complete(c);
      drive(c, 0);
    } else {
      stmt_error(c, CR_SERVER_LOST, "08S01", "cancelled, and the connection did not come back in time");
      finish(c);
    }
  }
  c->refs--;
  maybe_free(c);
}

static int my_cancel(loom_db_conn_t *base) {
  my_conn *c = (my_conn *)base;
  loom_db_req_t *req = base->req;
  if (req == NULL || c->base.closing || c->draining || c->m == NULL)
    return 0;
  c->draining = 1;
  c->discard = 1;
  if (c->paused) {
    /* A streamed row was handed over and the caller will not ask for the
     * next one: read the rest here (dropped as it comes), or the request
     * would wait for a next() that never comes. The row handed over goes
     * with the rest. */
    c->paused = 0;
    loom_db_result_free(req->result);
    req->result = NULL;
    req->more = 0;
    drive(c, op_start(c, c->fetch_op));
    /* drive() may finish the request, which clears base->req. */
    // cppcheck-suppress knownConditionTrueFalse
    if (base->req != req)
      return 0; /* the rest was already here: nothing left to stop */
  }
  loom_timer_start(base->loop, &c->drain_timer, (uint64_t)MY_DRAIN_MS * 1000000ull);
  if (base->backend_id == 0)
    return 0;
  char err[128];
  memset(&c->kill_req, 0, sizeof c->kill_req);
  c->kill_req.op = LOOM_DB_CONNECT;
  c->kill_req.cb = kill_connected;
  c->kill_req.data = c;
  c->refs++;
  c->kill_state = K_CONNECTING;
  my_conn *k = conn_new(base->loop, c->conninfo, &c->kill_req, err, sizeof err);
  if (k == NULL) {
    c->kill_state = K_NONE;
    c->refs--;
    base->broken = 1;
    return LOOM_ENOMEM;
  }
  c->killer = k;
  k->killer_only = 1;
  memcpy(k->ip, c->ip, sizeof k->ip);
  start_connect(k);
  return 0;
}

/* ---- close, transaction state ------------------------------------------------- */

static void my_close(loom_db_conn_t *base) {
  my_conn *c = (my_conn *)base;
  if (!loom_db_close_once(base))
    return;
  c->refs++;
  if (c->kill_state == K_CONNECTING)
    abort_killer(c);
  loom_resolve_cancel(&c->resolve);
  loom_timer_stop(base->loop, &c->connect_timer);
  if (c->connect_req) {
    force_complete(c);
    c->op = OP_NONE;
    loom_db_req_t *req = c->connect_req;
    c->connect_req = NULL;
    c->connecting = 0;
    req->active = 0;
    req->conn = NULL;
    if (req->err.message == NULL)
      loom_db_error_set(&req->err, "2006", "the connection was closed while connecting");
    req->status = LOOM_ECLOSED;
    req->cb(req);
  }
  force_complete(c);
  c->op = OP_NONE;
  if (base->req) {
    loom_db_req_t *req = base->req;
    c->done_after_kill = 0;
    int ks = c->kill_state;
    c->kill_state = K_NONE; /* complete now: the connection is going away */
    loom_db_error_set(&req->err, "2006", "the connection was closed");
    req->status = LOOM_ECLOSED;
    finish(c);
    c->kill_state = ks;
  }
  if (c->settings) {
    mysql_free_result(c->settings); /* stored: no I/O */
    c->settings = NULL;
  }
  if (c->res && c->m) {
    int st = mysql_free_result_start(c->res);
    if (st) {
      int sock = (int)mysql_get_socket(c->m);
      if (sock >= 0)
        shutdown(sock, SHUT_RDWR);
      for (int i = 0; st && i < 1000; i++)
        st = mysql_free_result_cont(c->res, MYSQL_WAIT_READ | MYSQL_WAIT_WRITE | MYSQL_WAIT_TIMEOUT);
    }
    c->res = NULL;
  }
  loom_timer_stop(base->loop, &c->timer);
  loom_timer_stop(base->loop, &c->drain_timer);
  loom_watcher_close(&c->watch);
  if (c->m) {
    MYSQL_STMT *temp = c->ps && c->cached == NULL ? c->ps : NULL;
    int st = mysql_close_start(c->m);
    if (st) {
      int sock = (int)mysql_get_socket(c->m);
      if (sock >= 0)
        shutdown(sock, SHUT_RDWR);
      for (int i = 0; st && i < 1000; i++)
        st = mysql_close_cont(c->m, MYSQL_WAIT_READ | MYSQL_WAIT_WRITE | MYSQL_WAIT_TIMEOUT);
    }
    c->m = NULL;
    /* Closing invalidated the statements: they free without I/O. */
    if (temp)
      mysql_stmt_close(temp);
    c->ps = NULL;
    loom_stmt_cache_clear(&c->cache);
  }
  c->refs--;
  maybe_free(c);
}

static loom_db_txn_t my_txn(loom_db_conn_t *base) {
  my_conn *c = (my_conn *)base;
  if (c->m == NULL || base->broken)
    return LOOM_TXN_UNKNOWN;
  return (c->m->server_status & SERVER_STATUS_IN_TRANS) ? LOOM_TXN_ACTIVE : LOOM_TXN_IDLE;
}

static int my_copy_data(loom_db_conn_t *base, loom_db_req_t *req, const char *buf, size_t len) {
  (void)base; (void)req; (void)buf; (void)len;
  return LOOM_EDB_ARGUMENT;
}

/* ---- connect ------------------------------------------------------------------- */

/* Connecting tries every address the host has, in the order the resolver
 * gives them, as libpq does: "localhost" may be ::1 first, and a server
 * listening on 127.0.0.1 only must still be reached. Each address gets a
 * fresh handle. connect_timeout bounds each attempt, from the TCP connect
 * through the login to the settings query (10 s unless given, 0 for none,
 * as in libpq); the library also applies it to each of its waits. */

/* Starts connecting to the next address: what the started call returned,
 * or -1 when none is left (the request has then failed). */
static int try_next(my_conn *c) {
  if (c->from_list ? !loom_resolve_next(&c->resolve, c->ip, sizeof c->ip, NULL) : c->attempts > 0) {
    if (c->nerrors == 0) { /* a name with no IPv4 or IPv6 address */
      char msg[512];
      snprintf(msg, sizeof msg, "could not resolve host \"%.200s\": no address", c->opts.host);
      note_line(c, CR_UNKNOWN_HOST, "HY000", msg, msg);
    }
    return connect_done(c, LOOM_EDB_CONNECTION);
  }
  c->attempts++;
  c->timed_out = 0;
  c->base.broken = 0;
  c->mret = NULL;
  my_opts *o = &c->opts;
  c->m = mysql_init(NULL);
  if (c->m == NULL) {
    loom_db_error_set(&c->connect_req->err, "2008", "out of memory");
    return connect_done(c, LOOM_ENOMEM);
  }
  /* Before anything else: without it the first _start call crashes. */
  mysql_options(c->m, MYSQL_OPT_NONBLOCK, 0);
  mysql_options(c->m, MYSQL_SET_CHARSET_NAME, o->charset ? o->charset : "utf8mb4");
  if (o->connect_timeout)
    mysql_options(c->m, MYSQL_OPT_CONNECT_TIMEOUT, &o->connect_timeout);
  unsigned proto = o->socket ? MYSQL_PROTOCOL_SOCKET : MYSQL_PROTOCOL_TCP;
  mysql_options(c->m, MYSQL_OPT_PROTOCOL, &proto);
  my_bool no = 0, yes = 1;
  mysql_options(c->m, MYSQL_OPT_LOCAL_INFILE, &no);
  mysql_options(c->m, MYSQL_REPORT_DATA_TRUNCATION, &yes);
  if (o->ssl_mode >= MY_SSL_REQUIRED || o->ssl_ca || o->ssl_cert) {
    if (o->ssl_ca)
      mysql_options(c->m, MYSQL_OPT_SSL_CA, o->ssl_ca);
    if (o->ssl_cert)
      mysql_options(c->m, MYSQL_OPT_SSL_CERT, o->ssl_cert);
    if (o->ssl_key)
      mysql_options(c->m, MYSQL_OPT_SSL_KEY, o->ssl_key);
    if (o->ssl_cipher)
      mysql_options(c->m, MYSQL_OPT_SSL_CIPHER, o->ssl_cipher);
    if (o->tls_version)
      mysql_options(c->m, MARIADB_OPT_TLS_VERSION, o->tls_version);
    if (o->ssl_mode != MY_SSL_DISABLED && o->ssl_mode != MY_SSL_PREFERRED)
      mysql_options(c->m, MYSQL_OPT_SSL_ENFORCE, &yes);
    my_bool verify = o->ssl_mode >= MY_SSL_VERIFY_CA;
    mysql_options(c->m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify);
  }
  if (o->connect_timeout)
    loom_timer_start(c->base.loop, &c->connect_timer, (uint64_t)o->connect_timeout * 1000000000ull);
  return op_start(c, OP_CONNECT);
}

static void start_connect(my_conn *c) {
  c->connecting = 1;
  drive(c, try_next(c));
}

/* The address being tried did not answer in time: its call ends as failed
 * and the next address is tried. */
static void on_connect_timeout(loom_timer_t *t) {
  my_conn *c = t->data;
  if (!c->connecting || c->base.closing || c->op == OP_NONE)
    return;
  c->timed_out = 1;
  force_complete(c);
  drive(c, 0);
}

static void on_resolved(loom_resolve_t *r, int status) {
  my_conn *c = r->data;
  c->refs--;
  if (c->base.closing) {
    maybe_free(c);
    return;
  }
  if (status != 0) {
    char msg[512];
    snprintf(msg, sizeof msg, "could not resolve host \"%.200s\": %s", c->opts.host,
             uv_strerror(status));
    note_line(c, CR_UNKNOWN_HOST, "HY000", msg, msg);
  }
  start_connect(c); /* with no address, fails with the line above */
}

static my_conn *conn_new(loom_loop_t *loop, const char *conninfo, loom_db_req_t *req,
                         char *err, size_t errlen) {
  my_conn *c = calloc(1, sizeof *c);
  if (c == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  if (loom__my_parse_url(conninfo, &c->opts, err, errlen) != 0 ||
      (c->conninfo = loom_db_strdup(conninfo)) == NULL) {
    loom__my_opts_free(&c->opts);
    free(c);
    return NULL;
  }
  c->base.driver = &loom_mysql_driver;
  c->base.loop = loop;
  c->base.created_ns = c->base.last_used_ns = loom_now_ns();
  loom_watcher_init(&c->watch, on_poll, on_watch_closed, c);
  loom_stmt_cache_init(&c->cache, sizeof(my_stmt), MY_CACHE_MAX, 0, stmt_free);
  loom_timer_init(&c->timer, on_timer, c);
  loom_timer_init(&c->drain_timer, drain_expired, c);
  loom_timer_init(&c->connect_timer, on_connect_timeout, c);
  c->connect_req = req;
  req->active = 1;
  req->conn = NULL;
  req->status = 0;
  return c;
}

/* The library sets up global state once (character sets, client plugins)
 * and frees it only in mysql_library_end, which no one connection may call
 * while others live. Keep it loaded until the process exits, so that state
 * is reachable rather than orphaned when the Lua module is unloaded. */
static void pin_library(void) {
  Dl_info info;
  if (dladdr((void *)mysql_init, &info) && info.dli_fname)
    /* The handle is not kept: RTLD_NODELETE alone does the pinning. */
    // cppcheck-suppress leakReturnValNotUsed
    (void)dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
}

static int my_connect(loom_loop_t *loop, const char *conninfo, loom_db_req_t *req) {
  pin_library();
  char err[256] = "invalid MySQL URL";
  my_conn *c = conn_new(loop, conninfo, req, err, sizeof err);
  if (c == NULL) {
    loom_db_error_set(&req->err, "2005", err);
    return req->status = LOOM_EDB_ARGUMENT;
  }
  const char *host = c->opts.host;
  if (c->opts.socket) {
    c->ip[0] = 0;
  } else if (loom_resolve_is_numeric(host)) {
    snprintf(c->ip, sizeof c->ip, "%s", host);
  } else {
    c->from_list = 1;
    c->resolve.data = c;
    int r = loom_resolve_start(loop, &c->resolve, host, 0, on_resolved);
    if (r != 0) {
      loom_db_error_set(&req->err, "2005", uv_strerror(r));
      c->base.closing = 1;
      maybe_free(c);
      req->active = 0;
      return req->status = LOOM_EDB_CONNECTION;
    }
    c->refs++;
    return 0;
  }
  start_connect(c);
  return 0;
}

const loom_db_driver_t loom_mysql_driver = {
  .name = "mysql",
  .connect = my_connect,
  .start = my_start,
  .next = my_next,
  .copy_data = my_copy_data,
  .cancel = my_cancel,
  .close = my_close,
  .txn = my_txn,
  .param_count = loom__my_param_count,
  .placeholder = "?",
  .numeric_codes = 1,
};
