/* The PostgreSQL driver: libpq in non-blocking mode on loom's loop.
 *
 * The socket is polled by libuv; name lookup runs on libuv's thread pool
 * before libpq starts (libpq would block resolving it), and every address of
 * every host is tried in turn, as libpq does. Statements go through the
 * extended protocol; repeated SQL is prepared once per connection and cached
 * with the parameter types the server inferred for it, and values are
 * encoded for those types. Cancel requests (blocking in libpq 15) run on the
 * thread pool, and a request does not complete until its cancel has been
 * delivered, so a late cancel can never hit the next query on that
 * connection. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "pg.h"
#include "resolve.h"
#include "stmt_cache.h"
#include "watcher.h"

#define PG_CACHE_MAX 256
#define PG_MAX_PARAMS 65535
/* libpq (15 at least) takes a ParameterDescription over 30000 bytes for a
 * lost connection: statements with more parameters are not described, and
 * their values go untyped. */
#define PG_DESCRIBE_MAX_PARAMS 7000

/* A prepared statement of the connection. Its parameter types are the
 * server's: it is prepared without any (as pgx and asyncpg do), so
 * `repeat('x', $1)` makes $1 an int4, and described once. */
typedef enum {
  S_SENT,  /* Parse and Describe are on their way, in this request */
  S_READY  /* prepared, and its parameter types known */
} stmt_state;

typedef struct pg_stmt {
  loom_stmt_entry_t e; /* keyed by the SQL alone: the server, not the Lua
                          values, types the parameters */
  char name[24];
  stmt_state state;
  int dirties; /* running it leaves session state behind (dirties_session) */
  int undescribed; /* too many parameters to describe: ready once prepared */
  int nparams; /* as described */
  Oid *types;
} pg_stmt;

typedef enum { U_PREP, U_DESC, U_EXEC, U_SYNC } unit_kind;

/* The parameter types of a statement run unprepared, described for this
 * request only (see needs_description). */
typedef struct pg_desc {
  int described;
  int nparams;
  Oid *types;
} pg_desc;

typedef struct pg_unit {
  unit_kind kind;
  int stmt;        /* index into the request's statements */
  pg_stmt *cached; /* U_PREP, U_DESC: the cache entry */
} pg_unit;

/* One address to try: a host of the connection string, and one of the
 * addresses it resolved to ("" for a socket directory). */
typedef struct pg_target {
  char *host, *addr, *port; /* port NULL: libpq's default */
} pg_target;

typedef struct pg_conn {
  loom_db_conn_t base;
  PGconn *pg;
  loom_watcher_t watch; /* the socket */
  int refs;          /* work that must finish before free */
  int connecting;
  loom_db_req_t *connect_req;
  char **keys, **vals;
  int nopts;
  /* connecting: the hosts of the connection string (libpq's lists), then
   * every address they have, tried in order */
  loom_resolve_t resolve;
  char **hosts, **hostaddrs, **ports;
  int nhosts, naddrs, nports, host_pos;
  pg_target *targets;
  int ntargets, targets_cap;
  int target;              /* the one libpq is on */
  loom_timer_t connect_timer;
  uint64_t connect_timeout_ns; /* per address; 0: none */
  char *errors;            /* why the addresses given up on failed */
  int poll_errors;         /* socket errors in a row while connecting */
  /* prepared statements */
  loom_stmt_cache_t cache;
  unsigned next_stmt;
  /* the request in flight */
  char *pbuf;        /* parameter arrays for libpq, reused */
  size_t pbuf_cap;
  pg_unit *units;
  int nunits, unit_pos, units_cap;
  int pipeline;
  int flushing;
  int paused;        /* a streamed row was handed over; waiting for next() */
  int draining;      /* a cancelled stream: rows are dropped */
  int describing;    /* the statements are being described; then they run */
  pg_desc *descs;    /* per statement of the request, when some were */
  int ndescs;
  int cancel_asked;
  int copying;
  const char *copy_buf;
  size_t copy_len;
  int copy_pending;  /* a chunk waits for room in libpq's buffer */
  int copy_ending;
  int copy_abort;    /* end the COPY with an error: the caller gave up */
  loom_db_stmt_t one; /* the statement of a single-statement request */
  /* cancel */
  uv_work_t cancel_work;
  PGcancel *cancel;
  int cancel_busy;
  int done_after_cancel;
  loom_db_notify_cb on_notify;
} pg_conn;

static void on_poll(loom_watcher_t *w, int status, int events);
static void process(pg_conn *c);
static void fail_request(pg_conn *c, int status, const char *code, const char *msg);
static void finish(pg_conn *c);
void loom__pg_connect_step(pg_conn *c, int status);

/* ---- small helpers ------------------------------------------------------ */

static void trim_message(loom_db_error_t *e) {
  if (e->message) {
    size_t n = strlen(e->message);
    while (n > 0 && (e->message[n - 1] == '\n' || e->message[n - 1] == ' '))
      e->message[--n] = 0;
  }
}

static void set_conn_error(loom_db_error_t *e, PGconn *pg, const char *fallback) {
  const char *msg = pg ? PQerrorMessage(pg) : NULL;
  loom_db_error_set(e, "08006", msg && *msg ? msg : fallback);
  trim_message(e);
}

static void want(pg_conn *c, int events) {
  /* Between requests the socket stays registered for reading (a server
   * closing it is noticed, and no epoll_ctl is spent per query) but does
   * not keep the loop alive. A paused request really stops reading: that
   * is the backpressure of a stream. */
  int idle = events == 0 && c->base.req == NULL && !c->connecting &&
             !c->base.broken && !c->base.closing;
  loom_watcher_want(&c->watch, idle ? UV_READABLE : events, !idle || c->on_notify);
}

static void drop_descriptions(pg_conn *c);

static void free_strings(char **list, int n) {
  for (int i = 0; list && i < n; i++)
    free(list[i]);
  free(list);
}

/* What only connecting needs. */
static void free_targets(pg_conn *c) {
  for (int i = 0; i < c->ntargets; i++) {
    free(c->targets[i].host);
    free(c->targets[i].addr);
    free(c->targets[i].port);
  }
  free(c->targets);
  c->targets = NULL;
  c->ntargets = c->targets_cap = 0;
  free_strings(c->hosts, c->nhosts);
  free_strings(c->hostaddrs, c->naddrs);
  free_strings(c->ports, c->nports);
  c->hosts = c->hostaddrs = c->ports = NULL;
  c->nhosts = c->naddrs = c->nports = 0;
  free(c->errors);
  c->errors = NULL;
  loom_resolve_free(&c->resolve);
}

static void maybe_free(pg_conn *c) {
  if (!c->base.closing || c->refs > 0 || loom_watcher_busy(&c->watch))
    return;
  loom_stmt_cache_clear(&c->cache);
  loom_timer_stop(c->base.loop, &c->connect_timer);
  free_targets(c);
  free_strings(c->keys, c->nopts);
  free_strings(c->vals, c->nopts);
  free(c->units);
  free(c->pbuf);
  drop_descriptions(c);
  loom_db_error_clear(&c->one.err);
  loom_db_result_free(c->one.result);
  free(c);
}

static void drop_descriptions(pg_conn *c) {
  for (int i = 0; i < c->ndescs; i++)
    free(c->descs[i].types);
  free(c->descs);
  c->descs = NULL;
  c->ndescs = 0;
}

static void on_watch_closed(loom_watcher_t *w) {
  maybe_free(w->data);
}

/* libpq may switch sockets while connecting (another address, an SSL
 * retry), and the new socket can get the number of the one it closed:
 * while connecting, the socket is registered afresh at every step. */
static int track_socket(pg_conn *c) {
  return loom_watcher_track(c->base.loop, &c->watch, PQsocket(c->pg), c->connecting);
}

/* ---- statement cache --------------------------------------------------- */

static void stmt_free(loom_stmt_entry_t *e) {
  free(((pg_stmt *)e)->types);
}

/* The cached entry for st, or NULL. */
static pg_stmt *cache_lookup(pg_conn *c, const loom_db_stmt_t *st) {
  return (pg_stmt *)loom_stmt_cache_find(&c->cache, st->sql, st->sql_len);
}

/* With the sending code below; an entry works it out once. */
static int dirties_session(const char *sql, size_t len);

static pg_stmt *cache_add(pg_conn *c, const loom_db_stmt_t *st) {
  pg_stmt *s = (pg_stmt *)loom_stmt_cache_add(&c->cache, st->sql, st->sql_len);
  if (s == NULL)
    return NULL; /* runs unprepared */
  s->state = S_SENT;
  s->dirties = dirties_session(st->sql, st->sql_len);
  snprintf(s->name, sizeof s->name, "loom_%u", ++c->next_stmt);
  return s;
}

/* ---- parameters ---------------------------------------------------------- */

/* Parameters as libpq wants them. Where the statement was described, each
 * value is encoded for the type the server gave its parameter: integers
 * and floats in binary for int2/int4/int8/float8 (range-checked), strings
 * as raw bytes for bytea, and the value's text for the rest. Where it was
 * not, every value goes as its text with no type (0) for the server to
 * infer, except a string with NUL bytes, which goes as bytea, the one type
 * that can hold it. The arrays live in a buffer of the connection, reused
 * by every request: libpq copies the values out as it queues each
 * message. */
typedef struct pg_params {
  Oid *types;
  const char **values;
  int *lengths;
  int *formats;
  char *text;
} pg_params;

#define PG_PARAM_TEXT 32 /* bytes per parameter for its text or binary form */

/* Decimal digits of v into buf (at least 21 bytes); returns buf. */
static char *format_int(char *buf, int64_t v) {
  char tmp[24];
  int n = 0;
  uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
  do {
    tmp[n++] = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  char *p = buf;
  if (v < 0)
    *p++ = '-';
  while (n)
    *p++ = tmp[--n];
  *p = 0;
  return buf;
}

/* The shortest text that reads back as f: 0.1 goes as "0.1", so a numeric
 * or text parameter gets what the Lua source said. */
static char *format_float(char *buf, double f) {
  if (f != f)
    strcpy(buf, "NaN");
  else if (f > 1.7976931348623157e308)
    strcpy(buf, "Infinity");
  else if (f < -1.7976931348623157e308)
    strcpy(buf, "-Infinity");
  else
    for (int digits = 15; digits <= 17; digits++) {
      snprintf(buf, PG_PARAM_TEXT, "%.*g", digits, f);
      if (strtod(buf, NULL) == f)
        break;
    }
  return buf;
}

static void put_be(char *buf, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; i--) {
    buf[i] = (char)(v & 0xff);
    v >>= 8;
  }
}

static const char *type_name(Oid t) {
  switch (t) {
  case 16: return "bool";
  case 17: return "bytea";
  case 20: return "int8 (bigint)";
  case 21: return "int2 (smallint)";
  case 23: return "int4 (integer)";
  case 25: return "text";
  case 114: return "json";
  case 700: return "float4 (real)";
  case 701: return "float8 (double precision)";
  case 1043: return "varchar";
  case 1700: return "numeric";
  case 3802: return "jsonb";
  default: return NULL;
  }
}

static int param_error(char *err, size_t errlen, int index, Oid type, const char *what) {
  const char *name = type_name(type);
  char oid[32];
  if (name == NULL) {
    snprintf(oid, sizeof oid, "of type OID %u", (unsigned)type);
    name = oid;
  }
  snprintf(err, errlen, "parameter $%d is %s: %s", index + 1, name, what);
  return LOOM_EDB_ARGUMENT;
}

/* Whether v fits a parameter of type t: an integer parameter takes
 * whole numbers in its range, only bytea takes NUL bytes. */
static int param_check(const loom_value_t *v, Oid t, int index, char *err, size_t errlen) {
  char what[80];
  switch (v->type) {
  case LOOM_VINT: {
    int64_t n = v->u.i;
    if ((t == 21 && (n < -32768 || n > 32767)) || (t == 23 && (n < INT32_MIN || n > INT32_MAX))) {
      snprintf(what, sizeof what, "%lld is out of its range", (long long)n);
      return param_error(err, errlen, index, t, what);
    }
    return 0;
  }
  case LOOM_VFLOAT: {
    double f = v->u.f;
    if (t != 20 && t != 21 && t != 23)
      return 0;
    if (f != floor(f)) { /* NaN and infinities too */
      snprintf(what, sizeof what, "%.17g is not a whole number", f);
      return param_error(err, errlen, index, t, what);
    }
    double lo = t == 21 ? -32768.0 : t == 23 ? -2147483648.0 : -9223372036854775808.0;
    double hi = t == 21 ? 32767.0 : t == 23 ? 2147483647.0 : 9223372036854775807.0;
    if (!(f >= lo && (t == 20 ? f < 9223372036854775808.0 : f <= hi))) {
      snprintf(what, sizeof what, "%.17g is out of its range", f);
      return param_error(err, errlen, index, t, what);
    }
    return 0;
  }
  case LOOM_VBLOB:
    if (t != 0 && t != 17)
      return param_error(err, errlen, index, t,
                         "a string with NUL bytes can only be sent to bytea");
    return 0;
  default:
    return 0;
  }
}

/* One value for a parameter of type t (0: unknown, the server infers it). */
static int encode(const loom_value_t *v, Oid t, int index, char *buf, pg_params *pp,
                  char *err, size_t errlen) {
  int i = index;
  pp->types[i] = t;
  pp->formats[i] = 0;
  pp->lengths[i] = 0;
  if (t && param_check(v, t, index, err, errlen))
    return LOOM_EDB_ARGUMENT;
  switch (v->type) {
  case LOOM_VNULL:
    pp->values[i] = NULL;
    return 0;
  case LOOM_VFLOAT: {
    double f = v->u.f;
    if (t == 20 || t == 21 || t == 23) {
      loom_value_t whole = {.type = LOOM_VINT, .u.i = (int64_t)f};
      return encode(&whole, t, index, buf, pp, err, errlen);
    }
    if (t == 701) {
      uint64_t bits;
      memcpy(&bits, &f, sizeof bits);
      put_be(buf, bits, 8);
      pp->values[i] = buf;
      pp->lengths[i] = 8;
      pp->formats[i] = 1;
      return 0;
    }
    pp->values[i] = format_float(buf, f);
    return 0;
  }
  case LOOM_VINT: {
    int64_t n = v->u.i;
    int bytes = t == 20 ? 8 : t == 23 ? 4 : t == 21 ? 2 : 0;
    if (bytes) {
      put_be(buf, (uint64_t)n, bytes);
      pp->values[i] = buf;
      pp->lengths[i] = bytes;
      pp->formats[i] = 1;
      return 0;
    }
    if (t == 701) {
      loom_value_t f = {.type = LOOM_VFLOAT, .u.f = (double)n};
      return encode(&f, t, index, buf, pp, err, errlen);
    }
    pp->values[i] = format_int(buf, n);
    return 0;
  }
  case LOOM_VBOOL:
    if (t == 16) {
      buf[0] = v->u.b ? 1 : 0;
      pp->values[i] = buf;
      pp->lengths[i] = 1;
      pp->formats[i] = 1;
    } else {
      /* What true::text says; bool, json and jsonb read it too. */
      pp->values[i] = v->u.b ? "true" : "false";
    }
    return 0;
  case LOOM_VBLOB:
    pp->types[i] = 17; /* when t is 0: the server would guess text */
    /* fall through */
  case LOOM_VTEXT:
  default:
    pp->values[i] = v->u.s.p;
    pp->lengths[i] = (int)v->u.s.len;
    /* Raw bytes for bytea: its text input would read backslashes as escapes. */
    pp->formats[i] = pp->types[i] == 17 || t == 17;
    return 0;
  }
}

/* Encodes st's parameters for the types given (the first ntypes of
 * them), the rest for the server to infer. Fails (LOOM_EDB_ARGUMENT,
 * message in err) on a value that cannot fit its parameter. */
static int params_build(pg_conn *c, pg_params *pp, const loom_db_stmt_t *st, const Oid *types,
                        int ntypes, char *err, size_t errlen) {
  int n = st->nparams;
  memset(pp, 0, sizeof *pp);
  if (n == 0)
    return 0;
  size_t per = sizeof(Oid) + sizeof(char *) + 2 * sizeof(int) + PG_PARAM_TEXT;
  size_t need = (size_t)n * per;
  if (need > c->pbuf_cap) {
    char *p = realloc(c->pbuf, need);
    if (p == NULL)
      return LOOM_ENOMEM;
    c->pbuf = p;
    c->pbuf_cap = need;
  }
  char *block = c->pbuf;
  pp->values = (const char **)block;
  pp->types = (Oid *)(block + (size_t)n * sizeof(char *));
  pp->lengths = (int *)(block + (size_t)n * (sizeof(char *) + sizeof(Oid)));
  pp->formats = pp->lengths + n;
  pp->text = (char *)(pp->formats + n);
  for (int i = 0; i < n; i++) {
    int r = encode(&st->params[i], i < ntypes ? types[i] : 0, i, pp->text + PG_PARAM_TEXT * i,
                   pp, err, errlen);
    if (r)
      return r;
  }
  return 0;
}

/* The types a statement's values are encoded for: its cache entry's once
 * described, or those described for this request; none (0) else. */
static const Oid *types_for(pg_conn *c, const pg_stmt *s, int index, int *n) {
  if (s && s->state == S_READY) {
    *n = s->nparams;
    return s->types;
  }
  if (!s && index >= 0 && index < c->ndescs && c->descs[index].described) {
    *n = c->descs[index].nparams;
    return c->descs[index].types;
  }
  *n = 0;
  return NULL;
}

/* Whether a value's untyped text means the same to every parameter type
 * as its typed encoding would, so a statement's first use need not wait
 * for its description: NULL, booleans, strings the bytea input reads
 * as they are, and numbers no integer parameter can refuse. */
static int same_untyped(const loom_db_stmt_t *st) {
  for (int i = 0; i < st->nparams; i++) {
    const loom_value_t *v = &st->params[i];
    switch (v->type) {
    case LOOM_VNULL:
    case LOOM_VBOOL:
      break;
    case LOOM_VTEXT:
      if (memchr(v->u.s.p, '\\', v->u.s.len))
        return 0;
      break;
    case LOOM_VINT:
      if (v->u.i < -32768 || v->u.i > 32767)
        return 0;
      break;
    case LOOM_VFLOAT:
      if (!(v->u.f >= -32768 && v->u.f <= 32767 && v->u.f == floor(v->u.f)))
        return 0;
      break;
    default:
      return 0;
    }
  }
  return 1;
}

/* A string whose untyped text a bytea parameter would read otherwise:
 * its input takes backslashes as escapes. */
static int has_backslash_text(const loom_db_stmt_t *st) {
  for (int i = 0; i < st->nparams; i++)
    if (st->params[i].type == LOOM_VTEXT && memchr(st->params[i].u.s.p, '\\', st->params[i].u.s.len))
      return 1;
  return 0;
}

/* ---- sending ------------------------------------------------------------ */

static int add_unit(pg_conn *c, unit_kind kind, int stmt, pg_stmt *cached) {
  if (c->nunits == c->units_cap) {
    int cap = c->units_cap ? c->units_cap * 2 : 8;
    pg_unit *u = realloc(c->units, (size_t)cap * sizeof *u);
    if (u == NULL)
      return LOOM_ENOMEM;
    c->units = u;
    c->units_cap = cap;
  }
  pg_unit *u = &c->units[c->nunits++];
  u->kind = kind;
  u->stmt = stmt;
  u->cached = cached;
  return 0;
}

/* Session state a reset must clear: the statement opens something that
 * outlives it (a session setting, an advisory lock, a LISTEN, a cursor).
 * Every statement of a script is looked at. */
static int starts_dirty(const char *sql, const char *p, const char *end) {
  static const char *const starts[] = {"set", "listen", "prepare", "declare", "load", NULL};
  for (int k = 0; starts[k]; k++)
    if (loom_sql_word_at(p, end, starts[k]))
      return 1;
  if (loom_sql_word_at(p, end, "create")) {
    const char *q = loom_sql_skip_lead(&loom__pg_dialect, sql, p + 6, end);
    return loom_sql_word_at(q, end, "temp") || loom_sql_word_at(q, end, "temporary");
  }
  return 0;
}

static int dirties_session(const char *sql, size_t len) {
  const char *end = sql + len;
  for (const char *p = sql; p < end;) {
    p = loom_sql_skip_lead(&loom__pg_dialect, sql, p, end);
    if (starts_dirty(sql, p, end))
      return 1;
    p = loom_sql_statement_end(&loom__pg_dialect, sql, p, end);
    if (p < end)
      p++;
  }
  for (size_t j = 0; j + 17 <= len; j++) {
    if ((sql[j] == 'a' || sql[j] == 'A') && strncasecmp(sql + j, "advisory_lock", 13) == 0)
      return 1;
    if ((sql[j] == 'a' || sql[j] == 'A') && strncasecmp(sql + j, "advisory_unlock", 15) == 0)
      return 1;
    /* set_config(name, value, false) is a SET in function form. */
    if ((sql[j] == 's' || sql[j] == 'S') && strncasecmp(sql + j, "set_config", 10) == 0)
      return 1;
  }
  return 0;
}

/* Parse and Describe: the server infers the parameter types. s is the new
 * cache entry, or NULL for the unnamed statement (described for this
 * request, into descs[index]). */
static int send_prepare(pg_conn *c, const loom_db_stmt_t *st, int index, pg_stmt *s) {
  const char *name = s ? s->name : "";
  /* libpq wants NUL-terminated SQL; callers give Lua strings, which are. */
  if (!PQsendPrepare(c->pg, name, s ? s->e.sql : st->sql, st->nparams, NULL))
    return LOOM_EDB_CONNECTION;
  int r = add_unit(c, U_PREP, index, s);
  if (r)
    return r;
  if (st->nparams > PG_DESCRIBE_MAX_PARAMS) {
    if (s)
      s->undescribed = 1;
    return 0;
  }
  if (!PQsendDescribePrepared(c->pg, name))
    return LOOM_EDB_CONNECTION;
  return add_unit(c, U_DESC, index, s);
}

/* Queues one statement. Cached: a described statement runs with typed
 * values; a new one is prepared, described and run in the same round trip
 * (pipeline mode), its values untyped (same_untyped, or described first:
 * see needs_description). Not cached: an unnamed statement, its values
 * typed where this request described it, else untyped. */
static int send_stmt(pg_conn *c, loom_db_stmt_t *st, int index, int cache, int single_row) {
  pg_stmt *s = NULL;
  int r;
  if (cache && c->pipeline) {
    s = cache_lookup(c, st);
    if (s == NULL) {
      s = cache_add(c, st);
      if (s && (r = send_prepare(c, st, index, s)) != 0)
        return r;
    }
  }
  pg_params pp;
  char err[200];
  int ntypes;
  const Oid *types = types_for(c, s, index, &ntypes);
  r = params_build(c, &pp, st, types, ntypes, err, sizeof err);
  if (r == LOOM_EDB_ARGUMENT)
    loom_db_error_set(&c->base.req->err, NULL, err);
  if (r)
    return r;
  if (s ? s->dirties : dirties_session(st->sql, st->sql_len))
    c->base.dirty = 1;
  int ok;
  if (s)
    ok = PQsendQueryPrepared(c->pg, s->name, st->nparams, pp.values, pp.lengths,
                             pp.formats, 0);
  else
    ok = PQsendQueryParams(c->pg, st->sql, st->nparams, pp.types, pp.values,
                           pp.lengths, pp.formats, 0);
  if (!ok)
    return LOOM_EDB_CONNECTION;
  if (single_row && !PQsetSingleRowMode(c->pg))
    return LOOM_EDB_PROTOCOL;
  return add_unit(c, U_EXEC, index, NULL);
}

/* A cached statement that is already prepared runs outside pipeline mode:
 * one Bind/Execute/Sync, like pgbench -M prepared. */
static pg_stmt *ready_stmt(pg_conn *c, loom_db_stmt_t *st) {
  pg_stmt *s = cache_lookup(c, st);
  return s && s->state == S_READY ? s : NULL;
}

static void flush(pg_conn *c) {
  int r = PQflush(c->pg);
  if (r < 0) {
    fail_request(c, LOOM_EDB_CONNECTION, NULL, NULL);
    return;
  }
  c->flushing = r == 1;
  want(c, UV_READABLE | (c->flushing ? UV_WRITABLE : 0));
}

static void reset_machine(pg_conn *c) {
  c->nunits = c->unit_pos = 0;
  c->pipeline = c->flushing = c->paused = c->draining = 0;
  c->describing = c->cancel_asked = 0;
  c->copying = c->copy_pending = c->copy_ending = c->copy_abort = 0;
  if (c->ndescs)
    drop_descriptions(c);
  loom_db_error_clear(&c->one.err);
  loom_db_result_free(c->one.result);
  memset(&c->one, 0, sizeof c->one);
}

static loom_db_stmt_t *stmt_at(pg_conn *c, int index) {
  loom_db_req_t *req = c->base.req;
  return req->op == LOOM_DB_BATCH ? &req->stmts[index] : &c->one;
}

static int request_nstmts(pg_conn *c) {
  loom_db_req_t *req = c->base.req;
  return req->op == LOOM_DB_BATCH ? req->nstmts : 1;
}

/* Whether the request's statements go through the statement cache. */
static int request_cached(pg_conn *c) {
  loom_db_req_t *req = c->base.req;
  return req->cache && req->op != LOOM_DB_STREAM;
}

/* Whether st must be described before it runs: cached, a new statement
 * whose values could mean something else untyped (a large integer, a
 * float, a string with a backslash or a NUL byte); it is then prepared and
 * described in a round trip of its own, and runs typed from then on.
 * Unprepared, only a string with a backslash (which bytea's input would
 * take for an escape): any other value the untyped text does not fit is
 * refused by the server, so one round trip stays enough. */
static int needs_description(pg_conn *c, const loom_db_stmt_t *st, const pg_stmt *s, int cache) {
  if (st->nparams > PG_DESCRIBE_MAX_PARAMS)
    return 0;
  if (cache && (s || loom_stmt_cache_has_room(&c->cache)))
    return s == NULL && !same_untyped(st);
  return has_backslash_text(st);
}

/* Checks the values of every statement whose types are known before
 * anything goes out (a batch fails whole, the connection stays clean), and
 * tells whether some statement must be described first. */
static int check_statements(pg_conn *c, int *describe) {
  loom_db_req_t *req = c->base.req;
  int n = request_nstmts(c), cache = request_cached(c);
  *describe = 0;
  for (int i = 0; i < n; i++) {
    loom_db_stmt_t *st = stmt_at(c, i);
    pg_stmt *s = cache ? cache_lookup(c, st) : NULL;
    int ntypes;
    const Oid *types = types_for(c, s, i, &ntypes);
    if (types) {
      char err[200];
      int r = 0;
      for (int k = 0; r == 0 && k < st->nparams && k < ntypes; k++)
        r = param_check(&st->params[k], types[k], k, err, sizeof err);
      if (r == LOOM_EDB_ARGUMENT) {
        if (req->op == LOOM_DB_BATCH) {
          char msg[260];
          snprintf(msg, sizeof msg, "batch item %d: %s", i + 1, err);
          loom_db_error_set(&req->err, NULL, msg);
        } else {
          loom_db_error_set(&req->err, NULL, err);
        }
      }
      if (r)
        return r;
    } else if (needs_description(c, st, s, cache)) {
      *describe = 1;
    }
  }
  return 0;
}

static int pipeline_sync(pg_conn *c) {
  if (!PQpipelineSync(c->pg))
    return LOOM_EDB_CONNECTION;
  return add_unit(c, U_SYNC, -1, NULL);
}

/* Sends the Parse and Describe of every statement that needs them. */
static int send_descriptions(pg_conn *c) {
  int n = request_nstmts(c), cache = request_cached(c);
  c->descs = calloc((size_t)n, sizeof *c->descs);
  if (c->descs == NULL)
    return LOOM_ENOMEM;
  c->ndescs = n;
  int r = 0;
  for (int i = 0; r == 0 && i < n; i++) {
    loom_db_stmt_t *st = stmt_at(c, i);
    pg_stmt *s = cache ? cache_lookup(c, st) : NULL;
    if (!needs_description(c, st, s, cache))
      continue;
    /* A new cache entry, or else (no room) the unnamed statement. */
    pg_stmt *entry = cache ? cache_add(c, st) : NULL;
    r = send_prepare(c, st, i, entry);
  }
  c->describing = 1;
  return r;
}

static int send_statements(pg_conn *c) {
  int n = request_nstmts(c), cache = request_cached(c);
  int single_row = c->base.req->op == LOOM_DB_STREAM;
  int r = 0;
  for (int i = 0; r == 0 && i < n; i++)
    r = send_stmt(c, stmt_at(c, i), i, cache, single_row);
  return r;
}

/* The statements of a query, stream or batch. Those that must be
 * described first (needs_description) are, in a round trip of their own;
 * then (statements_described) everything runs, in pipeline mode. An
 * unprepared query needs no pipeline. */
static int start_statements(pg_conn *c) {
  loom_db_req_t *req = c->base.req;
  int describe;
  int r = check_statements(c, &describe);
  if (r)
    return r;
  if (!describe && req->op == LOOM_DB_QUERY && !req->cache)
    return send_stmt(c, &c->one, 0, 0, 0);
  c->pipeline = PQenterPipelineMode(c->pg);
  if (!c->pipeline)
    return LOOM_EDB_CONNECTION;
  return describe ? send_descriptions(c) : send_statements(c);
}

/* The descriptions are in: run the statements (still in pipeline mode). */
static void statements_described(pg_conn *c) {
  loom_db_req_t *req = c->base.req;
  c->describing = 0;
  c->nunits = c->unit_pos = 0;
  if (c->cancel_asked) {
    loom_db_error_set(&req->err, "57014", "cancelled before the statement ran");
    req->status = LOOM_ECANCELED;
    finish(c);
    return;
  }
  int describe;
  int r = check_statements(c, &describe);
  if (r == LOOM_EDB_ARGUMENT) {
    /* Nothing went out: the connection is idle and fine. */
    req->status = r;
    finish(c);
    return;
  }
  if (r == 0)
    r = send_statements(c);
  if (r == 0)
    r = pipeline_sync(c);
  if (r) {
    fail_request(c, r == LOOM_EDB_ARGUMENT ? LOOM_EDB_CONNECTION : r, NULL, NULL);
    return;
  }
  flush(c);
}

static int pg_start(loom_db_conn_t *base, loom_db_req_t *req) {
  pg_conn *c = (pg_conn *)base;
  int refused = loom_db_req_refuse(req, c->base.closing || base->broken || c->pg == NULL, "08003",
                                   base->req || c->cancel_busy);
  if (refused)
    return refused;
  /* The protocol counts parameters in 16 bits. libpq refuses more as
   * well, but a send it refuses looks like a broken connection here (and
   * in a batch, part of the pipeline may have gone out already). */
  int most = 0;
  if (req->op == LOOM_DB_BATCH) {
    for (int i = 0; i < req->nstmts; i++)
      if (req->stmts[i].nparams > most)
        most = req->stmts[i].nparams;
  } else if (req->op != LOOM_DB_RESET && req->op != LOOM_DB_PING) {
    most = req->nparams;
  }
  if (most > PG_MAX_PARAMS) {
    char msg[128];
    snprintf(msg, sizeof msg, "a PostgreSQL statement takes at most %d parameters, not %d",
             PG_MAX_PARAMS, most);
    loom_db_error_set(&req->err, NULL, msg);
    return req->status = LOOM_EDB_ARGUMENT;
  }
  reset_machine(c);
  loom_db_req_begin(base, req, &c->one);
  int r = 0;
  switch (req->op) {
  case LOOM_DB_QUERY: {
    pg_stmt *s = req->cache ? ready_stmt(c, &c->one) : NULL;
    if (s) {
      pg_params pp;
      char err[200];
      r = params_build(c, &pp, &c->one, s->types, s->nparams, err, sizeof err);
      if (r == LOOM_EDB_ARGUMENT)
        loom_db_error_set(&req->err, NULL, err);
      if (r == 0 && s->dirties)
        base->dirty = 1;
      if (r == 0 && !PQsendQueryPrepared(c->pg, s->name, req->nparams, pp.values,
                                         pp.lengths, pp.formats, 0))
        r = LOOM_EDB_CONNECTION;
      if (r == 0)
        r = add_unit(c, U_EXEC, 0, NULL);
    } else if (req->script && req->nparams == 0 && loom_sql_is_script(&loom__pg_dialect, req->sql, req->sql_len)) {
      /* Several statements: the simple query protocol runs them all, in
       * one implicit transaction; the last one's result is kept. */
      if (dirties_session(req->sql, req->sql_len))
        base->dirty = 1;
      if (!PQsendQuery(c->pg, req->sql))
        r = LOOM_EDB_CONNECTION;
      else
        r = add_unit(c, U_EXEC, 0, NULL);
    } else {
      r = start_statements(c);
    }
    break;
  }
  case LOOM_DB_STREAM:
    /* In pipeline mode: libpq (up to 16 at least) clears its single-row
     * flag only when a pipeline moves on to its next query or when a query
     * is sent outside pipeline mode. A stream run outside one leaves the
     * flag set, and the first query of the next pipeline on this
     * connection (a batch) would come back row by row. Here the stream's
     * own Sync clears it. */
    r = start_statements(c);
    break;
  case LOOM_DB_COPY_IN: /* COPY is not allowed in pipeline mode */
    r = send_stmt(c, &c->one, 0, 0, 0);
    break;
  case LOOM_DB_BATCH:
    r = start_statements(c);
    break;
  case LOOM_DB_RESET:
  case LOOM_DB_PING: {
    const char *sql = "";
    if (req->op == LOOM_DB_RESET) {
      /* What asyncpg runs on release, plus the rollback pgxpool implies,
       * and what RESET ALL leaves alone: SET ROLE (undone by SET SESSION
       * AUTHORIZATION DEFAULT) and temporary tables. Prepared statements
       * stay: they are the statement cache. */
#define PG_RESET_SESSION                                                          \
  "CLOSE ALL; UNLISTEN *; SELECT pg_advisory_unlock_all(); "                      \
  "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DISCARD TEMP"
      static const char session[] = PG_RESET_SESSION;
      int in_txn = PQtransactionStatus(c->pg) != PQTRANS_IDLE;
      if (in_txn && base->dirty)
        sql = "ROLLBACK; " PG_RESET_SESSION;
      else
        sql = in_txn ? "ROLLBACK" : session;
    }
    if (!PQsendQuery(c->pg, sql))
      r = LOOM_EDB_CONNECTION;
    else
      r = add_unit(c, U_EXEC, 0, NULL);
    if (req->op == LOOM_DB_RESET)
      base->dirty = 0;
    break;
  }
  default:
    r = LOOM_EDB_ARGUMENT;
  }
  if (r == 0 && c->pipeline)
    r = pipeline_sync(c);
  if (r != 0) {
    /* Nothing usable went out: the request fails now, without callback. */
    if (r == LOOM_EDB_CONNECTION) {
      set_conn_error(&req->err, c->pg, "cannot send the query");
      base->broken = 1;
    } else if (req->err.message == NULL) {
      loom_db_error_set(&req->err, NULL, loom_strerror(r));
    }
    if (c->pipeline && !base->broken && (r != LOOM_EDB_ARGUMENT || c->nunits > 0))
      base->broken = 1; /* half a pipeline went out: not worth untangling */
    if (c->pipeline && !base->broken)
      PQexitPipelineMode(c->pg);
    c->pipeline = 0;
    base->req = NULL;
    req->active = 0;
    return req->status = r;
  }
  flush(c);
  return 0;
}

/* ---- receiving ---------------------------------------------------------- */

static void take_server_error(loom_db_stmt_t *st, const PGresult *r) {
  if (st->status != 0)
    return; /* the first error of a statement is the one that matters */
  const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  const char *detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
  const char *hint = PQresultErrorField(r, PG_DIAG_MESSAGE_HINT);
  const char *pos = PQresultErrorField(r, PG_DIAG_STATEMENT_POSITION);
  loom_db_error_set(&st->err, code, msg ? msg : PQresultErrorMessage(r));
  trim_message(&st->err);
  st->err.detail = detail ? loom_db_strdup(detail) : NULL;
  st->err.hint = hint ? loom_db_strdup(hint) : NULL;
  st->err.position = pos ? atoi(pos) : 0;
  st->status = LOOM_EDB_QUERY;
}

static void finish(pg_conn *c) {
  loom_db_req_t *req = c->base.req;
  if (req == NULL)
    return;
  if (c->cancel_busy) {
    /* Complete only once the cancel has reached the server. */
    c->done_after_cancel = 1;
    want(c, 0);
    return;
  }
  if (c->pipeline && PQpipelineStatus(c->pg) != PQ_PIPELINE_OFF)
    PQexitPipelineMode(c->pg);
  c->pipeline = 0;
  if (c->pg && PQstatus(c->pg) == CONNECTION_BAD)
    c->base.broken = 1;
  if (req->op != LOOM_DB_BATCH) {
    loom_db_req_take_one(req, &c->one);
    if (req->status == LOOM_EDB_QUERY && strcmp(req->err.code, "57014") == 0 && c->draining)
      req->status = LOOM_ECANCELED;
  }
  /* A prepared statement the server no longer has (DISCARD, DEALLOCATE)
   * or whose plan went stale: forget the cache rather than fail forever. */
  if (req->status == LOOM_EDB_QUERY &&
      (strcmp(req->err.code, "26000") == 0 || strcmp(req->err.code, "0A000") == 0))
    loom_stmt_cache_clear(&c->cache);
  c->base.req = NULL;
  req->active = 0;
  req->more = 0;
  want(c, c->on_notify ? UV_READABLE : 0);
  req->cb(req);
}

static void fail_request(pg_conn *c, int status, const char *code, const char *msg) {
  loom_db_req_t *req = c->base.req;
  c->base.broken = 1;
  if (req == NULL)
    return;
  if (req->err.message == NULL) {
    if (msg)
      loom_db_error_set(&req->err, code, msg);
    else
      set_conn_error(&req->err, c->pg, "the connection to the server was lost");
  }
  req->status = status;
  loom_db_result_free(req->result);
  req->result = NULL;
  c->unit_pos = c->nunits;
  c->paused = 0;
  finish(c);
}

static void deliver_notifies(pg_conn *c) {
  PGnotify *n;
  while ((n = PQnotifies(c->pg)) != NULL) {
    if (c->on_notify)
      c->on_notify(&c->base, n->relname, n->extra, n->be_pid);
    PQfreemem(n);
  }
}

/* Hands a streamed row over and stops reading until next(). */
static void deliver_row(pg_conn *c, PGresult *r) {
  loom_db_req_t *req = c->base.req;
  req->result = loom__pg_result(r);
  if (req->result == NULL) {
    PQclear(r);
    fail_request(c, LOOM_ENOMEM, NULL, "out of memory");
    return;
  }
  req->more = 1;
  c->paused = 1;
  want(c, 0);
  req->cb(req);
}

/* The parameter types the server inferred: the statement is ready. */
static void take_description(pg_stmt *s, const PGresult *r) {
  int n = PQnparams(r);
  Oid *types = n > 0 ? malloc((size_t)n * sizeof *types) : NULL;
  if (n > 0 && types == NULL)
    n = 0; /* values then go untyped: still correct, only less checked */
  for (int i = 0; i < n; i++)
    types[i] = PQparamtype(r, i);
  free(s->types);
  s->types = types;
  s->nparams = n;
  s->state = S_READY;
}

static void describe_unnamed(pg_desc *d, const PGresult *r) {
  int n = PQnparams(r);
  d->types = n > 0 ? malloc((size_t)n * sizeof *d->types) : NULL;
  if (n > 0 && d->types == NULL)
    return; /* untyped then */
  for (int i = 0; i < n; i++)
    d->types[i] = PQparamtype(r, i);
  d->nparams = n;
  d->described = 1;
}

/* A Parse or Describe that failed or never ran: the entry goes, and the
 * Describe right behind a Parse must not reach for it afterwards. */
static void forget_entry(pg_conn *c, pg_unit *u) {
  pg_stmt *s = u->cached;
  if (s == NULL)
    return;
  for (int i = c->unit_pos; i < c->nunits; i++)
    if (c->units[i].cached == s)
      c->units[i].cached = NULL;
  loom_stmt_cache_remove(&c->cache, &s->e);
}

static void handle_result(pg_conn *c, pg_unit *u, PGresult *r) {
  loom_db_stmt_t *st = u->stmt >= 0 ? stmt_at(c, u->stmt) : NULL;
  switch (PQresultStatus(r)) {
  case PGRES_SINGLE_TUPLE:
    if (c->base.req->op != LOOM_DB_STREAM) {
      /* Rows one by one for a request that did not ask for them would be
       * handed over as a stream the caller is not reading. */
      PQclear(r);
      fail_request(c, LOOM_EDB_PROTOCOL, NULL, "a row arrived on its own outside a stream");
      return;
    }
    if (c->draining) {
      PQclear(r);
      return;
    }
    deliver_row(c, r);
    return;
  case PGRES_TUPLES_OK:
  case PGRES_COMMAND_OK:
  case PGRES_EMPTY_QUERY:
    if (u->kind == U_PREP) {
      if (u->cached && u->cached->undescribed)
        u->cached->state = S_READY;
      PQclear(r);
      return;
    }
    if (u->kind == U_DESC) {
      if (u->cached)
        take_description(u->cached, r);
      else if (u->stmt >= 0 && u->stmt < c->ndescs)
        describe_unnamed(&c->descs[u->stmt], r);
      PQclear(r);
      return;
    }
    if (c->base.req->op == LOOM_DB_STREAM && PQntuples(r) == 0 && PQnfields(r) > 0) {
      PQclear(r); /* the end of a single-row stream */
      return;
    }
    loom_db_result_free(st->result);
    st->result = loom__pg_result(r);
    if (st->result == NULL) {
      PQclear(r);
      st->status = LOOM_ENOMEM;
    }
    return;
  case PGRES_COPY_IN:
    PQclear(r);
    c->copying = 1;
    c->paused = 1;
    want(c, 0);
    c->base.req->more = 1;
    c->base.req->cb(c->base.req); /* ready for data */
    return;
  case PGRES_PIPELINE_ABORTED:
    if (st && st->status == 0) {
      loom_db_error_set(&st->err, "", "not run: an earlier statement of the batch failed");
      st->status = LOOM_EDB_QUERY;
    }
    if (u->kind == U_PREP || u->kind == U_DESC)
      forget_entry(c, u); /* the server does not have it */
    PQclear(r);
    return;
  case PGRES_FATAL_ERROR:
  case PGRES_NONFATAL_ERROR:
    if (u->kind == U_PREP || u->kind == U_DESC) {
      forget_entry(c, u);
      /* The same statement's execute reports PIPELINE_ABORTED; the prepare
       * error is the useful one. */
      take_server_error(stmt_at(c, u->stmt), r);
    } else if (st) {
      take_server_error(st, r);
    }
    PQclear(r);
    return;
  default:
    PQclear(r);
    fail_request(c, LOOM_EDB_PROTOCOL, NULL, "unexpected response from the server");
  }
}

static int request_failed(pg_conn *c) {
  loom_db_req_t *req = c->base.req;
  if (req->status != 0)
    return 1;
  for (int i = 0, n = request_nstmts(c); i < n; i++)
    if (stmt_at(c, i)->status != 0)
      return 1;
  return 0;
}

static void process(pg_conn *c) {
  while (c->base.req && !c->paused) {
    if (c->unit_pos >= c->nunits) {
      if (c->describing && !request_failed(c)) {
        statements_described(c);
        continue;
      }
      finish(c);
      return;
    }
    if (PQisBusy(c->pg)) {
      want(c, UV_READABLE | (c->flushing ? UV_WRITABLE : 0));
      return;
    }
    PGresult *r = PQgetResult(c->pg);
    pg_unit *u = &c->units[c->unit_pos];
    if (u->kind == U_SYNC) {
      int sync = r && PQresultStatus(r) == PGRES_PIPELINE_SYNC;
      if (r)
        PQclear(r);
      if (!sync) {
        fail_request(c, LOOM_EDB_PROTOCOL, NULL, "pipeline out of step with the server");
        return;
      }
      c->unit_pos++;
      continue;
    }
    if (r == NULL) {
      c->unit_pos++;
      continue;
    }
    handle_result(c, u, r);
  }
}

static void copy_progress(pg_conn *c);

static void on_readable_idle(pg_conn *c) {
  if (!PQconsumeInput(c->pg)) {
    c->base.broken = 1;
    want(c, 0);
    if (c->on_notify)
      c->on_notify(&c->base, NULL, NULL, 0);
    return;
  }
  deliver_notifies(c);
}

static void on_poll(loom_watcher_t *w, int status, int events) {
  pg_conn *c = w->data;
  if (c->connecting) {
    loom__pg_connect_step(c, status);
    return;
  }
  if (c->base.req == NULL) {
    on_readable_idle(c);
    return;
  }
  if (status < 0) {
    fail_request(c, LOOM_EDB_CONNECTION, "08006", uv_strerror(status));
    return;
  }
  if (events & UV_READABLE) {
    if (!PQconsumeInput(c->pg)) {
      fail_request(c, LOOM_EDB_CONNECTION, NULL, NULL);
      return;
    }
    deliver_notifies(c);
  }
  if (c->flushing && (events & (UV_WRITABLE | UV_READABLE))) {
    int r = PQflush(c->pg);
    if (r < 0) {
      fail_request(c, LOOM_EDB_CONNECTION, NULL, NULL);
      return;
    }
    c->flushing = r == 1;
  }
  if (c->copying) {
    copy_progress(c);
    return;
  }
  process(c);
}

/* ---- streaming and COPY ------------------------------------------------- */

static int pg_next(loom_db_conn_t *base, loom_db_req_t *req) {
  pg_conn *c = (pg_conn *)base;
  if (base->req != req || !c->paused || c->copying)
    return LOOM_EDB_ARGUMENT;
  req->result = NULL;
  req->more = 0;
  c->paused = 0;
  process(c);
  return 0;
}

/* Pushes the pending chunk (or the end of data) into libpq, then flushes;
 * the request's callback fires once libpq has taken everything. */
static void copy_progress(pg_conn *c) {
  loom_db_req_t *req = c->base.req;
  if (c->copy_pending) {
    int r = c->copy_ending ? PQputCopyEnd(c->pg, c->copy_abort ? "cancelled by the client" : NULL)
                           : PQputCopyData(c->pg, c->copy_buf, (int)c->copy_len);
    if (r < 0) {
      fail_request(c, LOOM_EDB_CONNECTION, NULL, NULL);
      return;
    }
    if (r == 0) {
      want(c, UV_READABLE | UV_WRITABLE); /* libpq's buffer is full */
      return;
    }
    c->copy_pending = 0;
  }
  int f = PQflush(c->pg);
  if (f < 0) {
    fail_request(c, LOOM_EDB_CONNECTION, NULL, NULL);
    return;
  }
  c->flushing = f == 1;
  if (c->flushing) {
    want(c, UV_READABLE | UV_WRITABLE);
    return;
  }
  if (c->copy_ending) {
    /* All data is out: read the COPY's own result. */
    c->copying = 0;
    c->paused = 0;
    c->unit_pos = 0;
    c->nunits = 0;
    if (add_unit(c, U_EXEC, 0, NULL) != 0) {
      fail_request(c, LOOM_ENOMEM, NULL, "out of memory");
      return;
    }
    process(c);
    return;
  }
  want(c, 0);
  req->more = 1;
  req->cb(req);
}

static int pg_copy_data(loom_db_conn_t *base, loom_db_req_t *req, const char *buf, size_t len) {
  pg_conn *c = (pg_conn *)base;
  if (base->req != req || !c->copying)
    return LOOM_EDB_ARGUMENT;
  if (len > 0x7fffffff)
    return LOOM_EDB_ARGUMENT;
  c->copy_buf = buf;
  c->copy_len = len;
  c->copy_pending = 1;
  c->copy_ending = len == 0;
  req->more = 0;
  copy_progress(c);
  return 0;
}

/* ---- cancel --------------------------------------------------------------- */

static void cancel_work(uv_work_t *work) {
  pg_conn *c = work->data;
  char errbuf[256];
  PQcancel(c->cancel, errbuf, sizeof errbuf); /* blocks: off the loop thread */
}

static void cancel_done(uv_work_t *work, int status) {
  pg_conn *c = work->data;
  (void)status;
  PQfreeCancel(c->cancel);
  c->cancel = NULL;
  c->cancel_busy = 0;
  c->refs--;
  if (c->done_after_cancel) {
    c->done_after_cancel = 0;
    finish(c);
  }
  maybe_free(c);
}

static int pg_cancel(loom_db_conn_t *base) {
  pg_conn *c = (pg_conn *)base;
  loom_db_req_t *req = base->req;
  if (req == NULL || c->cancel_busy || c->pg == NULL)
    return 0;
  c->cancel_asked = 1;
  if (c->copying) {
    /* Mid-COPY the server waits for us: end the data with an error. */
    c->draining = 1;
    c->copy_abort = 1;
    c->copy_ending = 1;
    c->copy_pending = 1;
    c->paused = 0;
    copy_progress(c);
    return 0;
  }
  if (req->op == LOOM_DB_STREAM) {
    /* Drop the rest of the rows as they come. */
    c->draining = 1;
    if (c->paused) {
      /* The row handed over is dropped with the rest. */
      c->paused = 0;
      loom_db_result_free(req->result);
      req->result = NULL;
    }
  }
  c->cancel = PQgetCancel(c->pg);
  if (c->cancel == NULL)
    return LOOM_ENOMEM;
  c->cancel_work.data = c;
  if (uv_queue_work(&base->loop->uv, &c->cancel_work, cancel_work, cancel_done) != 0) {
    PQfreeCancel(c->cancel);
    c->cancel = NULL;
    base->broken = 1;
    return LOOM_EDB_CONNECTION;
  }
  c->cancel_busy = 1;
  c->refs++;
  if (req->op == LOOM_DB_STREAM)
    process(c);
  return 0;
}

/* ---- close, watch, transaction state -------------------------------------- */

static void pg_close(loom_db_conn_t *base) {
  if (!loom_db_close_once(base))
    return;
  pg_conn *c = (pg_conn *)base;
  if (base->req && c->pg) {
    loom_db_req_t *req = base->req;
    c->done_after_cancel = 0;
    int busy = c->cancel_busy;
    c->cancel_busy = 0; /* complete now: the connection is going away */
    loom_db_error_set(&req->err, "08003", "the connection was closed");
    req->status = LOOM_ECLOSED;
    c->unit_pos = c->nunits;
    c->paused = 0;
    c->copying = 0;
    finish(c);
    c->cancel_busy = busy;
  }
  c->on_notify = NULL;
  loom_watcher_close(&c->watch);
  if (c->pg) {
    PQfinish(c->pg);
    c->pg = NULL;
  }
  maybe_free(c);
}

static int pg_watch(loom_db_conn_t *base, loom_db_notify_cb cb) {
  pg_conn *c = (pg_conn *)base;
  c->on_notify = cb;
  if (base->req == NULL && !base->broken)
    want(c, cb ? UV_READABLE : 0);
  return 0;
}

static loom_db_txn_t pg_txn(loom_db_conn_t *base) {
  pg_conn *c = (pg_conn *)base;
  if (c->pg == NULL || base->broken)
    return LOOM_TXN_UNKNOWN;
  switch (PQtransactionStatus(c->pg)) {
  case PQTRANS_IDLE: return LOOM_TXN_IDLE;
  case PQTRANS_INTRANS: return LOOM_TXN_ACTIVE;
  case PQTRANS_INERROR: return LOOM_TXN_FAILED;
  default: return LOOM_TXN_UNKNOWN;
  }
}

/* ---- connect --------------------------------------------------------------- */

/* Connecting tries every address of every host in order, as libpq does:
 * the hosts of the connection string (libpq's multi-host lists, "host=a,b"
 * or postgres://a:5432,b:5433/db) are looked up on the loop, each into all
 * its addresses, and libpq gets the whole list as host/hostaddr/port lists.
 * It moves on by itself from an address that refuses or cannot be reached,
 * and stops where libpq stops (a server that answered and refused the
 * login). libpq's connect_timeout only works in its blocking connect, so it
 * is kept here: per address, as libpq applies it, 10 s when not given (0:
 * none); an address that does not answer in time is given up and the list
 * restarts from the next one. */

#define PG_CONNECT_TIMEOUT_DEFAULT 10

static void connect_done(pg_conn *c, int status) {
  loom_db_req_t *req = c->connect_req;
  c->connect_req = NULL;
  c->connecting = 0;
  loom_timer_stop(c->base.loop, &c->connect_timer);
  free_targets(c);
  req->status = status;
  req->active = 0;
  if (status == 0) {
    req->conn = &c->base;
    want(c, 0);
  } else {
    if (req->err.message == NULL)
      set_conn_error(&req->err, c->pg, "could not connect to the server");
    req->conn = NULL;
    c->base.closing = 1;
    loom_watcher_close(&c->watch);
    if (c->pg) {
      PQfinish(c->pg);
      c->pg = NULL;
    }
    maybe_free(c);
  }
  req->cb(req);
}

static void add_error(pg_conn *c, const char *msg) {
  size_t have = c->errors ? strlen(c->errors) : 0, n = strlen(msg);
  char *e = realloc(c->errors, have + n + 2);
  if (e == NULL)
    return; /* the message is shorter, nothing worse */
  memcpy(e + have, msg, n);
  if (n > 0 && msg[n - 1] != '\n')
    e[have + n++] = '\n';
  e[have + n] = 0;
  c->errors = e;
}

/* Every attempt failed: the error names each one (libpq's lines, with the
 * addresses given up on here before them), never the password. */
static void connect_failed(pg_conn *c, const char *fallback) {
  loom_db_req_t *req = c->connect_req;
  const char *last = c->pg ? PQerrorMessage(c->pg) : NULL;
  if (last && *last)
    add_error(c, last);
  if (c->errors && *c->errors) {
    loom_db_error_set(&req->err, "08006", c->errors);
    trim_message(&req->err);
  } else {
    set_conn_error(&req->err, c->pg, fallback);
  }
  connect_done(c, LOOM_EDB_CONNECTION);
}

static void ignore_notice(void *arg, const char *message) {
  (void)arg;
  (void)message;
}

static void arm_connect_timer(pg_conn *c) {
  if (c->connect_timeout_ns)
    loom_timer_start(c->base.loop, &c->connect_timer, c->connect_timeout_ns);
}

/* Which of the targets libpq is on, by the address and port it reports;
 * the time allowed starts again with each new one. */
static void follow_target(pg_conn *c) {
  const char *addr = PQhostaddr(c->pg), *host = PQhost(c->pg), *port = PQport(c->pg);
  for (int i = c->target; i < c->ntargets; i++) {
    pg_target *t = &c->targets[i];
    int same = t->addr[0] ? addr && strcmp(t->addr, addr) == 0
                          : (addr == NULL || *addr == 0) && host && strcmp(t->host, host) == 0;
    if (same && t->port && port && *port && strcmp(t->port, port) != 0)
      same = 0;
    if (same) {
      if (i != c->target) {
        c->target = i;
        arm_connect_timer(c);
      }
      return;
    }
  }
}

void loom__pg_connect_step(pg_conn *c, int status) {
  /* libuv reports an error on the socket (a refused connect) as EBADF and
   * stops watching it: libpq reads the socket's own error, then moves on
   * to the next address or fails naming the cause. Should it not notice,
   * the error would repeat at once: give up rather than spin. */
  if (status < 0) {
    if (++c->poll_errors > 100) {
      loom_db_error_set(&c->connect_req->err, "08006", uv_strerror(status));
      connect_done(c, LOOM_EDB_CONNECTION);
      return;
    }
  } else {
    c->poll_errors = 0;
  }
  PostgresPollingStatusType st = PQconnectPoll(c->pg);
  switch (st) {
  case PGRES_POLLING_READING:
  case PGRES_POLLING_WRITING:
    if (track_socket(c) != 0) {
      connect_failed(c, "lost the socket while connecting");
      return;
    }
    follow_target(c);
    want(c, st == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE);
    break;
  case PGRES_POLLING_OK:
    /* Notices (NOTICE, WARNING) are the server talking to a person; libpq
     * would print them on stderr from inside the loop. */
    PQsetNoticeProcessor(c->pg, ignore_notice, NULL);
    if (PQsetnonblocking(c->pg, 1) != 0) {
      connect_done(c, LOOM_EDB_CONNECTION);
      return;
    }
    c->base.backend_id = PQbackendPID(c->pg);
    connect_done(c, 0);
    break;
  default:
    connect_failed(c, "could not connect to the server");
  }
}

static int add_opt(pg_conn *c, const char *key, const char *val);

/* Hands libpq the targets from `from` on, as its host/hostaddr/port lists. */
static int set_target_lists(pg_conn *c, int from) {
  size_t sizes[3] = {1, 1, 1};
  for (int i = from; i < c->ntargets; i++) {
    sizes[0] += strlen(c->targets[i].host) + 1;
    sizes[1] += strlen(c->targets[i].addr) + 1;
    sizes[2] += (c->targets[i].port ? strlen(c->targets[i].port) : 0) + 1;
  }
  char *lists[3];
  int ok = 1;
  for (int k = 0; k < 3; k++) {
    lists[k] = malloc(sizes[k]);
    ok = ok && lists[k];
  }
  if (ok) {
    for (int k = 0; k < 3; k++)
      lists[k][0] = 0;
    for (int i = from; i < c->ntargets; i++) {
      const char *parts[3] = {c->targets[i].host, c->targets[i].addr,
                              c->targets[i].port ? c->targets[i].port : ""};
      for (int k = 0; k < 3; k++) {
        if (i > from)
          strcat(lists[k], ",");
        strcat(lists[k], parts[k]);
      }
    }
    ok = add_opt(c, "host", lists[0]) == 0 && add_opt(c, "hostaddr", lists[1]) == 0 &&
         (c->targets[from].port == NULL || add_opt(c, "port", lists[2]) == 0);
  }
  for (int k = 0; k < 3; k++)
    free(lists[k]);
  return ok ? 0 : -1;
}

static void start_connect(pg_conn *c, int from) {
  if (c->ntargets > 0 && set_target_lists(c, from) != 0) {
    connect_done(c, LOOM_ENOMEM);
    return;
  }
  c->target = from;
  c->keys[c->nopts] = NULL;
  c->vals[c->nopts] = NULL;
  c->pg = PQconnectStartParams((const char *const *)c->keys,
                               (const char *const *)c->vals, 0);
  if (c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD) {
    connect_failed(c, "could not connect to the server");
    return;
  }
  c->connecting = 1;
  if (track_socket(c) != 0) {
    connect_failed(c, "could not connect to the server");
    return;
  }
  if (c->ntargets > 0)
    follow_target(c);
  arm_connect_timer(c);
  want(c, UV_WRITABLE);
}

/* The address libpq is on did not answer in time: on to the next one. */
static void on_connect_timeout(loom_timer_t *t) {
  pg_conn *c = t->data;
  if (!c->connecting || c->pg == NULL)
    return;
  /* libpq has written "connection to server at ... failed: " for the
   * attempt under way; the reason is ours. */
  const char *so_far = PQerrorMessage(c->pg);
  size_t n = so_far ? strlen(so_far) : 0;
  if (n >= 2 && so_far[n - 2] == ':' && so_far[n - 1] == ' ') {
    add_error(c, so_far);
    size_t have = strlen(c->errors);
    if (have > 0 && c->errors[have - 1] == '\n')
      c->errors[have - 1] = 0; /* the reason goes on the same line */
    add_error(c, "timeout expired");
  } else {
    if (n > 0)
      add_error(c, so_far);
    char line[600];
    if (c->ntargets > 0) {
      pg_target *tg = &c->targets[c->target];
      snprintf(line, sizeof line, "connection to server at \"%s\"%s%s%s, port %s failed: timeout expired",
               tg->host, tg->addr[0] ? " (" : "", tg->addr, tg->addr[0] ? ")" : "",
               tg->port ? tg->port : PQport(c->pg) ? PQport(c->pg) : "");
    } else {
      snprintf(line, sizeof line, "could not connect to the server: timeout expired");
    }
    add_error(c, line);
  }
  loom_watcher_close(&c->watch);
  PQfinish(c->pg);
  c->pg = NULL;
  c->connecting = 0;
  if (c->target + 1 < c->ntargets) {
    start_connect(c, c->target + 1);
    return;
  }
  connect_failed(c, "timeout expired");
}

static int add_opt(pg_conn *c, const char *key, const char *val) {
  for (int i = 0; i < c->nopts; i++) {
    if (strcmp(c->keys[i], key) == 0) {
      char *v = loom_db_strdup(val);
      if (v == NULL)
        return -1;
      free(c->vals[i]);
      c->vals[i] = v;
      return 0;
    }
  }
  c->keys[c->nopts] = loom_db_strdup(key);
  c->vals[c->nopts] = loom_db_strdup(val);
  if (c->keys[c->nopts] == NULL || c->vals[c->nopts] == NULL)
    return -1;
  c->nopts++;
  return 0;
}

static const char *get_opt(pg_conn *c, const char *key) {
  for (int i = 0; i < c->nopts; i++)
    if (strcmp(c->keys[i], key) == 0)
      return c->vals[i];
  return NULL;
}

/* libpq's comma-separated lists: "a,b" is {"a", "b"}, "" is {""}. */
static char **split_list(const char *s, int *n) {
  int count = 1;
  for (const char *p = s; *p; p++)
    count += *p == ',';
  char **items = calloc((size_t)count, sizeof *items);
  if (items == NULL)
    return NULL;
  const char *p = s;
  for (int i = 0; i < count; i++) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    /* libpq trims blanks around items too */
    while (len > 0 && (*p == ' ' || *p == '\t')) {
      p++;
      len--;
    }
    while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
      len--;
    items[i] = malloc(len + 1);
    if (items[i] == NULL) {
      free_strings(items, i);
      return NULL;
    }
    memcpy(items[i], p, len);
    items[i][len] = 0;
    p = end ? end + 1 : p + len;
  }
  *n = count;
  return items;
}

static int add_target(pg_conn *c, const char *host, const char *addr, const char *port) {
  if (c->ntargets == c->targets_cap) {
    int cap = c->targets_cap ? c->targets_cap * 2 : 4;
    pg_target *t = realloc(c->targets, (size_t)cap * sizeof *t);
    if (t == NULL)
      return -1;
    c->targets = t;
    c->targets_cap = cap;
  }
  pg_target *t = &c->targets[c->ntargets];
  t->host = loom_db_strdup(host);
  t->addr = loom_db_strdup(addr);
  t->port = port && *port ? loom_db_strdup(port) : NULL;
  if (t->host == NULL || t->addr == NULL || (port && *port && t->port == NULL)) {
    free(t->host);
    free(t->addr);
    free(t->port);
    return -1;
  }
  c->ntargets++;
  return 0;
}

static const char *host_port(pg_conn *c, int i) {
  if (c->nports == 0)
    return NULL;
  return c->ports[c->nports == 1 ? 0 : i];
}

static void next_host(pg_conn *c);

static void on_resolved(loom_resolve_t *r, int status) {
  pg_conn *c = r->data;
  c->refs--;
  if (c->base.closing) {
    connect_done(c, LOOM_ECLOSED);
    return;
  }
  const char *host = c->hosts[c->host_pos];
  if (status != 0) {
    char msg[512];
    snprintf(msg, sizeof msg, "could not translate host name \"%s\" to address: %s", host,
             uv_strerror(status));
    add_error(c, msg);
  } else {
    char ip[64];
    while (loom_resolve_next(r, ip, sizeof ip, NULL))
      if (add_target(c, host, ip, host_port(c, c->host_pos)) != 0) {
        connect_done(c, LOOM_ENOMEM);
        return;
      }
  }
  loom_resolve_free(r);
  c->host_pos++;
  next_host(c);
}

/* Turns the hosts from host_pos on into targets, looking names up (one at
 * a time, on the thread pool), then starts connecting. */
static void next_host(pg_conn *c) {
  for (; c->host_pos < c->nhosts; c->host_pos++) {
    int i = c->host_pos;
    const char *host = c->hosts[i], *port = host_port(c, i);
    const char *addr = c->hostaddrs ? c->hostaddrs[i] : "";
    int r = 0;
    if (*addr) {
      r = add_target(c, host, addr, port);
    } else if (*host && *host != '/' && !loom_resolve_is_numeric(host)) {
      c->resolve.data = c;
      int rc = loom_resolve_start(c->base.loop, &c->resolve, host, 0, on_resolved);
      if (rc == 0) {
        c->refs++;
        return;
      }
      char msg[512];
      snprintf(msg, sizeof msg, "could not translate host name \"%s\" to address: %s", host,
               uv_strerror(rc));
      add_error(c, msg);
    } else {
      r = add_target(c, host, loom_resolve_is_numeric(host) ? host : "", port);
    }
    if (r != 0) {
      connect_done(c, LOOM_ENOMEM);
      return;
    }
  }
  if (c->ntargets == 0) {
    connect_failed(c, "no address to connect to");
    return;
  }
  start_connect(c, 0);
}

/* The host lists, or 0 when there is nothing to look up here (no host
 * given, or lists that do not match, which libpq then reports). */
static int plan_hosts(pg_conn *c) {
  const char *host = get_opt(c, "host"), *hostaddr = get_opt(c, "hostaddr");
  const char *port = get_opt(c, "port");
  if (host == NULL)
    host = getenv("PGHOST");
  if (hostaddr == NULL)
    hostaddr = getenv("PGHOSTADDR");
  if (port == NULL)
    port = getenv("PGPORT");
  if ((host == NULL || *host == 0) && (hostaddr == NULL || *hostaddr == 0))
    return 0;
  if (host && *host && (c->hosts = split_list(host, &c->nhosts)) == NULL)
    return -1;
  if (hostaddr && *hostaddr && (c->hostaddrs = split_list(hostaddr, &c->naddrs)) == NULL)
    return -1;
  if (port && *port && (c->ports = split_list(port, &c->nports)) == NULL)
    return -1;
  if (c->hosts == NULL) {
    /* hostaddr alone: no names */
    if ((c->hosts = calloc((size_t)c->naddrs, sizeof *c->hosts)) == NULL)
      return -1;
    for (; c->nhosts < c->naddrs; c->nhosts++)
      if ((c->hosts[c->nhosts] = loom_db_strdup("")) == NULL)
        return -1;
  }
  if ((c->hostaddrs && c->naddrs != c->nhosts) || (c->nports > 1 && c->nports != c->nhosts)) {
    free_targets(c);
    return 0;
  }
  return 1;
}

static int connect_timeout_ns(pg_conn *c, uint64_t *out) {
  const char *v = get_opt(c, "connect_timeout");
  if (v == NULL)
    v = getenv("PGCONNECT_TIMEOUT");
  long secs = PG_CONNECT_TIMEOUT_DEFAULT;
  if (v && *v) {
    char *end;
    secs = strtol(v, &end, 10);
    while (*end == ' ')
      end++;
    if (*end)
      return -1;
  }
  if (secs == 1)
    secs = 2; /* as libpq: one second could end before it starts */
  *out = secs > 0 ? (uint64_t)secs * 1000000000ULL : 0;
  return 0;
}

static int pg_connect(loom_loop_t *loop, const char *conninfo, loom_db_req_t *req) {
  char *err = NULL;
  req->conn = NULL;
  req->status = 0;
  PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
  if (opts == NULL) {
    /* libpq's message names the bad part, never the password. */
    loom_db_error_set(&req->err, "08001", err ? err : "invalid connection string");
    trim_message(&req->err);
    PQfreemem(err);
    return req->status = LOOM_EDB_ARGUMENT;
  }
  int n = 0;
  for (PQconninfoOption *o = opts; o->keyword; o++)
    n++;
  pg_conn *c = calloc(1, sizeof *c);
  if (c)
    c->keys = calloc((size_t)n + 8, sizeof *c->keys);
  if (c)
    c->vals = calloc((size_t)n + 8, sizeof *c->vals);
  if (c == NULL || c->keys == NULL || c->vals == NULL) {
    if (c) {
      free(c->keys);
      free(c->vals);
    }
    free(c);
    PQconninfoFree(opts);
    return req->status = LOOM_ENOMEM;
  }
  c->base.driver = &loom_pg_driver;
  c->base.loop = loop;
  c->base.created_ns = c->base.last_used_ns = loom_now_ns();
  c->connect_req = req;
  loom_timer_init(&c->connect_timer, on_connect_timeout, c);
  loom_watcher_init(&c->watch, on_poll, on_watch_closed, c);
  loom_stmt_cache_init(&c->cache, sizeof(pg_stmt), PG_CACHE_MAX, 0, stmt_free);
  req->active = 1;
  int bad = 0;
  for (PQconninfoOption *o = opts; o->keyword; o++)
    if (o->val && add_opt(c, o->keyword, o->val) != 0)
      bad = 1;
  PQconninfoFree(opts);
  /* What loom's value mapping relies on, unless the caller chose. */
  if (!get_opt(c, "client_encoding"))
    bad |= add_opt(c, "client_encoding", "UTF8");
  if (!get_opt(c, "options"))
    bad |= add_opt(c, "options", "-c DateStyle=ISO,YMD");
  if (!get_opt(c, "fallback_application_name"))
    bad |= add_opt(c, "fallback_application_name", "loom");
  int planned = bad ? 0 : plan_hosts(c);
  if (bad || planned < 0) {
    c->base.closing = 1;
    maybe_free(c);
    req->active = 0;
    return req->status = LOOM_ENOMEM;
  }
  if (connect_timeout_ns(c, &c->connect_timeout_ns) != 0) {
    loom_db_error_set(&req->err, "08001", "connect_timeout must be a whole number of seconds");
    c->base.closing = 1;
    maybe_free(c);
    req->active = 0;
    return req->status = LOOM_EDB_ARGUMENT;
  }
  if (planned)
    next_host(c);
  else
    start_connect(c, 0);
  return 0;
}

const loom_db_driver_t loom_pg_driver = {
  .name = "postgres",
  .connect = pg_connect,
  .start = pg_start,
  .next = pg_next,
  .copy_data = pg_copy_data,
  .cancel = pg_cancel,
  .close = pg_close,
  .txn = pg_txn,
  .watch = pg_watch,
  .param_count = loom__pg_param_count,
  .placeholder = "$1",
};
