/* Internal to the PostgreSQL driver (core/pg*.c). */
#ifndef LOOM_PG_H
#define LOOM_PG_H

#include <libpq-fe.h>
#include "db.h"

extern const loom_db_driver_t loom_pg_driver;

loom_db_result_t *loom__pg_result(PGresult *res);
int loom__pg_param_count(const char *sql, size_t len);
/* 1 when the SQL holds more than one statement. */
int loom__pg_is_script(const char *sql, size_t len);
/* From p: the end of its statement (its top-level ';', or end); past
 * blanks and comments. sql is the start of the text (for E'' strings). */
const char *loom__pg_statement_end(const char *sql, const char *p, const char *end);
const char *loom__pg_skip_blanks(const char *sql, const char *p, const char *end);

#endif
