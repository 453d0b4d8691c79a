/* loom's HTTP client: libcurl's multi-socket API driven by the loop's own
 * libuv handles (a poll per socket, one timer), no thread of its own.
 *
 * Only the loom.curl module (loom/curl.so) links libcurl: it hands the
 * binding in loom.core a loom_http_engine_t, whose functions are the only
 * way in, as a database driver hands its vtable. Nothing here knows Lua. */
#ifndef LOOM_HTTP_H
#define LOOM_HTTP_H

#include <stddef.h>
#include "loom.h"

typedef struct loom_http loom_http_t;
typedef struct loom_http_xfer loom_http_xfer_t;

/* What a transfer tells its owner about (loom_http_xfer_t.notify). */
enum {
  LOOM_HTTP_EV_HEAD = 1,  /* status and headers are in: the first body byte came */
  LOOM_HTTP_EV_DATA = 2,  /* more body is buffered */
  LOOM_HTTP_EV_SEND = 4,  /* the upload wants its next chunk (loom_http_engine_t.feed) */
  LOOM_HTTP_EV_DONE = 8   /* the transfer ended: result says how */
};

/* What the client asks for. Strings are copied by start. */
typedef struct loom_http_opts {
  const char *method;    /* "GET", "HEAD", "POST", ... */
  const char *url;
  const char **headers;  /* "Name: value" lines */
  size_t nheaders;
  const char *body;      /* a body given whole (NULL: none) */
  size_t body_len;
  int body_pull;         /* the body comes chunk by chunk through feed */
  long timeout_ms;       /* the whole transfer; 0: none */
  long connect_timeout_ms;
  long follow;           /* redirects followed at most; 0: none */
  int verify;            /* check the server's certificate and name */
  const char *cafile;
  int version;           /* 0: HTTP/2 over TLS, else 1.1; 11: HTTP/1.1; 20: HTTP/2 prior knowledge */
  size_t high_water;     /* body buffered before the transfer pauses; 0: no bound */
} loom_http_opts;

/* One request and its response. The engine writes it, the owner reads
 * the public part below and takes body bytes through consume. */
struct loom_http_xfer {
  void (*notify)(loom_http_xfer_t *x, int events);
  void *data;
  int done;              /* LOOM_HTTP_EV_DONE came */
  int head;              /* LOOM_HTTP_EV_HEAD came */
  int wants_body;        /* the upload waits for feed */
  long status;           /* the final response's code */
  int version;           /* 10, 11, 20 or 30 */
  char *headers;         /* the final response's header block, as sent */
  size_t headers_len;
  char *buf;             /* body received and not consumed yet */
  size_t len;
  int result;            /* 0, or the CURLcode that ended the transfer */
  const char *result_name; /* "CURLE_..." */
  char reason[256];      /* curl's words for what went wrong */
  char *url;             /* the URL answered last (after redirects) */
};

typedef struct loom_http_stats {
  size_t transfers;   /* transfers started and not freed */
  size_t easy_live;   /* easy handles serving a transfer */
  size_t easy_idle;   /* easy handles kept for the next one */
  size_t sockets;     /* sockets with a poll on them */
} loom_http_stats;

typedef struct loom_http_engine {
  /* One client per loop. NULL with err filled when curl will not start. */
  loom_http_t *(*open)(loom_loop_t *loop, char *err, size_t errlen);
  /* Aborts whatever is left; its libuv handles close with the loop. */
  void (*close)(loom_http_t *h);
  /* A transfer, started now; NULL only when out of memory. One that could
   * not start comes back done, with result and reason set. Either way it
   * is the owner's to free. */
  loom_http_xfer_t *(*start)(loom_http_t *h, const loom_http_opts *o,
                             void (*notify)(loom_http_xfer_t *, int), void *data);
  /* The owner took n body bytes from the front of buf (resumes a paused
   * transfer once enough is gone). */
  void (*consume)(loom_http_xfer_t *x, size_t n);
  /* The owner waits until n body bytes are buffered (a read longer than
   * the high-water mark): the transfer does not pause short of that. The
   * next consume ends the wish. */
  void (*want)(loom_http_xfer_t *x, size_t n);
  /* The next upload chunk; len 0 ends the body. */
  int (*feed)(loom_http_xfer_t *x, const char *p, size_t len);
  /* Stops the transfer (done, result "aborted") and frees its handle. */
  void (*abort)(loom_http_xfer_t *x);
  void (*free)(loom_http_xfer_t *x);
  void (*stats)(loom_http_t *h, loom_http_stats *s);
} loom_http_engine_t;

#endif
