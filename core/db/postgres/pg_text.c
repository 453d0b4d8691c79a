/* PostgreSQL's text formats, as libpq hands values over: bytea as \x and
 * hex digits, timestamps with a space before the time, arrays as
 * {a,"b c",NULL} with nested braces for more dimensions. */
#include <stdlib.h>
#include <string.h>
#include "pg.h"

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* PostgreSQL's text form of bytea: \x followed by hex digits. Decodes in
 * place (dst may equal src); returns the length or -1. */
static long unhex(char *dst, const char *src, size_t len) {
  if (len < 2 || src[0] != '\\' || src[1] != 'x' || (len - 2) % 2)
    return -1;
  size_t n = 0;
  for (size_t i = 2; i + 1 < len; i += 2) {
    int hi = hexval(src[i]), lo = hexval(src[i + 1]);
    if (hi < 0 || lo < 0)
      return -1;
    dst[n++] = (char)(hi << 4 | lo);
  }
  return (long)n;
}

/* Text as the server sent it to a typed value. p must be writable and
 * NUL-terminated at len: bytea is decoded and timestamps are made ISO 8601
 * in place. */
int loom__pg_text_to_value(loom_vtype_t type, char *p, size_t len, loom_value_t *out) {
  char *end;
  out->elem = LOOM_VNULL;
  switch ((int)type) {
  case LOOM_VINT:
    out->type = LOOM_VINT;
    out->u.i = strtoll(p, &end, 10);
    return end == p ? -1 : 0;
  case LOOM_VFLOAT:
    out->type = LOOM_VFLOAT;
    out->u.f = strtod(p, &end);
    return end == p ? -1 : 0;
  case LOOM_VBOOL:
    out->type = LOOM_VBOOL;
    out->u.b = p[0] == 't';
    return 0;
  case LOOM_VBLOB: {
    long n = unhex(p, p, len);
    if (n < 0)
      return -1;
    out->type = LOOM_VBLOB;
    out->u.s.p = p;
    out->u.s.len = (size_t)n;
    return 0;
  }
  case PG_VTEXT_TS:
    /* "2024-01-02 03:04:05+01" -> "2024-01-02T03:04:05+01" */
    if (len > 10 && p[10] == ' ')
      p[10] = 'T';
    /* fall through */
  default:
    out->type = LOOM_VTEXT;
    out->u.s.p = p;
    out->u.s.len = len;
    return 0;
  }
}

/* "[0:2]={...}": explicit bounds come before the braces. */
static void array_begin(loom_db_array_iter_t *it) {
  if (it->pos < it->end && *it->pos == '[') {
    const char *eq = memchr(it->pos, '=', (size_t)(it->end - it->pos));
    it->pos = eq ? eq + 1 : it->end;
  }
  if (it->pos < it->end && *it->pos == '{')
    it->pos++;
}

static int array_next(loom_db_array_iter_t *it, loom_value_t *out) {
  const char *p = it->pos, *end = it->end;
  if (p >= end || *p == '}')
    return 0;
  if (*p == '{') {
    /* A sub-array (a dimension more): handed out whole, as an array cell
     * of the same element type, for the caller to iterate in turn. Quoted
     * elements may hold braces. */
    const char *start = p;
    int depth = 0, quoted = 0;
    for (; p < end; p++) {
      if (quoted) {
        if (*p == '\\' && p + 1 < end)
          p++;
        else if (*p == '"')
          quoted = 0;
      } else if (*p == '"') {
        quoted = 1;
      } else if (*p == '{') {
        depth++;
      } else if (*p == '}' && --depth == 0) {
        break;
      }
    }
    if (p >= end)
      return -1;
    p++;
    out->type = LOOM_VARRAY;
    out->elem = it->elem;
    out->array = &loom__pg_array_ops;
    out->u.s.p = start;
    out->u.s.len = (size_t)(p - start);
    it->pos = p < end && *p == ',' ? p + 1 : p;
    return 1;
  }
  size_t n = 0;
  int quoted = *p == '"';
  if (quoted) {
    p++;
    if (loom_db_array_reserve(it, (size_t)(end - p) + 1))
      return -1;
    while (p < end && *p != '"') {
      if (*p == '\\' && p + 1 < end)
        p++;
      it->scratch[n++] = *p++;
    }
    if (p >= end)
      return -1;
    p++; /* closing quote */
  } else {
    const char *start = p;
    while (p < end && *p != ',' && *p != '}')
      p++;
    n = (size_t)(p - start);
    if (n == 4 && memcmp(start, "NULL", 4) == 0) {
      out->type = LOOM_VNULL;
      it->pos = p < end && *p == ',' ? p + 1 : p;
      return 1;
    }
    if (loom_db_array_reserve(it, n + 1))
      return -1;
    memcpy(it->scratch, start, n);
  }
  it->scratch[n] = 0;
  it->pos = p < end && *p == ',' ? p + 1 : p;
  return loom__pg_text_to_value(it->elem, it->scratch, n, out) == 0 ? 1 : -1;
}

const loom_db_array_ops_t loom__pg_array_ops = {array_begin, array_next};
