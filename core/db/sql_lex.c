/* The SQL lexer (sql_lex.h). */
#include <ctype.h>
#include <string.h>
#include "sql_lex.h"

static int ident_char(char ch) {
  return isalnum((unsigned char)ch) || ch == '_';
}

int loom_sql_name_char(char ch) {
  return ident_char(ch) || (unsigned char)ch >= 0x80;
}

static int is_blank(char ch) {
  return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

/* A $tag$ ... $tag$ body starting at p (on the first '$'): the position
 * after it, or p when this is not a dollar quote ($1 is a placeholder). */
static const char *skip_dollar_quote(const char *p, const char *end) {
  const char *q = p + 1;
  while (q < end && ident_char(*q))
    q++;
  if (q >= end || *q != '$' || (q > p + 1 && isdigit((unsigned char)p[1])))
    return p;
  size_t tag = (size_t)(q - p + 1);
  for (const char *s = q + 1; s + tag <= end; s++)
    if (*s == '$' && memcmp(s, p, tag) == 0)
      return s + tag;
  return end;
}

static const char *skip_quoted(const loom_sql_dialect_t *d, const char *sql, const char *p,
                               const char *end) {
  char open = *p, close = open == '[' ? ']' : open;
  int escapes = strchr(d->escapes, open) != NULL;
  if (!escapes && (d->flags & LOOM_SQL_E_STRINGS) && open == '\'' && p > sql &&
      (p[-1] == 'E' || p[-1] == 'e') && (p - 1 == sql || !ident_char(p[-2])))
    escapes = 1;
  for (p++; p < end; p++) {
    if (escapes && *p == '\\') {
      p++;
      continue;
    }
    if (*p == close) {
      if (open != '[' && p + 1 < end && p[1] == close) {
        p++;
        continue;
      }
      return p + 1;
    }
  }
  return end;
}

static const char *skip_line(const char *p, const char *end) {
  while (p < end && *p != '\n')
    p++;
  return p;
}

static const char *skip_block_comment(const loom_sql_dialect_t *d, const char *p,
                                      const char *end) {
  if ((d->flags & LOOM_SQL_EXEC_COMMENTS) && p + 2 < end &&
      (p[2] == '!' || (p[2] == 'M' && p + 3 < end && p[3] == '!')))
    return p + 3;
  int depth = 1;
  for (p += 2; p < end;) {
    if (*p == '*' && p + 1 < end && p[1] == '/') {
      p += 2;
      if (--depth == 0)
        return p;
    } else if ((d->flags & LOOM_SQL_NESTED_COMMENTS) && *p == '/' && p + 1 < end && p[1] == '*') {
      depth++;
      p += 2;
    } else {
      p++;
    }
  }
  return end;
}

const char *loom_sql_skip(const loom_sql_dialect_t *d, const char *sql, const char *p,
                          const char *end) {
  char ch = *p;
  if (ch && strchr(d->quotes, ch))
    return skip_quoted(d, sql, p, end);
  if (ch == '#' && (d->flags & LOOM_SQL_HASH_COMMENTS))
    return skip_line(p, end);
  if (ch == '-' && p + 1 < end && p[1] == '-') {
    if (!(d->flags & LOOM_SQL_DASH_BLANK) || (p + 2 < end && is_blank(p[2])))
      return skip_line(p, end);
    return p + 2 == end ? end : p;
  }
  if (ch == '/' && p + 1 < end && p[1] == '*')
    return skip_block_comment(d, p, end);
  if (ch == '$' && (d->flags & LOOM_SQL_DOLLAR_QUOTES))
    return skip_dollar_quote(p, end);
  return p;
}

/* The position after the lexical unit at p: a quoted part, or else one
 * character. */
static const char *next_unit(const loom_sql_dialect_t *d, const char *sql, const char *p,
                             const char *end) {
  const char *q = loom_sql_skip(d, sql, p, end);
  return q == p ? p + 1 : q;
}

const char *loom_sql_skip_blanks(const loom_sql_dialect_t *d, const char *sql, const char *p,
                                 const char *end) {
  while (p < end) {
    if (isspace((unsigned char)*p)) {
      p++;
      continue;
    }
    if (*p == '-' || *p == '/' || *p == '#') {
      const char *q = loom_sql_skip(d, sql, p, end);
      if (q != p) {
        p = q;
        continue;
      }
    }
    break;
  }
  return p;
}

const char *loom_sql_statement_end(const loom_sql_dialect_t *d, const char *sql, const char *p,
                                   const char *end) {
  while (p < end && *p != ';')
    p = next_unit(d, sql, p, end);
  return p;
}

int loom_sql_is_script(const loom_sql_dialect_t *d, const char *sql, size_t len) {
  const char *end = sql + len;
  const char *p = loom_sql_statement_end(d, sql, sql, end);
  /* What follows the first ';' counts only if it is more than blanks,
   * comments and empty statements. */
  for (;;) {
    p = loom_sql_skip_blanks(d, sql, p, end);
    if (p < end && *p == ';')
      p++;
    else
      return p < end;
  }
}

/* $1, $2 ...: the highest number. */
static int count_numbered(const loom_sql_dialect_t *d, const char *sql, const char *end) {
  const char *p = sql;
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
      p = next_unit(d, sql, p, end);
    }
  }
  return max;
}

/* ? takes the next number, ?NNN that number, and each distinct :name,
 * @name or $name the next one. */
static int count_mixed(const loom_sql_dialect_t *d, const char *sql, const char *end) {
  struct {
    const char *p;
    size_t len;
  } names[64];
  int nnames = 0, max = 0;
  const char *p = sql;
  while (p < end) {
    const char *q = loom_sql_skip(d, sql, p, end);
    char ch = *p;
    if (q != p) {
      p = q;
    } else if (ch == '?') {
      p++;
      if (p < end && isdigit((unsigned char)*p)) {
        int n = 0;
        while (p < end && isdigit((unsigned char)*p) && n < 1000000)
          n = n * 10 + (*p++ - '0');
        if (n > max)
          max = n;
      } else {
        max++;
      }
    } else if ((ch == ':' || ch == '@' || ch == '$') && p + 1 < end &&
               loom_sql_name_char(p[1]) && !(ch == ':' && p > sql && p[-1] == ':')) {
      const char *start = p++;
      while (p < end && loom_sql_name_char(*p))
        p++;
      size_t n = (size_t)(p - start);
      int seen = 0;
      for (int k = 0; k < nnames && !seen; k++)
        seen = names[k].len == n && memcmp(names[k].p, start, n) == 0;
      if (!seen) {
        if (nnames < 64) {
          names[nnames].p = start;
          names[nnames].len = n;
          nnames++;
        }
        max++;
      }
    } else {
      p++;
    }
  }
  return max;
}

int loom_sql_param_count(const loom_sql_dialect_t *d, const char *sql, size_t len) {
  const char *end = sql + len;
  switch (d->params) {
  case LOOM_SQL_PARAMS_NUMBERED: return count_numbered(d, sql, end);
  case LOOM_SQL_PARAMS_MIXED: return count_mixed(d, sql, end);
  default: break;
  }
  int n = 0;
  for (const char *p = sql; p < end;) {
    const char *q = loom_sql_skip(d, sql, p, end);
    if (q != p) {
      p = q;
      continue;
    }
    n += *p == '?';
    p++;
  }
  return n;
}

const char *loom_sql_skip_lead(const loom_sql_dialect_t *d, const char *sql, const char *p,
                               const char *end) {
  for (;;) {
    p = loom_sql_skip_blanks(d, sql, p, end);
    if (p == end || *p != '(')
      return p;
    p++;
  }
}

int loom_sql_word_at(const char *p, const char *end, const char *w) {
  size_t n = strlen(w);
  if ((size_t)(end - p) < n)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (tolower((unsigned char)p[i]) != w[i])
      return 0;
  return p + n == end || !loom_sql_name_char(p[n]);
}

int loom_sql_only_reads(const loom_sql_dialect_t *d, const char *sql, size_t len) {
  const char *end = sql + len;
  const char *p = loom_sql_skip_lead(d, sql, sql, end);
  /* Most SQL has no ';' at all: no need to read it through to know it is
   * one statement (this runs before every read). */
  if (loom_sql_word_at(p, end, "select") || loom_sql_word_at(p, end, "values") || loom_sql_word_at(p, end, "explain"))
    return memchr(p, ';', (size_t)(end - p)) == NULL || !loom_sql_is_script(d, sql, len);
  if (!loom_sql_word_at(p, end, "with"))
    return 0;
  /* A common table expression may wrap a write: any write word outside
   * quotes and comments counts (a column named "update" too, which only
   * sends a read to the writer). */
  while (p < end) {
    if (*p == ';')
      return !loom_sql_is_script(d, sql, len);
    if (isalpha((unsigned char)*p) && (p == sql || !loom_sql_name_char(p[-1]))) {
      if (loom_sql_word_at(p, end, "insert") || loom_sql_word_at(p, end, "update") || loom_sql_word_at(p, end, "delete") ||
          loom_sql_word_at(p, end, "replace"))
        return 0;
      while (p < end && loom_sql_name_char(*p))
        p++;
      continue;
    }
    p = next_unit(d, sql, p, end);
  }
  return 1;
}
