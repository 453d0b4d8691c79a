/* MySQL results in loom's model. Rows are copied out of the client library
 * as they are fetched (text protocol rows and binary protocol binds alike)
 * into one cell array and one byte arena per result: integers stay
 * integers (unsigned beyond 2^63 become decimal strings), DECIMAL is text,
 * FLOAT/DOUBLE numbers, dates ISO 8601 like the PostgreSQL driver's, binary
 * strings blobs with their NUL bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "my.h"

#define STR_BUF_START 256
#define STR_BUF_KEEP (64 * 1024) /* longer values are read straight into the arena */

typedef struct my_cell {
  loom_vtype_t type;
  size_t len;
  union {
    int64_t i;
    double f;
    size_t off;
  } u;
} my_cell;

/* How a column's values are decoded. */
enum { K_INT, K_UINT, K_FLOAT, K_DOUBLE, K_TEXT, K_BLOB, K_DATE, K_DATETIME, K_TIME,
       K_BIT, K_NULL };

struct my_result {
  loom_db_result_t base;
  char *names;        /* NUL-separated column names */
  size_t *name_off;
  unsigned char *kinds;
  my_cell *cells;
  int rows_cap;
  char *arena;
  size_t arena_len, arena_cap;
};

static int column_kind(const MYSQL_FIELD *f) {
  int uns = (f->flags & UNSIGNED_FLAG) != 0;
  switch (f->type) {
  case MYSQL_TYPE_TINY: case MYSQL_TYPE_SHORT: case MYSQL_TYPE_INT24:
  case MYSQL_TYPE_LONG: case MYSQL_TYPE_YEAR:
    return K_INT;
  case MYSQL_TYPE_LONGLONG: return uns ? K_UINT : K_INT;
  case MYSQL_TYPE_FLOAT: return K_FLOAT;
  case MYSQL_TYPE_DOUBLE: return K_DOUBLE;
  case MYSQL_TYPE_DECIMAL: case MYSQL_TYPE_NEWDECIMAL: return K_TEXT;
  case MYSQL_TYPE_DATE: case MYSQL_TYPE_NEWDATE: return K_DATE;
  case MYSQL_TYPE_DATETIME: case MYSQL_TYPE_TIMESTAMP: return K_DATETIME;
  case MYSQL_TYPE_TIME: return K_TIME;
  case MYSQL_TYPE_BIT: return K_BIT;
  case MYSQL_TYPE_NULL: return K_NULL;
  default:
    /* charset 63 is "binary": BLOB, BINARY, VARBINARY, GEOMETRY. */
    return f->charsetnr == 63 ? K_BLOB : K_TEXT;
  }
}

/* ---- the result object --------------------------------------------------------- */

static const char *column_name(loom_db_result_t *r, int col) {
  my_result *mr = (my_result *)r;
  return mr->names + mr->name_off[col];
}

static void cell(loom_db_result_t *r, int row, int col, loom_value_t *out) {
  my_result *mr = (my_result *)r;
  const my_cell *c = &mr->cells[(size_t)row * (size_t)r->ncols + (size_t)col];
  out->type = c->type;
  out->elem = LOOM_VNULL;
  switch (c->type) {
  case LOOM_VINT: out->u.i = c->u.i; break;
  case LOOM_VFLOAT: out->u.f = c->u.f; break;
  case LOOM_VTEXT: case LOOM_VBLOB:
    out->u.s.p = mr->arena + c->u.off;
    out->u.s.len = c->len;
    break;
  default: break;
  }
}

static void result_free(loom_db_result_t *r) {
  my_result *mr = (my_result *)r;
  free(mr->names);
  free(mr->name_off);
  free(mr->kinds);
  free(mr->cells);
  free(mr->arena);
  free(mr);
}

static const loom_db_result_ops_t my_result_ops = {column_name, cell, result_free};

loom_db_result_t *loom__my_result_base(my_result *r) { return r ? &r->base : NULL; }

void loom__my_result_set_counts(my_result *r, int64_t affected, int64_t last_id) {
  r->base.affected = affected;
  r->base.last_insert_id = last_id;
}

my_result *loom__my_result_new(const MYSQL_FIELD *fields, unsigned ncols) {
  my_result *r = calloc(1, sizeof *r);
  if (r == NULL)
    return NULL;
  r->base.ops = &my_result_ops;
  r->base.ncols = (int)ncols;
  r->base.affected = -1;
  size_t total = 1;
  for (unsigned i = 0; i < ncols; i++)
    total += strlen(fields[i].name) + 1;
  r->names = malloc(total);
  r->name_off = malloc((ncols ? ncols : 1) * sizeof *r->name_off);
  r->kinds = malloc(ncols ? ncols : 1);
  if (r->names == NULL || r->name_off == NULL || r->kinds == NULL) {
    result_free(&r->base);
    return NULL;
  }
  size_t off = 0;
  for (unsigned i = 0; i < ncols; i++) {
    size_t n = strlen(fields[i].name) + 1;
    memcpy(r->names + off, fields[i].name, n);
    r->name_off[i] = off;
    off += n;
    r->kinds[i] = (unsigned char)column_kind(&fields[i]);
  }
  return r;
}

static my_cell *add_row(my_result *r) {
  if (r->base.nrows == r->rows_cap) {
    int cap = r->rows_cap ? r->rows_cap * 2 : 4;
    size_t nc = r->base.ncols ? (size_t)r->base.ncols : 1;
    my_cell *c = realloc(r->cells, (size_t)cap * nc * sizeof *c);
    if (c == NULL)
      return NULL;
    r->cells = c;
    r->rows_cap = cap;
  }
  return &r->cells[(size_t)r->base.nrows * (size_t)r->base.ncols];
}

/* Room for n bytes (and a NUL) at the end of the arena; returns the offset. */
static long reserve(my_result *r, size_t n) {
  if (r->arena_len + n + 1 > r->arena_cap) {
    size_t cap = r->arena_cap ? r->arena_cap : 256;
    while (cap < r->arena_len + n + 1)
      cap *= 2;
    char *a = realloc(r->arena, cap);
    if (a == NULL)
      return -1;
    r->arena = a;
    r->arena_cap = cap;
  }
  long off = (long)r->arena_len;
  r->arena_len += n + 1;
  r->arena[off + (long)n] = 0;
  return off;
}

static int put_bytes(my_result *r, my_cell *c, loom_vtype_t type, const char *p, size_t n) {
  long off = reserve(r, n);
  if (off < 0)
    return LOOM_ENOMEM;
  if (n)
    memcpy(r->arena + off, p, n);
  c->type = type;
  c->u.off = (size_t)off;
  c->len = n;
  return 0;
}

/* "04:05:06.500000" -> "04:05:06.5"; "04:05:06.000000" -> "04:05:06". */
static size_t trim_fraction(const char *p, size_t n) {
  const char *dot = memchr(p, '.', n);
  if (dot == NULL)
    return n;
  while (n > (size_t)(dot - p) + 1 && p[n - 1] == '0')
    n--;
  if (n == (size_t)(dot - p) + 1)
    n--;
  return n;
}

static int put_uint_text(my_result *r, my_cell *c, unsigned long long v) {
  char buf[24];
  int n = snprintf(buf, sizeof buf, "%llu", v);
  return put_bytes(r, c, LOOM_VTEXT, buf, (size_t)n);
}

/* The shortest decimal form that reads back as the same float, which is
 * what the server prints for FLOAT columns. */
static double float_value(float f) {
  char buf[32];
  for (int prec = 6; prec <= 9; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
    if ((float)strtod(buf, NULL) == f)
      break;
  }
  return strtod(buf, NULL);
}

/* ---- text protocol ----------------------------------------------------------------- */

int loom__my_result_text_row(my_result *r, MYSQL_ROW row, const unsigned long *lens) {
  my_cell *cells = add_row(r);
  if (cells == NULL)
    return LOOM_ENOMEM;
  for (int i = 0; i < r->base.ncols; i++) {
    my_cell *c = &cells[i];
    const char *p = row[i];
    size_t n = lens[i];
    int rc = 0;
    if (p == NULL) {
      c->type = LOOM_VNULL;
      continue;
    }
    switch (r->kinds[i]) {
    case K_INT:
      c->type = LOOM_VINT;
      c->u.i = strtoll(p, NULL, 10);
      break;
    case K_UINT: {
      unsigned long long v = strtoull(p, NULL, 10);
      if (v > (unsigned long long)INT64_MAX) {
        rc = put_uint_text(r, c, v);
      } else {
        c->type = LOOM_VINT;
        c->u.i = (int64_t)v;
      }
      break;
    }
    case K_FLOAT: case K_DOUBLE:
      c->type = LOOM_VFLOAT;
      c->u.f = strtod(p, NULL);
      break;
    case K_BIT: {
      uint64_t v = 0;
      for (size_t k = 0; k < n; k++)
        v = v << 8 | (unsigned char)p[k];
      c->type = LOOM_VINT;
      c->u.i = (int64_t)v;
      break;
    }
    case K_NULL:
      c->type = LOOM_VNULL;
      break;
    case K_DATETIME:
    case K_TIME:
      rc = put_bytes(r, c, LOOM_VTEXT, p, trim_fraction(p, n));
      if (rc == 0 && r->kinds[i] == K_DATETIME && c->len > 10 && r->arena[c->u.off + 10] == ' ')
        r->arena[c->u.off + 10] = 'T';
      break;
    case K_BLOB:
      rc = put_bytes(r, c, LOOM_VBLOB, p, n);
      break;
    default:
      rc = put_bytes(r, c, LOOM_VTEXT, p, n);
    }
    if (rc)
      return rc;
  }
  r->base.nrows++;
  return 0;
}

/* ---- binary protocol ---------------------------------------------------------------- */

void loom__my_binds_free(my_binds *b) {
  for (unsigned i = 0; i < b->cap; i++)
    free(b->cols[i].buf);
  free(b->cols);
  free(b->bind);
  memset(b, 0, sizeof *b);
}

int loom__my_binds_setup(my_binds *b, MYSQL_STMT *stmt) {
  unsigned n = mysql_stmt_field_count(stmt);
  if (n > b->cap) {
    MYSQL_BIND *bind = realloc(b->bind, n * sizeof *bind);
    if (bind == NULL)
      return LOOM_ENOMEM;
    b->bind = bind;
    my_col *cols = realloc(b->cols, n * sizeof *cols);
    if (cols == NULL)
      return LOOM_ENOMEM;
    memset(cols + b->cap, 0, (n - b->cap) * sizeof *cols);
    b->cols = cols;
    b->cap = n;
  }
  b->n = n;
  memset(b->bind, 0, n * sizeof *b->bind);
  const MYSQL_FIELD *fields = stmt->fields;
  for (unsigned i = 0; i < n; i++) {
    MYSQL_BIND *bd = &b->bind[i];
    my_col *col = &b->cols[i];
    bd->is_null = &col->is_null;
    bd->error = &col->error;
    bd->length = &col->len;
    switch (column_kind(&fields[i])) {
    case K_INT: case K_UINT:
      bd->buffer_type = MYSQL_TYPE_LONGLONG;
      bd->buffer = &col->v.i;
      bd->is_unsigned = (fields[i].flags & UNSIGNED_FLAG) != 0;
      break;
    case K_BIT: /* the library converts BIT to nothing else: its bytes */
      bd->buffer_type = MYSQL_TYPE_BLOB;
      bd->buffer = &col->v.i;
      bd->buffer_length = 8;
      break;
    case K_FLOAT:
      bd->buffer_type = MYSQL_TYPE_FLOAT;
      bd->buffer = &col->v.f;
      break;
    case K_DOUBLE:
      bd->buffer_type = MYSQL_TYPE_DOUBLE;
      bd->buffer = &col->v.d;
      break;
    case K_DATE: case K_DATETIME: case K_TIME:
      bd->buffer_type = fields[i].type == MYSQL_TYPE_NEWDATE ? MYSQL_TYPE_DATE : fields[i].type;
      bd->buffer = &col->v.t;
      bd->buffer_length = sizeof col->v.t;
      break;
    case K_NULL:
      bd->buffer_type = MYSQL_TYPE_NULL;
      break;
    default:
      if (col->buf == NULL) {
        col->buf = malloc(STR_BUF_START);
        if (col->buf == NULL)
          return LOOM_ENOMEM;
        col->cap = STR_BUF_START;
      }
      bd->buffer_type = MYSQL_TYPE_BLOB;
      bd->buffer = col->buf;
      bd->buffer_length = col->cap;
    }
  }
  return mysql_stmt_bind_result(stmt, b->bind) ? LOOM_EDB_PROTOCOL : 0;
}

static int put_time(my_result *r, my_cell *c, const MYSQL_TIME *t, int kind) {
  char buf[64];
  int n;
  if (kind == K_DATE) {
    n = snprintf(buf, sizeof buf, "%04u-%02u-%02u", t->year, t->month, t->day);
  } else if (kind == K_TIME) {
    n = snprintf(buf, sizeof buf, "%s%02u:%02u:%02u", t->neg ? "-" : "",
                 t->day * 24 + t->hour, t->minute, t->second);
  } else {
    n = snprintf(buf, sizeof buf, "%04u-%02u-%02uT%02u:%02u:%02u", t->year, t->month, t->day,
                 t->hour, t->minute, t->second);
  }
  if (kind != K_DATE && t->second_part) {
    n += snprintf(buf + n, sizeof buf - (size_t)n, ".%06lu", t->second_part);
    n = (int)trim_fraction(buf, (size_t)n);
  }
  return put_bytes(r, c, LOOM_VTEXT, buf, (size_t)n);
}

int loom__my_result_bin_row(my_result *r, my_binds *b, MYSQL_STMT *stmt) {
  my_cell *cells = add_row(r);
  if (cells == NULL)
    return LOOM_ENOMEM;
  int rebind = 0;
  for (int i = 0; i < r->base.ncols && (unsigned)i < b->n; i++) {
    my_cell *c = &cells[i];
    my_col *col = &b->cols[i];
    int kind = r->kinds[i], rc = 0;
    if (col->is_null || kind == K_NULL) {
      c->type = LOOM_VNULL;
      continue;
    }
    switch (kind) {
    case K_INT:
      c->type = LOOM_VINT;
      c->u.i = col->v.i;
      break;
    case K_BIT: {
      const unsigned char *p = (const unsigned char *)&col->v.i;
      uint64_t v = 0;
      for (unsigned long k = 0; k < col->len && k < 8; k++)
        v = v << 8 | p[k];
      c->type = LOOM_VINT;
      c->u.i = (int64_t)v;
      break;
    }
    case K_UINT:
      if ((unsigned long long)col->v.i > (unsigned long long)INT64_MAX) {
        rc = put_uint_text(r, c, (unsigned long long)col->v.i);
      } else {
        c->type = LOOM_VINT;
        c->u.i = col->v.i;
      }
      break;
    case K_FLOAT:
      c->type = LOOM_VFLOAT;
      c->u.f = float_value(col->v.f);
      break;
    case K_DOUBLE:
      c->type = LOOM_VFLOAT;
      c->u.f = col->v.d;
      break;
    case K_DATE: case K_DATETIME: case K_TIME:
      rc = put_time(r, c, &col->v.t, kind);
      break;
    default: {
      loom_vtype_t t = kind == K_BLOB ? LOOM_VBLOB : LOOM_VTEXT;
      unsigned long len = col->len;
      if (len <= col->cap) {
        rc = put_bytes(r, c, t, col->buf, len);
        break;
      }
      /* Truncated: read the whole value straight into the arena. */
      long off = reserve(r, len);
      if (off < 0)
        return LOOM_ENOMEM;
      MYSQL_BIND one;
      memset(&one, 0, sizeof one);
      unsigned long got = 0;
      my_bool isnull = 0, err = 0;
      one.buffer_type = MYSQL_TYPE_BLOB;
      one.buffer = r->arena + off;
      one.buffer_length = len;
      one.length = &got;
      one.is_null = &isnull;
      one.error = &err;
      if (mysql_stmt_fetch_column(stmt, &one, (unsigned)i, 0) != 0)
        return LOOM_EDB_PROTOCOL;
      r->arena[off + (long)len] = 0;
      c->type = t;
      c->u.off = (size_t)off;
      c->len = len;
      /* Next rows of this column probably are as long: grow the buffer
       * (bound again before the next statement's fetch). */
      if (len <= STR_BUF_KEEP) {
        char *nb = realloc(col->buf, len);
        if (nb) {
          col->buf = nb;
          col->cap = len;
          b->bind[i].buffer = nb;
          b->bind[i].buffer_length = len;
          rebind = 1;
        }
      }
    }
    }
    if (rc)
      return rc;
  }
  r->base.nrows++;
  if (rebind && mysql_stmt_bind_result(stmt, b->bind))
    return LOOM_EDB_PROTOCOL;
  return 0;
}
