/* core/db/sql_lex: quotes, comments and dollar quoting as each dialect has
 * them; placeholders inside strings and comments count for nothing. The
 * dialects here are built the way the drivers build theirs. */
#include <string.h>
#include "runner.h"
#include "sql_lex.h"

static const loom_sql_dialect_t dollar = {
  "'\"", "", LOOM_SQL_E_STRINGS | LOOM_SQL_DOLLAR_QUOTES | LOOM_SQL_NESTED_COMMENTS,
  LOOM_SQL_PARAMS_NUMBERED};
static const loom_sql_dialect_t qmark = {
  "'\"`", "'\"", LOOM_SQL_HASH_COMMENTS | LOOM_SQL_DASH_BLANK | LOOM_SQL_EXEC_COMMENTS,
  LOOM_SQL_PARAMS_QMARK};
static const loom_sql_dialect_t mixed = {"'\"`[", "", 0, LOOM_SQL_PARAMS_MIXED};

static int count(const loom_sql_dialect_t *d, const char *sql) {
  return loom_sql_param_count(d, sql, strlen(sql));
}

static int script(const loom_sql_dialect_t *d, const char *sql) {
  return loom_sql_is_script(d, sql, strlen(sql));
}

TEST_IMPL(sql_lex_quotes) {
  ASSERT_EQ(count(&dollar, "SELECT '$1', \"$2\", $3"), 3);
  ASSERT_EQ(count(&dollar, "SELECT 'it''s $4', $1"), 1);
  /* E'' strings take backslash escapes; plain ones do not. */
  ASSERT_EQ(count(&dollar, "SELECT E'\\' $2', $1"), 1);
  ASSERT_EQ(count(&dollar, "SELECT '\\' $2 '"), 2);
  ASSERT_EQ(count(&dollar, "SELECT 'unclosed $3"), 0);
  ASSERT_EQ(count(&qmark, "SELECT '?', \"?\", `?`, ?"), 1);
  ASSERT_EQ(count(&qmark, "SELECT 'a\\'?', ?"), 1);
  ASSERT_EQ(count(&qmark, "SELECT `a\\` + ?"), 1); /* no escapes in `` */
  ASSERT_EQ(count(&qmark, "SELECT 'a''?', ?"), 1);
  ASSERT_EQ(count(&mixed, "SELECT '?', \"?\", `?`, [?], ?"), 1);
}

TEST_IMPL(sql_lex_comments) {
  ASSERT_EQ(count(&dollar, "SELECT -- $3\n $1"), 1);
  ASSERT_EQ(count(&qmark, "SELECT -- ?\n ?"), 1);
  /* "--" before a non-blank is two minus signs there. */
  ASSERT_EQ(count(&qmark, "SELECT 1--?"), 1);
  ASSERT_EQ(count(&dollar, "SELECT 1--$1"), 0);
  ASSERT_EQ(count(&qmark, "SELECT # ?\n ?"), 1);
  ASSERT_EQ(count(&dollar, "SELECT 1 # $1"), 1); /* an operator there */
  /* Block comments nest in one dialect, not in the other. */
  ASSERT_EQ(count(&dollar, "SELECT /* /* $3 */ $2 */ $1"), 1);
  ASSERT_EQ(count(&qmark, "SELECT /* /* ? */ ? */ ?"), 2);
  ASSERT_EQ(count(&mixed, "SELECT /* /* ? */ ? */ ?"), 2);
  /* An executable comment holds SQL. */
  ASSERT_EQ(count(&qmark, "SELECT /*! ? */ 1"), 1);
  ASSERT_EQ(count(&qmark, "SELECT 1 /* ?"), 0);
  const char *sql = "  /* a */ -- b\n  SELECT";
  ASSERT(loom_sql_skip_blanks(&dollar, sql, sql, sql + strlen(sql)) == strstr(sql, "SELECT"));
  sql = "# a\nSELECT";
  ASSERT(loom_sql_skip_blanks(&qmark, sql, sql, sql + strlen(sql)) == sql + 4);
  ASSERT(loom_sql_skip_blanks(&dollar, sql, sql, sql + strlen(sql)) == sql);
}

TEST_IMPL(sql_lex_dollar_quotes) {
  ASSERT_EQ(count(&dollar, "SELECT $fn$ $1 ; $fn$, $2"), 2);
  ASSERT_EQ(count(&dollar, "SELECT $$ $3 $$"), 0);
  ASSERT_EQ(count(&dollar, "SELECT $fn$ $other$ $3 $fn$"), 0);
  ASSERT_EQ(count(&dollar, "SELECT $a$ $3"), 0); /* not closed */
  ASSERT_EQ(count(&dollar, "SELECT $1$"), 1);    /* $1 is no tag */
  ASSERT_EQ(count(&dollar, "SELECT a$1"), 0);    /* part of a name */
  ASSERT_EQ(script(&dollar, "CREATE FUNCTION f() AS $$ SELECT 1; SELECT 2 $$"), 0);
  /* Only one dialect quotes with dollars. */
  ASSERT_EQ(count(&mixed, "SELECT $$ ? $$"), 1);
}

TEST_IMPL(sql_lex_placeholders) {
  ASSERT_EQ(count(&dollar, "SELECT $2, $10, $1"), 10);
  ASSERT_EQ(count(&qmark, "SELECT ?, ?, ?"), 3);
  ASSERT_EQ(count(&mixed, "SELECT ?, ?5, :a, :a, @b, $c, 'x:y', a::int"), 8);
  ASSERT_EQ(count(&mixed, "SELECT ?, ?"), 2);
}

TEST_IMPL(sql_lex_statements) {
  ASSERT_EQ(script(&dollar, "SELECT ';'"), 0);
  ASSERT_EQ(script(&dollar, "SELECT 1;"), 0);
  ASSERT_EQ(script(&dollar, "SELECT 1; -- done\n ;"), 0);
  ASSERT_EQ(script(&dollar, "SELECT 1; SELECT 2"), 1);
  ASSERT_EQ(script(&dollar, "SELECT 1 /* ; */"), 0);
  const char *sql = "SELECT ';' -- ;\n; SELECT 2";
  const char *end = sql + strlen(sql);
  ASSERT(loom_sql_statement_end(&dollar, sql, sql, end) == strchr(sql + 16, ';'));
}

static int reads(const char *sql) {
  return loom_sql_only_reads(&mixed, sql, strlen(sql));
}

/* What may run on a reader beside the one writer: statements that only
 * read, told from their first word; a write hidden in a WITH counts
 * outside quotes and comments only. */
TEST_IMPL(sql_lex_only_reads) {
  ASSERT_EQ(reads("SELECT 1"), 1);
  ASSERT_EQ(reads("  -- a note\n /* and one */ (select v FROM t)"), 1);
  ASSERT_EQ(reads("VALUES (1), (2)"), 1);
  ASSERT_EQ(reads("explain query plan SELECT 1"), 1);
  ASSERT_EQ(reads("SELECTED"), 0); /* a word, not its prefix */
  ASSERT_EQ(reads("INSERT INTO t VALUES (1)"), 0);
  ASSERT_EQ(reads("PRAGMA user_version = 3"), 0);
  ASSERT_EQ(reads(""), 0);
  ASSERT_EQ(reads("WITH x AS (SELECT 1) SELECT * FROM x"), 1);
  ASSERT_EQ(reads("WITH x AS (SELECT 1) DELETE FROM t WHERE id IN x"), 0);
  ASSERT_EQ(reads("with x as (select 1) update t set a = 1"), 0);
  ASSERT_EQ(reads("WITH x AS (SELECT 'delete' AS w) SELECT w FROM x"), 1);
  ASSERT_EQ(reads("WITH x AS (SELECT 1 /* insert */) SELECT * FROM x -- replace"), 1);
  ASSERT_EQ(reads("WITH x AS (SELECT 1) SELECT updated FROM x"), 1);
  /* Two statements are a script: the writer runs it. */
  ASSERT_EQ(reads("SELECT 1; DELETE FROM t"), 0);
  ASSERT_EQ(reads("SELECT 1;"), 1);
}
