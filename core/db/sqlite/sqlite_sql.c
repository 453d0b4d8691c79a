/* Reading SQLite SQL on the loop thread, before anything reaches a worker:
 * how many parameters a statement takes, and the names of result codes. */
#include "sqlite.h"

/* SQLite's SQL as the lexer (sql_lex.h) reads it: '', "", `` and []
 * quotes with no escapes, comments that do not nest. Parameters as SQLite
 * numbers them: `?` takes the next number, `?NNN` that number, and each
 * distinct `:name`, `@name` or `$name` the next one. */
const loom_sql_dialect_t loom__sq_dialect = {
  .quotes = "'\"`[",
  .escapes = "",
  .flags = 0,
  .params = LOOM_SQL_PARAMS_MIXED,
};

int loom__sq_param_count(const char *sql, size_t len) {
  return loom_sql_param_count(&loom__sq_dialect, sql, len);
}

int loom__sq_only_reads(const char *sql, size_t len) {
  return loom_sql_only_reads(&loom__sq_dialect, sql, len);
}

const char *loom__sq_code_name(int code) {
  switch (code) {
  case SQLITE_ERROR: return "SQLITE_ERROR";
  case SQLITE_INTERNAL: return "SQLITE_INTERNAL";
  case SQLITE_PERM: return "SQLITE_PERM";
  case SQLITE_ABORT: return "SQLITE_ABORT";
  case SQLITE_BUSY: return "SQLITE_BUSY";
  case SQLITE_BUSY_SNAPSHOT: return "SQLITE_BUSY_SNAPSHOT";
  case SQLITE_LOCKED: return "SQLITE_LOCKED";
  case SQLITE_NOMEM: return "SQLITE_NOMEM";
  case SQLITE_READONLY: return "SQLITE_READONLY";
  case SQLITE_READONLY_DBMOVED: return "SQLITE_READONLY_DBMOVED";
  case SQLITE_INTERRUPT: return "SQLITE_INTERRUPT";
  case SQLITE_IOERR: return "SQLITE_IOERR";
  case SQLITE_CORRUPT: return "SQLITE_CORRUPT";
  case SQLITE_NOTFOUND: return "SQLITE_NOTFOUND";
  case SQLITE_FULL: return "SQLITE_FULL";
  case SQLITE_CANTOPEN: return "SQLITE_CANTOPEN";
  case SQLITE_PROTOCOL: return "SQLITE_PROTOCOL";
  case SQLITE_SCHEMA: return "SQLITE_SCHEMA";
  case SQLITE_TOOBIG: return "SQLITE_TOOBIG";
  case SQLITE_CONSTRAINT: return "SQLITE_CONSTRAINT";
  case SQLITE_CONSTRAINT_CHECK: return "SQLITE_CONSTRAINT_CHECK";
  case SQLITE_CONSTRAINT_FOREIGNKEY: return "SQLITE_CONSTRAINT_FOREIGNKEY";
  case SQLITE_CONSTRAINT_NOTNULL: return "SQLITE_CONSTRAINT_NOTNULL";
  case SQLITE_CONSTRAINT_PRIMARYKEY: return "SQLITE_CONSTRAINT_PRIMARYKEY";
  case SQLITE_CONSTRAINT_UNIQUE: return "SQLITE_CONSTRAINT_UNIQUE";
  case SQLITE_MISMATCH: return "SQLITE_MISMATCH";
  case SQLITE_MISUSE: return "SQLITE_MISUSE";
  case SQLITE_RANGE: return "SQLITE_RANGE";
  case SQLITE_NOTADB: return "SQLITE_NOTADB";
  default: break;
  }
  switch (code & 0xff) {
  case SQLITE_IOERR: return "SQLITE_IOERR";
  case SQLITE_CONSTRAINT: return "SQLITE_CONSTRAINT";
  case SQLITE_BUSY: return "SQLITE_BUSY";
  case SQLITE_LOCKED: return "SQLITE_LOCKED";
  case SQLITE_READONLY: return "SQLITE_READONLY";
  case SQLITE_CANTOPEN: return "SQLITE_CANTOPEN";
  case SQLITE_CORRUPT: return "SQLITE_CORRUPT";
  default: return "SQLITE_ERROR";
  }
}
