/* Internal to the SQLite driver (core/sqlite*.c). */
#ifndef LOOM_SQLITE_H
#define LOOM_SQLITE_H

#include <sqlite3.h>
#include "db.h"
#include "sql_lex.h"

extern const loom_db_driver_t loom_sqlite_driver;

/* Rows copied out of SQLite on the worker thread, read on the loop thread.
 * Text and blobs live in one arena; cells hold offsets into it until read. */
typedef struct sq_result {
  loom_db_result_t base;
  loom_value_t *cells;   /* nrows * ncols */
  int row_cap;
  char *arena;
  size_t arena_len, arena_cap;
  size_t *names;         /* arena offsets of the column names */
} sq_result;

sq_result *loom__sq_result_new(sqlite3_stmt *st);
/* Makes r (kept for reuse) ready for a statement's rows: the same as a new
 * result, without allocating when r has room. 0 or LOOM_ENOMEM. */
int loom__sq_result_reset(sq_result *r, sqlite3_stmt *st);
/* A copy of r in one allocation, to hand to another thread. */
/* The rows of r in one block of their own: *spare when it is large enough
 * (spare_cap bytes; then *spare becomes NULL), else a new one. */
sq_result *loom__sq_result_compact(const sq_result *r, void **spare, size_t spare_cap);
void loom__sq_result_destroy(sq_result *r);
/* Appends the statement's current row; 0 or LOOM_ENOMEM. */
int loom__sq_result_add_row(sq_result *r, sqlite3_stmt *st);
/* Cell of a result, row-major. */
void loom__sq_cell(sq_result *r, int row, int col, loom_value_t *out);
extern const loom_db_result_ops_t loom__sq_result_ops;

extern const loom_sql_dialect_t loom__sq_dialect;
int loom__sq_param_count(const char *sql, size_t len);
int loom__sq_only_reads(const char *sql, size_t len);
/* SQLite's name of a result code, "SQLITE_CONSTRAINT_UNIQUE" style. */
const char *loom__sq_code_name(int code);

#endif
