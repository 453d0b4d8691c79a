/* Reading just enough PostgreSQL SQL to count $n placeholders, so a wrong
 * number of parameters is caught before anything is sent, and to tell a
 * script of several statements from one. Quoted strings, quoted
 * identifiers, dollar-quoted bodies and comments are skipped. */
#include <ctype.h>
#include <string.h>
#include "pg.h"

/* Skips a $tag$ ... $tag$ body starting at p (on the first '$'); returns
 * the position after it, or p when this is not a dollar quote. */
static const char *skip_dollar_quote(const char *p, const char *end) {
  const char *q = p + 1;
  while (q < end && (isalnum((unsigned char)*q) || *q == '_'))
    q++;
  if (q >= end || *q != '$' || (q > p + 1 && isdigit((unsigned char)p[1])))
    return p;
  size_t tag = (size_t)(q - p + 1);
  for (const char *s = q + 1; s + tag <= end; s++)
    if (*s == '$' && memcmp(s, p, tag) == 0)
      return s + tag;
  return end;
}

static int ident_char(char ch) {
  return isalnum((unsigned char)ch) || ch == '_';
}

/* The position after the lexical unit at p: a quoted string or identifier,
 * a comment, a dollar-quoted body, or else one character. */
static const char *skip_unit(const char *sql, const char *p, const char *end) {
  char ch = *p;
  if (ch == '\'' || ch == '"') {
    /* E'...' strings escape quotes with a backslash too. */
    int escapes = ch == '\'' && p > sql && (p[-1] == 'E' || p[-1] == 'e') &&
                  (p - 1 == sql || !ident_char(p[-2]));
    for (p++; p < end; p++) {
      if (escapes && *p == '\\') {
        p++;
        continue;
      }
      if (*p == ch) {
        if (p + 1 < end && p[1] == ch) {
          p++;
          continue;
        }
        break;
      }
    }
    return p < end ? p + 1 : end;
  }
  if (ch == '-' && p + 1 < end && p[1] == '-') {
    while (p < end && *p != '\n')
      p++;
    return p;
  }
  if (ch == '/' && p + 1 < end && p[1] == '*') {
    int depth = 1;
    p += 2;
    while (p < end && depth > 0) {
      if (*p == '/' && p + 1 < end && p[1] == '*') {
        depth++;
        p += 2;
      } else if (*p == '*' && p + 1 < end && p[1] == '/') {
        depth--;
        p += 2;
      } else {
        p++;
      }
    }
    return p;
  }
  if (ch == '$') {
    const char *after = skip_dollar_quote(p, end);
    return after == p ? p + 1 : after;
  }
  return p + 1;
}

int loom__pg_param_count(const char *sql, size_t len) {
  const char *p = sql, *end = sql + len;
  int max = 0;
  while (p < end) {
    if (*p == '$' && p + 1 < end && isdigit((unsigned char)p[1]) &&
        (p == sql || !ident_char(p[-1]))) {
      int n = 0;
      for (p++; p < end && isdigit((unsigned char)*p); p++)
        n = n < 100000 ? n * 10 + (*p - '0') : n;
      if (n > max)
        max = n;
    } else {
      p = skip_unit(sql, p, end);
    }
  }
  return max;
}

const char *loom__pg_skip_blanks(const char *sql, const char *p, const char *end) {
  while (p < end) {
    if (isspace((unsigned char)*p)) {
      p++;
    } else if ((*p == '-' && p + 1 < end && p[1] == '-') || (*p == '/' && p + 1 < end && p[1] == '*')) {
      p = skip_unit(sql, p, end);
    } else {
      break;
    }
  }
  return p;
}

const char *loom__pg_statement_end(const char *sql, const char *p, const char *end) {
  while (p < end && *p != ';')
    p = skip_unit(sql, p, end);
  return p;
}

int loom__pg_is_script(const char *sql, size_t len) {
  const char *end = sql + len;
  const char *p = loom__pg_statement_end(sql, sql, end);
  /* What follows the first ';' counts only if it is more than blanks,
   * comments and empty statements: "SELECT 1;" is one statement. */
  for (;;) {
    p = loom__pg_skip_blanks(sql, p, end);
    if (p < end && *p == ';')
      p++;
    else
      return p < end;
  }
}
