/* Internal to the PostgreSQL driver (core/db/postgres/). */
#ifndef LOOM_PG_H
#define LOOM_PG_H

#include <libpq-fe.h>
#include "db.h"

extern const loom_db_driver_t loom_pg_driver;

loom_db_result_t *loom__pg_result(PGresult *res);
#include "sql_lex.h"
extern const loom_sql_dialect_t loom__pg_dialect;
int loom__pg_param_count(const char *sql, size_t len);

/* pg_text.c: values in PostgreSQL's text format. A column type hint beside
 * the loom_vtype_t ones: timestamps, made ISO 8601 ('T' between date and
 * time). p is writable and NUL-terminated at len: bytea is decoded and
 * timestamps rewritten in place. */
#define PG_VTEXT_TS ((loom_vtype_t)100)
int loom__pg_text_to_value(loom_vtype_t type, char *p, size_t len, loom_value_t *out);
extern const loom_db_array_ops_t loom__pg_array_ops;

#endif
