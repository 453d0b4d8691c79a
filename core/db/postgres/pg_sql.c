/* PostgreSQL's SQL as the lexer (sql_lex.h) reads it: quoted strings and
 * identifiers with doubled quotes, E'' strings with backslash escapes,
 * dollar-quoted bodies, nested comments, $n placeholders. */
#include "pg.h"

const loom_sql_dialect_t loom__pg_dialect = {
  .quotes = "'\"",
  .escapes = "",
  .flags = LOOM_SQL_E_STRINGS | LOOM_SQL_DOLLAR_QUOTES | LOOM_SQL_NESTED_COMMENTS,
  .params = LOOM_SQL_PARAMS_NUMBERED,
};

int loom__pg_param_count(const char *sql, size_t len) {
  return loom_sql_param_count(&loom__pg_dialect, sql, len);
}
