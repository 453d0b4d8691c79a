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

/* Array cells are in the driver's format: the cell names the driver's
 * reader of it. */
void loom_db_array_begin(loom_db_array_iter_t *it, const loom_value_t *cell) {
  it->pos = cell->u.s.p;
  it->end = cell->u.s.p + cell->u.s.len;
  it->elem = cell->elem;
  it->ops = cell->array;
  it->scratch = NULL;
  it->scratch_cap = 0;
  if (it->ops->begin)
    it->ops->begin(it);
}

int loom_db_array_next(loom_db_array_iter_t *it, loom_value_t *out) {
  out->array = NULL;
  return it->ops->next(it, out);
}

void loom_db_array_done(loom_db_array_iter_t *it) {
  free(it->scratch);
  it->scratch = NULL;
  it->scratch_cap = 0;
}

int loom_db_array_reserve(loom_db_array_iter_t *it, size_t n) {
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
