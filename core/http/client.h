/* Internals shared by the client (client.c: the multi handle, its sockets
 * and timer) and its transfers (xfer.c). */
#ifndef LOOM_HTTP_CLIENT_H
#define LOOM_HTTP_CLIENT_H

#include <curl/curl.h>
#include <uv.h>
#include "http.h"

/* Easy handles kept for the next transfers: setting one up again costs a
 * reset, not an allocation of curl's per-handle state. */
#define LOOM_HTTP_IDLE_MAX 64

typedef struct http_xfer http_xfer;

/* A socket curl watches: one poll per fd, found by fd, so that a
 * connection shared by transfers (reuse, HTTP/2) has exactly one. */
typedef struct http_sock {
  uv_poll_t poll;
  loom_http_t *h;
  curl_socket_t fd;
} http_sock;

struct loom_http {
  loom_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer;
  http_sock **by_fd;
  size_t nfd;
  CURL *idle[LOOM_HTTP_IDLE_MAX];
  int nidle;
  http_xfer *xfers; /* every transfer not freed */
  size_t transfers, easy_live, sockets;
};

struct http_xfer {
  loom_http_xfer_t pub;
  loom_http_t *h;       /* NULL once the client closed under it */
  http_xfer *prev, *next;
  CURL *easy;           /* while in the multi handle */
  struct curl_slist *hdrs;
  char *base;           /* pub.buf is base + off */
  size_t off, cap, hcap;
  size_t high_water;
  size_t need;          /* what a waiting reader wants buffered (high_water may be less) */
  char *up;             /* upload bytes fed and not sent yet */
  size_t up_len, up_off, up_cap;
  int up_eof;
  int recv_paused, send_paused;
  int head_open;        /* a header block began and its blank line did not come */
  char errbuf[CURL_ERROR_SIZE];
};

CURL *loom__http_easy_get(loom_http_t *h);
void loom__http_easy_put(loom_http_t *h, CURL *easy);
/* Lets curl act now (a 0 ms timer): after an unpause it may otherwise wait
 * for socket activity that never comes (curl#2393, curl#4966). */
void loom__http_kick(loom_http_t *h);
int loom__http_closesocket(void *clientp, curl_socket_t fd);
loom_http_xfer_t *loom__http_start(loom_http_t *h, const loom_http_opts *o,
                                   void (*notify)(loom_http_xfer_t *, int), void *data);
void loom__http_consume(loom_http_xfer_t *x, size_t n);
void loom__http_want(loom_http_xfer_t *x, size_t n);
int loom__http_feed(loom_http_xfer_t *x, const char *p, size_t len);
void loom__http_abort(loom_http_xfer_t *x);
void loom__http_free(loom_http_xfer_t *x);
extern const loom_http_engine_t loom_http_engine;

/* A transfer curl finished: out of the multi handle, its owner told. */
void loom__http_xfer_finished(http_xfer *x, CURLcode result);

#endif
