/* The floor for loom's SQLite figures: plain C on one thread, no event
 * loop, no Lua. Prints the wall time of the measured part in seconds.
 *   sqlite_floor select N FILE   N point selects through one prepared statement
 *   sqlite_floor select-mmap N FILE   the same with the file mapped (mmap_size
 *                                256 MB, what loom's readers use)
 *   sqlite_floor insert N FILE   N rows through one prepared INSERT, one transaction */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void check(int rc, sqlite3 *db, const char *what) {
  if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
    fprintf(stderr, "%s: %s\n", what, sqlite3_errmsg(db));
    exit(1);
  }
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: sqlite_floor select|select-mmap|insert N FILE\n");
    return 2;
  }
  long n = atol(argv[2]);
  sqlite3 *db;
  sqlite3_stmt *st;
  check(sqlite3_open(argv[3], &db), db, "open");
  check(sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL", 0, 0, 0), db, "pragma");
  double t0, t1;
  if (strcmp(argv[1], "select-mmap") == 0)
    check(sqlite3_exec(db, "PRAGMA mmap_size=268435456", 0, 0, 0), db, "mmap");
  if (strncmp(argv[1], "select", 6) == 0) {
    long sum = 0;
    check(sqlite3_prepare_v2(db, "SELECT abalance FROM accounts WHERE aid = ?", -1, &st, 0), db, "prepare");
    t0 = now();
    for (long i = 1; i <= n; i++) {
      sqlite3_bind_int64(st, 1, (i * 7919) % 100000 + 1);
      if (sqlite3_step(st) == SQLITE_ROW)
        sum += sqlite3_column_int64(st, 0);
      sqlite3_reset(st);
    }
    t1 = now();
    if (sum == 0)
      fprintf(stderr, "no rows?\n");
  } else {
    check(sqlite3_exec(db, "DROP TABLE IF EXISTS floor_rows;"
                           "CREATE TABLE floor_rows (id INTEGER, name TEXT, price REAL, stamp TEXT)", 0, 0, 0),
          db, "create");
    check(sqlite3_prepare_v2(db, "INSERT INTO floor_rows (id, name, price, stamp) VALUES (?, ?, ?, ?)", -1, &st, 0),
          db, "prepare");
    char name[32];
    t0 = now();
    check(sqlite3_exec(db, "BEGIN IMMEDIATE", 0, 0, 0), db, "begin");
    for (long i = 1; i <= n; i++) {
      int len = snprintf(name, sizeof name, "item %ld", i);
      sqlite3_bind_int64(st, 1, i);
      sqlite3_bind_text(st, 2, name, len, SQLITE_TRANSIENT);
      sqlite3_bind_double(st, 3, (double)i / 4);
      sqlite3_bind_text(st, 4, "2026-11-25T10:00:00", -1, SQLITE_STATIC);
      check(sqlite3_step(st), db, "insert");
      sqlite3_reset(st);
    }
    check(sqlite3_exec(db, "COMMIT", 0, 0, 0), db, "commit");
    t1 = now();
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  printf("%.6f\n", t1 - t0);
  return 0;
}
