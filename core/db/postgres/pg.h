/* Internal to the PostgreSQL driver (core/pg*.c). */
#ifndef LOOM_PG_H
#define LOOM_PG_H

#include <libpq-fe.h>
#include "db.h"

extern const loom_db_driver_t loom_pg_driver;

loom_db_result_t *loom__pg_result(PGresult *res);
#include "sql_lex.h"
extern const loom_sql_dialect_t loom__pg_dialect;
int loom__pg_param_count(const char *sql, size_t len);

#endif
