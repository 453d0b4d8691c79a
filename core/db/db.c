/* Driver-independent parts of the database layer: error records, results,
 * and the array literal parser ({a,"b c",NULL}, {{1,2},{3,4}}) that array
 * cells use. */
#include <stdlib.h>
#include <string.h>
#include "db.h"

char *loom_db_strdup(const char *s) {
  if (s == NULL)
    return NULL;
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d)
    memcpy(d, s, n);
  return d;
}

void loom_db_error_clear(loom_db_error_t *e) {
  free(e->message);
  free(e->detail);
  free(e->hint);
  memset(e, 0, sizeof *e);
}

void loom_db_error_set(loom_db_error_t *e, const char *code, const char *message) {
  loom_db_error_clear(e);
  if (code) {
    strncpy(e->code, code, sizeof e->code - 1);
    e->code[sizeof e->code - 1] = 0;
  }
  e->message = loom_db_strdup(message);
}

int loom_db_req_refuse(loom_db_req_t *req, int closed, const char *closed_code, int busy) {
  if (closed) {
    loom_db_error_set(&req->err, closed_code, "the connection is closed");
    return req->status = LOOM_EDB_CONNECTION;
  }
  if (busy) {
    loom_db_error_set(&req->err, NULL, "the connection is busy with another request");
    return req->status = LOOM_EDB_ARGUMENT;
  }
  return 0;
}

void loom_db_req_begin_shared(loom_db_conn_t *c, loom_db_req_t *req) {
  req->conn = c;
  req->status = 0;
  req->result = NULL;
  req->more = 0;
  req->active = 1;
  c->last_used_ns = loom_now_ns();
}

void loom_db_req_begin(loom_db_conn_t *c, loom_db_req_t *req, loom_db_stmt_t *one) {
  loom_db_req_begin_shared(c, req);
  c->req = req;
  for (int i = 0; req->op == LOOM_DB_BATCH && i < req->nstmts; i++) {
    req->stmts[i].status = 0;
    req->stmts[i].result = NULL;
    memset(&req->stmts[i].err, 0, sizeof req->stmts[i].err);
  }
  if (one) {
    loom_db_error_clear(&one->err);
    loom_db_result_free(one->result);
    memset(one, 0, sizeof *one);
    one->sql = req->sql;
    one->sql_len = req->sql_len;
    one->params = req->params;
    one->nparams = req->nparams;
  }
}

void loom_db_req_take_one(loom_db_req_t *req, loom_db_stmt_t *one) {
  if (req->status == 0)
    req->status = one->status;
  if (req->err.message == NULL && one->err.message) {
    req->err = one->err;
    memset(&one->err, 0, sizeof one->err);
  }
  if (req->status == 0 && req->result == NULL) {
    req->result = one->result;
    one->result = NULL;
  }
}

int loom_db_close_once(loom_db_conn_t *c) {
  if (c->closing)
    return 0;
  c->closing = 1;
  return 1;
}

void loom_db_result_free(loom_db_result_t *r) {
  if (r)
    r->ops->free(r);
}

void loom_db_array_begin(loom_db_array_iter_t *it, const loom_value_t *cell) {
  it->pos = cell->u.s.p;
  it->end = cell->u.s.p + cell->u.s.len;
  it->elem = cell->elem;
  it->scratch = NULL;
  it->scratch_cap = 0;
  /* "[0:2]={...}": explicit bounds come before the braces. */
  if (it->pos < it->end && *it->pos == '[') {
    const char *eq = memchr(it->pos, '=', (size_t)(it->end - it->pos));
    it->pos = eq ? eq + 1 : it->end;
  }
  if (it->pos < it->end && *it->pos == '{')
    it->pos++;
}

void loom_db_array_done(loom_db_array_iter_t *it) {
  free(it->scratch);
  it->scratch = NULL;
  it->scratch_cap = 0;
}

static int reserve(loom_db_array_iter_t *it, size_t n) {
  if (n <= it->scratch_cap)
    return 0;
  size_t cap = it->scratch_cap ? it->scratch_cap : 64;
  while (cap < n)
    cap *= 2;
  char *p = realloc(it->scratch, cap);
  if (p == NULL)
    return -1;
  it->scratch = p;
  it->scratch_cap = cap;
  return 0;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* PostgreSQL's text form of bytea: \x followed by hex digits. Decodes in
 * place (dst may equal src); returns the length or -1. */
long loom_db_unhex(char *dst, const char *src, size_t len) {
  if (len < 2 || src[0] != '\\' || src[1] != 'x' || (len - 2) % 2)
    return -1;
  size_t n = 0;
  for (size_t i = 2; i + 1 < len; i += 2) {
    int hi = hexval(src[i]), lo = hexval(src[i + 1]);
    if (hi < 0 || lo < 0)
      return -1;
    dst[n++] = (char)(hi << 4 | lo);
  }
  return (long)n;
}

/* Text as the server sent it to a typed value. p must be writable and
 * NUL-terminated at len: bytea is decoded and timestamps are made ISO 8601
 * in place. */
int loom_db_text_to_value(loom_vtype_t type, char *p, size_t len, loom_value_t *out) {
  char *end;
  out->elem = LOOM_VNULL;
  switch ((int)type) {
  case LOOM_VINT:
    out->type = LOOM_VINT;
    out->u.i = strtoll(p, &end, 10);
    return end == p ? -1 : 0;
  case LOOM_VFLOAT:
    out->type = LOOM_VFLOAT;
    out->u.f = strtod(p, &end);
    return end == p ? -1 : 0;
  case LOOM_VBOOL:
    out->type = LOOM_VBOOL;
    out->u.b = p[0] == 't';
    return 0;
  case LOOM_VBLOB: {
    long n = loom_db_unhex(p, p, len);
    if (n < 0)
      return -1;
    out->type = LOOM_VBLOB;
    out->u.s.p = p;
    out->u.s.len = (size_t)n;
    return 0;
  }
  case LOOM_VTEXT_TS:
    /* "2024-01-02 03:04:05+01" -> "2024-01-02T03:04:05+01" */
    if (len > 10 && p[10] == ' ')
      p[10] = 'T';
    /* fall through */
  default:
    out->type = LOOM_VTEXT;
    out->u.s.p = p;
    out->u.s.len = len;
    return 0;
  }
}

int loom_db_array_next(loom_db_array_iter_t *it, loom_value_t *out) {
  const char *p = it->pos, *end = it->end;
  if (p >= end || *p == '}')
    return 0;
  if (*p == '{') {
    /* A sub-array (a dimension more): handed out whole, as an array cell
     * of the same element type, for the caller to iterate in turn. Quoted
     * elements may hold braces. */
    const char *start = p;
    int depth = 0, quoted = 0;
    for (; p < end; p++) {
      if (quoted) {
        if (*p == '\\' && p + 1 < end)
          p++;
        else if (*p == '"')
          quoted = 0;
      } else if (*p == '"') {
        quoted = 1;
      } else if (*p == '{') {
        depth++;
      } else if (*p == '}' && --depth == 0) {
        break;
      }
    }
    if (p >= end)
      return -1;
    p++;
    out->type = LOOM_VARRAY;
    out->elem = it->elem;
    out->u.s.p = start;
    out->u.s.len = (size_t)(p - start);
    it->pos = p < end && *p == ',' ? p + 1 : p;
    return 1;
  }
  size_t n = 0;
  int quoted = *p == '"';
  if (quoted) {
    p++;
    if (reserve(it, (size_t)(end - p) + 1))
      return -1;
    while (p < end && *p != '"') {
      if (*p == '\\' && p + 1 < end)
        p++;
      it->scratch[n++] = *p++;
    }
    if (p >= end)
      return -1;
    p++; /* closing quote */
  } else {
    const char *start = p;
    while (p < end && *p != ',' && *p != '}')
      p++;
    n = (size_t)(p - start);
    if (n == 4 && memcmp(start, "NULL", 4) == 0) {
      out->type = LOOM_VNULL;
      it->pos = p < end && *p == ',' ? p + 1 : p;
      return 1;
    }
    if (reserve(it, n + 1))
      return -1;
    memcpy(it->scratch, start, n);
  }
  it->scratch[n] = 0;
  it->pos = p < end && *p == ',' ? p + 1 : p;
  return loom_db_text_to_value(it->elem, it->scratch, n, out) == 0 ? 1 : -1;
}
