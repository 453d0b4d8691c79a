/* Reading just enough SQL, for every dialect: where quoted strings and
 * identifiers, comments and dollar-quoted bodies start and end (so a '?',
 * '$1' or ';' inside them counts for nothing), where a statement ends, and
 * how many parameters its placeholders ask for. A driver describes its
 * dialect in a loom_sql_dialect_t; the lexer never names a database. */
#ifndef LOOM_SQL_LEX_H
#define LOOM_SQL_LEX_H

#include <stddef.h>

enum {
  LOOM_SQL_E_STRINGS = 1 << 0,       /* E'...' takes backslash escapes */
  LOOM_SQL_DOLLAR_QUOTES = 1 << 1,   /* $tag$ ... $tag$ bodies */
  LOOM_SQL_NESTED_COMMENTS = 1 << 2, /* a slash-star comment nests */
  LOOM_SQL_HASH_COMMENTS = 1 << 3,   /* '#' starts a line comment */
  LOOM_SQL_DASH_BLANK = 1 << 4,      /* "--" is a comment only before a blank
                                        (or at the very end) */
  LOOM_SQL_EXEC_COMMENTS = 1 << 5    /* slash-star-! comments hold SQL: only
                                        their opener is skipped */
};

/* How placeholders are written. */
typedef enum loom_sql_params {
  LOOM_SQL_PARAMS_NUMBERED, /* $1, $2: the highest number counts */
  LOOM_SQL_PARAMS_QMARK,    /* ?: each one counts */
  LOOM_SQL_PARAMS_MIXED     /* ?, ?NNN, and each distinct :name, @name, $name */
} loom_sql_params_t;

typedef struct loom_sql_dialect {
  const char *quotes;  /* what opens a quoted string or identifier; '[' closes
                          at ']'; a doubled quote stands for itself */
  const char *escapes; /* the quotes inside which a backslash escapes */
  unsigned flags;      /* LOOM_SQL_* */
  loom_sql_params_t params;
} loom_sql_dialect_t;

/* p starts a quoted string or identifier, a comment or a dollar-quoted
 * body: the position after it (end when it is not closed). Else p. sql is
 * the start of the text (what precedes p decides an E'' string). */
const char *loom_sql_skip(const loom_sql_dialect_t *d, const char *sql, const char *p,
                          const char *end);
/* Past blanks and comments. */
const char *loom_sql_skip_blanks(const loom_sql_dialect_t *d, const char *sql, const char *p,
                                 const char *end);
/* Past blanks, comments and opening parentheses: where the first word of
 * the statement starting at p is. */
const char *loom_sql_skip_lead(const loom_sql_dialect_t *d, const char *sql, const char *p,
                               const char *end);
/* 1 when the word at p is w (lowercase letters), whole, in any case. */
int loom_sql_word_at(const char *p, const char *end, const char *w);
/* From p: its statement's top-level ';', or end. */
const char *loom_sql_statement_end(const loom_sql_dialect_t *d, const char *sql, const char *p,
                                   const char *end);
/* 1 when the SQL holds more than one statement ("SELECT 1;" is one). */
int loom_sql_is_script(const loom_sql_dialect_t *d, const char *sql, size_t len);
/* How many parameters the placeholders ask for. */
int loom_sql_param_count(const loom_sql_dialect_t *d, const char *sql, size_t len);
/* 1 when the SQL is one statement that only reads: past blanks, comments
 * and opening parentheses it starts with SELECT, VALUES or EXPLAIN, or with
 * WITH and has no INSERT, UPDATE, DELETE or REPLACE outside quotes and
 * comments. Else 0 (a script, a write, anything not recognized). */
int loom_sql_only_reads(const loom_sql_dialect_t *d, const char *sql, size_t len);
/* 1 for a letter, digit, '_' or a byte of a UTF-8 sequence. */
int loom_sql_name_char(char ch);

#endif
