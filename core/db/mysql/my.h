/* Internal to the MySQL/MariaDB driver (core/my_*.c). */
#ifndef LOOM_MY_H
#define LOOM_MY_H

#include <mysql.h>
#include "db.h"

extern const loom_db_driver_t loom_mysql_driver;

/* ---- results (my_result.c) ---------------------------------------------- */

typedef struct my_result my_result;

/* Per-column fetch buffers for the binary protocol, reused across rows and
 * statements of one connection. */
typedef struct my_col {
  union {
    long long i;
    double d;
    float f;
    MYSQL_TIME t;
  } v;
  char *buf; /* strings; grown to the longest value seen (up to a cap) */
  unsigned long cap;
  unsigned long len;
  my_bool is_null, error;
} my_col;

typedef struct my_binds {
  MYSQL_BIND *bind;
  my_col *cols;
  unsigned n, cap;
} my_binds;

my_result *loom__my_result_new(const MYSQL_FIELD *fields, unsigned ncols);
/* One row from the text protocol (mysql_fetch_row). 0, or LOOM_ENOMEM. */
int loom__my_result_text_row(my_result *r, MYSQL_ROW row, const unsigned long *lens);
/* Binds result buffers for the statement's current columns. */
int loom__my_binds_setup(my_binds *b, MYSQL_STMT *stmt);
/* One fetched row of the binary protocol (truncated strings re-read). */
int loom__my_result_bin_row(my_result *r, my_binds *b, MYSQL_STMT *stmt);
void loom__my_binds_free(my_binds *b);
void loom__my_result_set_counts(my_result *r, int64_t affected, int64_t last_id);
loom_db_result_t *loom__my_result_base(my_result *r);

/* ---- SQL and URLs (my_sql.c) ---------------------------------------------- */

int loom__my_param_count(const char *sql, size_t len);
/* The statement leaves state in the session that a reset must clear. */
int loom__my_dirties_session(const char *sql, size_t len);
/* Only comments follow the last ';': the server answers them as one more,
 * empty statement. */
int loom__my_ends_in_comment(const char *sql, size_t len);

typedef struct my_opts {
  char *host, *user, *password, *db, *socket;
  unsigned port;
  int ssl_mode; /* MY_SSL_* */
  char *ssl_ca, *ssl_cert, *ssl_key, *ssl_cipher, *tls_version, *charset;
  unsigned connect_timeout; /* seconds per address tried; 0: none */
} my_opts;

enum { MY_SSL_DEFAULT, MY_SSL_DISABLED, MY_SSL_PREFERRED, MY_SSL_REQUIRED,
       MY_SSL_VERIFY_CA, MY_SSL_VERIFY_IDENTITY };

/* Parses mysql://user:pass@host:port/db?opt=value&... (also mariadb://).
 * 0, or -1 with a message in err (never containing the password). */
int loom__my_parse_url(const char *url, my_opts *o, char *err, size_t errlen);
void loom__my_opts_free(my_opts *o);

#endif
