/* Reading just enough PostgreSQL SQL to count $n placeholders, so a wrong
 * number of parameters is caught before anything is sent. Quoted strings,
 * quoted identifiers, dollar-quoted bodies and comments are skipped. */
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

int loom__pg_param_count(const char *sql, size_t len) {
  const char *p = sql, *end = sql + len;
  int max = 0;
  while (p < end) {
    char ch = *p;
    if (ch == '\'' || ch == '"') {
      /* E'...' strings escape quotes with a backslash too. */
      int escapes = ch == '\'' && p > sql && (p[-1] == 'E' || p[-1] == 'e') &&
                    (p - 1 == sql || !(isalnum((unsigned char)p[-2]) || p[-2] == '_'));
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
      p++;
    } else if (ch == '-' && p + 1 < end && p[1] == '-') {
      while (p < end && *p != '\n')
        p++;
    } else if (ch == '/' && p + 1 < end && p[1] == '*') {
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
    } else if (ch == '$') {
      if (p + 1 < end && isdigit((unsigned char)p[1]) &&
          (p == sql || !(isalnum((unsigned char)p[-1]) || p[-1] == '_'))) {
        int n = 0;
        for (p++; p < end && isdigit((unsigned char)*p); p++)
          n = n < 100000 ? n * 10 + (*p - '0') : n;
        if (n > max)
          max = n;
      } else {
        const char *after = skip_dollar_quote(p, end);
        p = after == p ? p + 1 : after;
      }
    } else {
      p++;
    }
  }
  return max;
}
