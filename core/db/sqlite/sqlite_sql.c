/* Reading SQLite SQL on the loop thread, before anything reaches a worker:
 * how many parameters a statement takes, and the names of result codes. */
#include <ctype.h>
#include <string.h>
#include "sqlite.h"

static int is_name_char(char ch) {
  return isalnum((unsigned char)ch) || ch == '_' || (unsigned char)ch >= 0x80;
}

/* Counts parameters as SQLite numbers them: `?` takes the next number,
 * `?NNN` that number, and each distinct `:name`, `@name` or `$name` the next
 * one. Quotes and comments are skipped. */
int loom__sq_param_count(const char *sql, size_t len) {
  int max = 0;
  struct {
    const char *p;
    size_t len;
  } names[64];
  int nnames = 0;
  size_t i = 0;
  while (i < len) {
    char ch = sql[i];
    if (ch == '\'' || ch == '"' || ch == '`' || ch == '[') {
      char close = ch == '[' ? ']' : ch;
      i++;
      while (i < len && sql[i] != close)
        i++;
      i++;
    } else if (ch == '-' && i + 1 < len && sql[i + 1] == '-') {
      while (i < len && sql[i] != '\n')
        i++;
    } else if (ch == '/' && i + 1 < len && sql[i + 1] == '*') {
      i += 2;
      while (i + 1 < len && !(sql[i] == '*' && sql[i + 1] == '/'))
        i++;
      i += 2;
    } else if (ch == '?') {
      i++;
      if (i < len && isdigit((unsigned char)sql[i])) {
        int n = 0;
        while (i < len && isdigit((unsigned char)sql[i]) && n < 1000000)
          n = n * 10 + (sql[i++] - '0');
        if (n > max)
          max = n;
      } else {
        max++;
      }
    } else if ((ch == ':' || ch == '@' || ch == '$') && i + 1 < len && is_name_char(sql[i + 1]) &&
               !(ch == ':' && i > 0 && sql[i - 1] == ':')) {
      size_t start = i++;
      while (i < len && is_name_char(sql[i]))
        i++;
      int seen = 0;
      for (int k = 0; k < nnames; k++)
        if (names[k].len == i - start && memcmp(names[k].p, sql + start, i - start) == 0)
          seen = 1;
      if (!seen) {
        if (nnames < 64) {
          names[nnames].p = sql + start;
          names[nnames].len = i - start;
          nnames++;
        }
        max++;
      }
    } else {
      i++;
    }
  }
  return max;
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
