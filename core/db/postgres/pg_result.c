/* PostgreSQL results in loom's model: text-format cells mapped by type OID
 * to integers, floats, booleans, binary strings, text and arrays. */
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>
#include "pg.h"

typedef struct pg_result {
  loom_db_result_t base;
  PGresult *res;
  loom_vtype_t types[]; /* per column */
} pg_result;

/* Type OIDs from pg_type.h; libpq does not export them. */
static loom_vtype_t scalar_type(Oid oid) {
  switch (oid) {
  case 16: return LOOM_VBOOL;                        /* bool */
  case 20: case 21: case 23: case 26: case 28: case 29:
    return LOOM_VINT;                                /* int8 int2 int4 oid xid cid */
  case 700: case 701: return LOOM_VFLOAT;            /* float4 float8 */
  case 17: return LOOM_VBLOB;                        /* bytea */
  case 1114: case 1184: return PG_VTEXT_TS;        /* timestamp, timestamptz */
  default: return LOOM_VTEXT; /* text, varchar, numeric, json, date, uuid... */
  }
}

static Oid array_elem(Oid oid) {
  switch (oid) {
  case 1000: return 16;   case 1001: return 17;   case 1005: return 21;
  case 1007: return 23;   case 1016: return 20;   case 1028: return 26;
  case 1021: return 700;  case 1022: return 701;  case 1231: return 1700;
  case 1009: return 25;   case 1015: return 1043; case 1014: return 1042;
  case 199: return 114;   case 3807: return 3802; case 1182: return 1082;
  case 1115: return 1114; case 1185: return 1184; case 2951: return 2950;
  case 1183: return 1083; case 1270: return 1266; case 1003: return 19;
  default: return 0;
  }
}

static const char *column_name(loom_db_result_t *r, int col) {
  return PQfname(((pg_result *)r)->res, col);
}

static void cell(loom_db_result_t *r, int row, int col, loom_value_t *out) {
  pg_result *pr = (pg_result *)r;
  if (PQgetisnull(pr->res, row, col)) {
    out->type = LOOM_VNULL;
    return;
  }
  char *p = PQgetvalue(pr->res, row, col);
  size_t len = (size_t)PQgetlength(pr->res, row, col);
  loom_vtype_t t = pr->types[col];
  if (t == LOOM_VARRAY) {
    out->type = LOOM_VARRAY;
    out->elem = scalar_type(array_elem(PQftype(pr->res, col)));
    out->array = &loom__pg_array_ops;
    out->u.s.p = p;
    out->u.s.len = len;
    return;
  }
  if (loom__pg_text_to_value(t, p, len, out) != 0) {
    out->type = LOOM_VTEXT;
    out->u.s.p = p;
    out->u.s.len = len;
  }
}

static void result_free(loom_db_result_t *r) {
  pg_result *pr = (pg_result *)r;
  PQclear(pr->res);
  free(pr);
}

static const loom_db_result_ops_t pg_result_ops = {column_name, cell, result_free};

loom_db_result_t *loom__pg_result(PGresult *res) {
  /* One allocation: the column types follow the header. */
  int nc = PQnfields(res);
  pg_result *pr = malloc(sizeof *pr + (size_t)nc * sizeof pr->types[0]);
  if (pr == NULL)
    return NULL;
  pr->base.ops = &pg_result_ops;
  pr->res = res;
  pr->base.nrows = PQntuples(res);
  pr->base.ncols = nc;
  const char *tuples = PQcmdTuples(res);
  pr->base.affected = tuples && *tuples ? strtoll(tuples, NULL, 10) : -1;
  pr->base.last_insert_id = 0;
  for (int c = 0; c < nc; c++) {
    Oid oid = PQftype(res, c);
    pr->types[c] = array_elem(oid) ? LOOM_VARRAY : scalar_type(oid);
  }
  return &pr->base;
}
