/* Results of the SQLite driver: built on the worker thread from a stepping
 * statement, so nothing points into SQLite once the statement moves on. */
#include <stdlib.h>
#include <string.h>
#include "sqlite.h"

static int reserve(sq_result *r, size_t more) {
  if (r->arena_len + more <= r->arena_cap)
    return 0;
  size_t cap = r->arena_cap ? r->arena_cap : 256;
  while (cap < r->arena_len + more)
    cap *= 2;
  char *a = realloc(r->arena, cap);
  if (a == NULL)
    return LOOM_ENOMEM;
  r->arena = a;
  r->arena_cap = cap;
  return 0;
}

static size_t put(sq_result *r, const void *p, size_t len) {
  size_t off = r->arena_len;
  if (len)
    memcpy(r->arena + off, p, len);
  r->arena[off + len] = 0; /* text stays a C string for column names */
  r->arena_len += len + 1;
  return off;
}

static void sq_free(loom_db_result_t *base) {
  sq_result *r = (sq_result *)base;
  free(r->cells);
  free(r->arena);
  free(r->names);
  free(r);
}

static const char *sq_column_name(loom_db_result_t *base, int col) {
  sq_result *r = (sq_result *)base;
  return r->arena + r->names[col];
}

void loom__sq_cell(sq_result *r, int row, int col, loom_value_t *out) {
  *out = r->cells[(size_t)row * (size_t)r->base.ncols + (size_t)col];
  if (out->type == LOOM_VTEXT || out->type == LOOM_VBLOB)
    out->u.s.p = r->arena + (size_t)(uintptr_t)out->u.s.p;
}

static void sq_cell(loom_db_result_t *base, int row, int col, loom_value_t *out) {
  loom__sq_cell((sq_result *)base, row, col, out);
}

const loom_db_result_ops_t loom__sq_result_ops = {sq_column_name, sq_cell, sq_free};

int loom__sq_result_reset(sq_result *r, sqlite3_stmt *st) {
  r->base.ops = &loom__sq_result_ops;
  r->base.nrows = 0;
  r->base.affected = -1;
  r->base.last_insert_id = 0;
  r->arena_len = 0;
  int nc = st ? sqlite3_column_count(st) : 0;
  if (nc > r->base.ncols || r->names == NULL) {
    size_t *names = realloc(r->names, (size_t)(nc ? nc : 1) * sizeof *names);
    if (names == NULL)
      return LOOM_ENOMEM;
    r->names = names;
  }
  /* cells were sized for the old column count */
  if (nc != r->base.ncols)
    r->row_cap = 0;
  r->base.ncols = nc;
  for (int c = 0; c < nc; c++) {
    const char *name = sqlite3_column_name(st, c);
    if (name == NULL)
      name = "?";
    size_t len = strlen(name);
    if (reserve(r, len + 1) != 0)
      return LOOM_ENOMEM;
    r->names[c] = put(r, name, len);
  }
  return 0;
}

static void compact_free(loom_db_result_t *base) { free(base); }

static const char *compact_column_name(loom_db_result_t *base, int col) {
  sq_result *r = (sq_result *)base;
  return r->arena + r->names[col];
}

static const loom_db_result_ops_t compact_ops = {compact_column_name, sq_cell, compact_free};

sq_result *loom__sq_result_compact(const sq_result *r, void **spare, size_t spare_cap) {
  size_t nc = (size_t)r->base.ncols, nr = (size_t)r->base.nrows;
  size_t names = nc * sizeof(size_t), cells = nr * nc * sizeof(loom_value_t);
  size_t need = sizeof(sq_result) + names + cells + r->arena_len;
  sq_result *out;
  if (spare && *spare && need <= spare_cap) {
    out = *spare;
    *spare = NULL;
  } else if ((out = malloc(need)) == NULL) {
    return NULL;
  }
  *out = *r;
  out->base.ops = &compact_ops;
  char *p = (char *)(out + 1);
  out->names = (size_t *)p;
  memcpy(out->names, r->names, names);
  out->cells = (loom_value_t *)(p + names);
  if (cells)
    memcpy(out->cells, r->cells, cells);
  out->arena = p + names + cells;
  if (r->arena_len)
    memcpy(out->arena, r->arena, r->arena_len);
  out->arena_cap = r->arena_len;
  out->row_cap = (int)nr;
  return out;
}

void loom__sq_result_destroy(sq_result *r) {
  if (r)
    sq_free(&r->base);
}

sq_result *loom__sq_result_new(sqlite3_stmt *st) {
  sq_result *r = calloc(1, sizeof *r);
  if (r == NULL)
    return NULL;
  if (loom__sq_result_reset(r, st) != 0) {
    sq_free(&r->base);
    return NULL;
  }
  return r;
}

int loom__sq_result_add_row(sq_result *r, sqlite3_stmt *st) {
  int nc = r->base.ncols;
  if (r->base.nrows == r->row_cap) {
    int cap = r->row_cap ? r->row_cap * 2 : 4;
    loom_value_t *cells = realloc(r->cells, (size_t)cap * (size_t)(nc ? nc : 1) * sizeof *cells);
    if (cells == NULL)
      return LOOM_ENOMEM;
    r->cells = cells;
    r->row_cap = cap;
  }
  loom_value_t *row = r->cells + (size_t)r->base.nrows * (size_t)nc;
  for (int c = 0; c < nc; c++) {
    loom_value_t *v = &row[c];
    switch (sqlite3_column_type(st, c)) {
    case SQLITE_INTEGER:
      v->type = LOOM_VINT;
      v->u.i = sqlite3_column_int64(st, c);
      break;
    case SQLITE_FLOAT:
      v->type = LOOM_VFLOAT;
      v->u.f = sqlite3_column_double(st, c);
      break;
    case SQLITE_NULL:
      v->type = LOOM_VNULL;
      break;
    default: {
      /* The bytes are asked for after the value: SQLite converts first. */
      int blob = sqlite3_column_type(st, c) == SQLITE_BLOB;
      const void *p = blob ? sqlite3_column_blob(st, c) : (const void *)sqlite3_column_text(st, c);
      size_t len = (size_t)sqlite3_column_bytes(st, c);
      if (reserve(r, len + 1) != 0)
        return LOOM_ENOMEM;
      v->type = blob ? LOOM_VBLOB : LOOM_VTEXT;
      v->u.s.p = (const char *)(uintptr_t)put(r, p, len);
      v->u.s.len = len;
    }
    }
  }
  r->base.nrows++;
  return 0;
}
