/* Reading just enough MySQL SQL to count ? placeholders (so a wrong number
 * of parameters is caught before anything is sent), to notice statements
 * that leave state in the session and a script ending in a comment; and
 * the driver's URL. The server alone splits a script into statements. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "my.h"
#include "sql_lex.h"

/* MySQL's SQL as the lexer (sql_lex.h) reads it: '' and "" strings with
 * backslash escapes, `` identifiers, '#' comments, "-- " comments (a blank
 * after the dashes), comments that do not nest, executable comments, ?
 * placeholders. */
static const loom_sql_dialect_t dialect = {
  .quotes = "'\"`",
  .escapes = "'\"",
  .flags = LOOM_SQL_HASH_COMMENTS | LOOM_SQL_DASH_BLANK | LOOM_SQL_EXEC_COMMENTS,
  .params = LOOM_SQL_PARAMS_QMARK,
};

static const char *skip_quoted(const char *p, const char *end) {
  return loom_sql_skip(&dialect, p, p, end);
}

int loom__my_param_count(const char *sql, size_t len) {
  return loom_sql_param_count(&dialect, sql, len);
}

/* Past blanks, comments and opening parentheses. */
static const char *skip_space(const char *p, const char *end) {
  return loom_sql_skip_lead(&dialect, p, p, end);
}

/* The statement starting at p (after a ';' or at the start) leaves
 * state in the session by what it is. */
static int starts_dirty(const char *p, const char *end) {
  p = skip_space(p, end);
  if (loom_sql_word_at(p, end, "set")) {
    /* SET TRANSACTION ... applies to the next transaction only. */
    const char *q = skip_space(p + 3, end);
    return !loom_sql_word_at(q, end, "transaction");
  }
  static const char *const starts[] = {"lock", "prepare", "handler", "use", "xa", NULL};
  for (int k = 0; starts[k]; k++)
    if (loom_sql_word_at(p, end, starts[k]))
      return 1;
  if (loom_sql_word_at(p, end, "create")) {
    const char *q = skip_space(p + 6, end);
    if (loom_sql_word_at(q, end, "temporary"))
      return 1;
  }
  return 0;
}

int loom__my_dirties_session(const char *sql, size_t len) {
  const char *p = sql, *end = sql + len;
  if (starts_dirty(p, end))
    return 1;
  /* User variables and named locks anywhere outside strings, and every
   * statement of a script by what it is. */
  while (p < end) {
    const char *q = skip_quoted(p, end);
    if (q != p) {
      p = q;
      continue;
    }
    if (*p == ';' && starts_dirty(p + 1, end))
      return 1;
    if (*p == '@') {
      if (p + 1 < end && p[1] == '@') {
        p += 2;
        while (p < end && (isalnum((unsigned char)*p) || *p == '_' || *p == '.'))
          p++;
        continue;
      }
      return 1;
    }
    if ((*p == 'g' || *p == 'G') && end - p >= 8 && strncasecmp(p, "get_lock", 8) == 0)
      return 1;
    p++;
  }
  return 0;
}

int loom__my_ends_in_comment(const char *sql, size_t len) {
  const char *p = sql, *end = sql + len, *last = NULL;
  while (p < end) {
    const char *q = skip_quoted(p, end);
    if (q != p) {
      p = q;
      continue;
    }
    if (*p == ';')
      last = p;
    p++;
  }
  if (last == NULL)
    return 0;
  int comment = 0;
  for (p = last + 1; p < end;) {
    if (isspace((unsigned char)*p) || *p == ';') {
      p++;
      continue;
    }
    const char *q = skip_quoted(p, end);
    /* An executable comment holds SQL; a quoted string is not a comment. */
    if (q == p || *p == '\'' || *p == '"' || *p == '`' ||
        (*p == '/' && p + 2 < end && (p[2] == '!' || (p[2] == 'M' && p + 3 < end && p[3] == '!'))))
      return 0;
    comment = 1;
    p = q;
  }
  return comment;
}

/* ---- URLs --------------------------------------------------------------------- */

static char *dup_decoded(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d == NULL)
    return NULL;
  size_t j = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
        isxdigit((unsigned char)s[i + 2])) {
      char hex[3] = {s[i + 1], s[i + 2], 0};
      d[j++] = (char)strtol(hex, NULL, 16);
      i += 2;
    } else {
      d[j++] = s[i];
    }
  }
  d[j] = 0;
  return d;
}

void loom__my_opts_free(my_opts *o) {
  free(o->host);
  free(o->user);
  if (o->password) {
    memset(o->password, 0, strlen(o->password));
    free(o->password);
  }
  free(o->db);
  free(o->socket);
  free(o->ssl_ca);
  free(o->ssl_cert);
  free(o->ssl_key);
  free(o->ssl_cipher);
  free(o->tls_version);
  free(o->charset);
  memset(o, 0, sizeof *o);
}

static int set_param(my_opts *o, const char *key, size_t klen, char *val, char *err,
                     size_t errlen) {
#define KEY(k) (klen == strlen(k) && strncasecmp(key, k, klen) == 0)
  char **slot = NULL;
  if (KEY("ssl-mode") || KEY("ssl_mode") || KEY("sslmode")) {
    static const char *const modes[] = {"", "disabled", "preferred", "required",
                                        "verify_ca", "verify_identity", NULL};
    for (int i = 1; modes[i]; i++) {
      if (strcasecmp(val, modes[i]) == 0 ||
          (i == 1 && strcasecmp(val, "disable") == 0) ||
          (i == 2 && strcasecmp(val, "prefer") == 0) ||
          (i == 3 && strcasecmp(val, "require") == 0) ||
          (i == 4 && strcasecmp(val, "verify-ca") == 0) ||
          (i == 5 && (strcasecmp(val, "verify-full") == 0 || strcasecmp(val, "verify-identity") == 0))) {
        o->ssl_mode = i;
        free(val);
        return 0;
      }
    }
    snprintf(err, errlen, "unknown ssl-mode '%.40s' (disabled, preferred, required, verify_ca, verify_identity)", val);
    free(val);
    return -1;
  }
  if (KEY("ssl-ca") || KEY("ssl_ca") || KEY("sslrootcert"))
    slot = &o->ssl_ca;
  else if (KEY("ssl-cert") || KEY("ssl_cert") || KEY("sslcert"))
    slot = &o->ssl_cert;
  else if (KEY("ssl-key") || KEY("ssl_key") || KEY("sslkey"))
    slot = &o->ssl_key;
  else if (KEY("ssl-cipher") || KEY("ssl_cipher"))
    slot = &o->ssl_cipher;
  else if (KEY("tls-version") || KEY("tls_version"))
    slot = &o->tls_version;
  else if (KEY("charset"))
    slot = &o->charset;
  else if (KEY("socket"))
    slot = &o->socket;
  else if (KEY("connect-timeout") || KEY("connect_timeout")) {
    /* strtoul alone takes "abc" as 0 (the default) and "-1" as 2^32 - 1. */
    char *end;
    unsigned long t = strtoul(val, &end, 10);
    int bad = val[0] < '0' || val[0] > '9' || *end || t > 31536000;
    free(val);
    if (bad) {
      snprintf(err, errlen, "connect_timeout must be a whole number of seconds");
      return -1;
    }
    o->connect_timeout = (unsigned)t;
    return 0;
  } else if (KEY("password")) {
    slot = &o->password;
  } else if (KEY("user")) {
    slot = &o->user;
  } else {
    snprintf(err, errlen, "unknown connection option '%.*s'", (int)(klen > 40 ? 40 : klen), key);
    free(val);
    return -1;
  }
  free(*slot);
  *slot = val;
  return 0;
#undef KEY
}

int loom__my_parse_url(const char *url, my_opts *o, char *err, size_t errlen) {
  memset(o, 0, sizeof *o);
  o->port = 3306;
  o->connect_timeout = 10;
  const char *p;
  if (strncmp(url, "mysql://", 8) == 0)
    p = url + 8;
  else if (strncmp(url, "mariadb://", 10) == 0)
    p = url + 10;
  else {
    snprintf(err, errlen, "a MySQL URL starts with mysql:// or mariadb://");
    return -1;
  }
  const char *end = p + strcspn(p, "/?");
  const char *at = NULL;
  for (const char *q = p; q < end; q++)
    if (*q == '@')
      at = q; /* the last one: passwords may hold '@' unescaped */
  if (at) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    o->user = dup_decoded(p, (size_t)((colon ? colon : at) - p));
    if (colon)
      o->password = dup_decoded(colon + 1, (size_t)(at - colon - 1));
    p = at + 1;
  }
  if (*p == '[') {
    const char *rb = memchr(p, ']', (size_t)(end - p));
    if (rb == NULL) {
      snprintf(err, errlen, "unclosed '[' in the host of the URL");
      loom__my_opts_free(o);
      return -1;
    }
    o->host = dup_decoded(p + 1, (size_t)(rb - p - 1));
    p = rb + 1;
  } else {
    const char *colon = memchr(p, ':', (size_t)(end - p));
    const char *hend = colon ? colon : end;
    o->host = dup_decoded(p, (size_t)(hend - p));
    p = hend;
  }
  if (p < end && *p == ':') {
    char *e;
    unsigned long port = strtoul(p + 1, &e, 10);
    if (e != end || port == 0 || port > 65535) {
      snprintf(err, errlen, "invalid port in the URL");
      loom__my_opts_free(o);
      return -1;
    }
    o->port = (unsigned)port;
  }
  p = end;
  if (*p == '/') {
    const char *dend = p + 1 + strcspn(p + 1, "?");
    if (dend > p + 1)
      o->db = dup_decoded(p + 1, (size_t)(dend - p - 1));
    p = dend;
  }
  if (*p == '?') {
    p++;
    while (*p) {
      const char *amp = p + strcspn(p, "&");
      const char *eq = memchr(p, '=', (size_t)(amp - p));
      if (eq == NULL) {
        snprintf(err, errlen, "connection option without a value in the URL");
        loom__my_opts_free(o);
        return -1;
      }
      char *val = dup_decoded(eq + 1, (size_t)(amp - eq - 1));
      if (val == NULL || set_param(o, p, (size_t)(eq - p), val, err, errlen) != 0) {
        if (val == NULL)
          snprintf(err, errlen, "out of memory");
        loom__my_opts_free(o);
        return -1;
      }
      p = *amp ? amp + 1 : amp;
    }
  }
  if ((o->host == NULL || *o->host == 0) && o->socket == NULL) {
    free(o->host);
    o->host = loom_db_strdup("127.0.0.1");
  }
  return 0;
}
