/* One transfer: an easy handle set up from loom_http_opts, its body
 * buffered for the owner (paused above the high-water mark), its upload
 * fed chunk by chunk (paused while the owner has none). */
#include <stdlib.h>
#include <string.h>
#include "client.h"

static const char *code_name(int rc) {
  switch (rc) {
#define N(c) case c: return #c;
  N(CURLE_UNSUPPORTED_PROTOCOL) N(CURLE_FAILED_INIT) N(CURLE_URL_MALFORMAT)
  N(CURLE_COULDNT_RESOLVE_PROXY) N(CURLE_COULDNT_RESOLVE_HOST) N(CURLE_COULDNT_CONNECT)
  N(CURLE_WEIRD_SERVER_REPLY) N(CURLE_HTTP2) N(CURLE_PARTIAL_FILE) N(CURLE_WRITE_ERROR)
  N(CURLE_READ_ERROR) N(CURLE_OUT_OF_MEMORY) N(CURLE_OPERATION_TIMEDOUT)
  N(CURLE_SSL_CONNECT_ERROR) N(CURLE_ABORTED_BY_CALLBACK) N(CURLE_BAD_FUNCTION_ARGUMENT)
  N(CURLE_TOO_MANY_REDIRECTS) N(CURLE_GOT_NOTHING) N(CURLE_SEND_ERROR) N(CURLE_RECV_ERROR)
  N(CURLE_SSL_CERTPROBLEM) N(CURLE_SSL_CIPHER) N(CURLE_PEER_FAILED_VERIFICATION)
  N(CURLE_BAD_CONTENT_ENCODING) N(CURLE_SSL_CACERT_BADFILE) N(CURLE_HTTP2_STREAM)
  N(CURLE_UNKNOWN_OPTION) N(CURLE_RANGE_ERROR) N(CURLE_PROXY) N(CURLE_HTTP3)
#undef N
  default: return "CURLE_UNKNOWN";
  }
}

static void notify(http_xfer *x, int events) {
  if (x->pub.notify)
    x->pub.notify(&x->pub, events);
}

/* Grows a buffer of *cap to hold need bytes; 0 when out of memory. */
static int reserve(char **p, size_t *cap, size_t need) {
  if (need <= *cap)
    return 1;
  size_t n = *cap ? *cap : 1024;
  while (n < need)
    n *= 2;
  char *q = realloc(*p, n);
  if (q == NULL)
    return 0;
  *p = q;
  *cap = n;
  return 1;
}

/* Status and version of the response the body belongs to. */
static void take_head(http_xfer *x) {
  long v = 0;
  char *url = NULL;
  x->pub.head = 1;
  curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->pub.status);
  curl_easy_getinfo(x->easy, CURLINFO_HTTP_VERSION, &v);
  x->pub.version = v == CURL_HTTP_VERSION_1_0 ? 10 : v == CURL_HTTP_VERSION_1_1 ? 11
                 : v == CURL_HTTP_VERSION_2_0 ? 20 : v == CURL_HTTP_VERSION_3 ? 30 : 0;
  curl_easy_getinfo(x->easy, CURLINFO_EFFECTIVE_URL, &url);
  if (url)
    x->pub.url = strdup(url);
}

static size_t on_write(char *p, size_t size, size_t nmemb, void *data) {
  http_xfer *x = data;
  size_t n = size * nmemb;
  int events = LOOM_HTTP_EV_DATA;
  if (!x->pub.head) {
    take_head(x);
    events |= LOOM_HTTP_EV_HEAD;
  }
  /* Paused, the chunk stays with curl, which hands it over again once the
   * owner resumes the transfer. */
  if (x->high_water && x->pub.len >= x->high_water && x->pub.len >= x->need) {
    x->recv_paused = 1;
    notify(x, events & ~LOOM_HTTP_EV_DATA);
    return CURL_WRITEFUNC_PAUSE;
  }
  if (x->off > 0 && x->off + x->pub.len + n > x->cap) {
    memmove(x->base, x->base + x->off, x->pub.len);
    x->off = 0;
  }
  if (!reserve(&x->base, &x->cap, x->off + x->pub.len + n))
    return 0; /* curl ends the transfer with CURLE_WRITE_ERROR */
  memcpy(x->base + x->off + x->pub.len, p, n);
  x->pub.len += n;
  x->pub.buf = x->base + x->off;
  notify(x, events);
  return n;
}

/* Keeps the header block of the last response: a redirect's or a 100
 * Continue's block is followed by another status line. Trailers come
 * after the body has begun and are not kept. */
static size_t on_header(char *p, size_t size, size_t nmemb, void *data) {
  http_xfer *x = data;
  size_t n = size * nmemb;
  if (x->pub.head)
    return n;
  if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) {
    x->pub.headers_len = 0;
    x->head_open = 1;
  } else if ((n == 2 && p[0] == '\r' && p[1] == '\n') ||
             (n == 1 && p[0] == '\n')) {
    x->head_open = 0;
  }
  if (!reserve(&x->pub.headers, &x->hcap, x->pub.headers_len + n + 1))
    return 0;
  memcpy(x->pub.headers + x->pub.headers_len, p, n);
  x->pub.headers_len += n;
  x->pub.headers[x->pub.headers_len] = '\0';
  return n;
}

static size_t on_read(char *p, size_t size, size_t nitems, void *data) {
  http_xfer *x = data;
  size_t room = size * nitems;
  if (x->up_off < x->up_len) {
    size_t n = x->up_len - x->up_off;
    if (n > room)
      n = room;
    memcpy(p, x->up + x->up_off, n);
    x->up_off += n;
    return n;
  }
  if (x->up_eof)
    return 0;
  x->send_paused = 1;
  if (!x->pub.wants_body) {
    x->pub.wants_body = 1;
    notify(x, LOOM_HTTP_EV_SEND);
  }
  return CURL_READFUNC_PAUSE;
}

static CURLcode setup(http_xfer *x, const loom_http_opts *o) {
  CURL *e = x->easy;
  CURLcode rc;
#define SET(opt, val) do { if ((rc = curl_easy_setopt(e, opt, val)) != CURLE_OK) return rc; } while (0)
  SET(CURLOPT_URL, o->url);
  /* An HTTP client: no file://, ftp:// or the like, first or redirected to. */
  SET(CURLOPT_PROTOCOLS_STR, "http,https");
  SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  SET(CURLOPT_PRIVATE, x);
  SET(CURLOPT_NOSIGNAL, 1L);
  SET(CURLOPT_ERRORBUFFER, x->errbuf);
  SET(CURLOPT_WRITEFUNCTION, on_write);
  SET(CURLOPT_WRITEDATA, x);
  SET(CURLOPT_HEADERFUNCTION, on_header);
  SET(CURLOPT_HEADERDATA, x);
  SET(CURLOPT_CLOSESOCKETFUNCTION, loom__http_closesocket);
  SET(CURLOPT_CLOSESOCKETDATA, x->h);
  if (strcmp(o->method, "HEAD") == 0)
    SET(CURLOPT_NOBODY, 1L);
  else if (strcmp(o->method, "GET") != 0 || o->body || o->body_pull)
    SET(CURLOPT_CUSTOMREQUEST, o->method);
  if (o->body) {
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
    SET(CURLOPT_COPYPOSTFIELDS, o->body);
  } else if (o->body_pull) {
    /* A POST with no size and no fields reads its body through on_read,
     * sent chunked over HTTP/1.1. */
    SET(CURLOPT_POST, 1L);
    SET(CURLOPT_READFUNCTION, on_read);
    SET(CURLOPT_READDATA, x);
  }
  for (size_t i = 0; i < o->nheaders; i++) {
    struct curl_slist *l = curl_slist_append(x->hdrs, o->headers[i]);
    if (l == NULL)
      return CURLE_OUT_OF_MEMORY;
    x->hdrs = l;
  }
  if (x->hdrs)
    SET(CURLOPT_HTTPHEADER, x->hdrs);
  if (o->timeout_ms > 0)
    SET(CURLOPT_TIMEOUT_MS, o->timeout_ms);
  if (o->connect_timeout_ms > 0)
    SET(CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
  if (o->follow > 0) {
    SET(CURLOPT_FOLLOWLOCATION, 1L);
    SET(CURLOPT_MAXREDIRS, o->follow);
  }
  if (!o->verify) {
    SET(CURLOPT_SSL_VERIFYPEER, 0L);
    SET(CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (o->cafile)
    SET(CURLOPT_CAINFO, o->cafile);
  if (o->version == 20 && curl_version_info(CURLVERSION_NOW)->version_num < 0x080000) {
    /* curl 7.88 fails every request after the first on an HTTP/2 connection
     * opened by prior knowledge (CURLE_HTTP2; curl's own command line too):
     * there, each such request has a connection of its own. */
    SET(CURLOPT_FRESH_CONNECT, 1L);
    SET(CURLOPT_FORBID_REUSE, 1L);
  } else if (o->version != 11) {
    /* Requests that start together on a new HTTP/2 connection share it
     * rather than each opening one (and each a TLS handshake). */
    SET(CURLOPT_PIPEWAIT, 1L);
  }
  SET(CURLOPT_HTTP_VERSION, o->version == 11 ? CURL_HTTP_VERSION_1_1
                          : o->version == 20 ? CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE
                                             : CURL_HTTP_VERSION_2TLS);
#undef SET
  return CURLE_OK;
}

static void set_result(http_xfer *x, int rc, const char *reason) {
  x->pub.done = 1;
  x->pub.result = rc;
  x->pub.result_name = rc < 0 ? "aborted" : rc ? code_name(rc) : "CURLE_OK";
  snprintf(x->pub.reason, sizeof x->pub.reason, "%s", reason);
}

static void release(http_xfer *x) {
  if (x->easy == NULL)
    return;
  curl_multi_remove_handle(x->h->multi, x->easy);
  loom__http_easy_put(x->h, x->easy);
  x->easy = NULL;
}

loom_http_xfer_t *loom__http_start(loom_http_t *h, const loom_http_opts *o,
                                   void (*cb)(loom_http_xfer_t *, int), void *data) {
  http_xfer *x = calloc(1, sizeof *x);
  if (x == NULL)
    return NULL;
  x->pub.notify = cb;
  x->pub.data = data;
  x->h = h;
  x->high_water = o->high_water;
  x->next = h->xfers;
  if (h->xfers)
    h->xfers->prev = x;
  h->xfers = x;
  h->transfers++;
  CURLcode rc = CURLE_OUT_OF_MEMORY;
  if ((x->easy = loom__http_easy_get(h)) != NULL) {
    rc = setup(x, o);
    if (rc == CURLE_OK && curl_multi_add_handle(h->multi, x->easy) != CURLM_OK)
      rc = CURLE_FAILED_INIT;
  }
  if (rc != CURLE_OK) {
    if (x->easy)
      loom__http_easy_put(h, x->easy);
    x->easy = NULL;
    set_result(x, rc, x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
  }
  return &x->pub;
}

void loom__http_xfer_finished(http_xfer *x, CURLcode result) {
  int events = LOOM_HTTP_EV_DONE;
  if (!x->pub.head) {
    take_head(x);
    events |= LOOM_HTTP_EV_HEAD;
  }
  release(x);
  /* curl 7.88 ends a response whose connection closed amid its headers
   * with CURLE_OK, as if it were whole: it is not. */
  if (result == CURLE_OK && x->head_open) {
    result = CURLE_PARTIAL_FILE;
    snprintf(x->errbuf, sizeof x->errbuf,
             "the connection closed in the middle of the response's headers");
  }
  set_result(x, result, result == CURLE_OK ? "" : x->errbuf[0] ? x->errbuf : curl_easy_strerror(result));
  notify(x, events);
}

/* Resumes what is paused and no longer needs to be. curl_easy_pause may
 * call on_write right here with what it held back. */
static void resume(http_xfer *x) {
  int still = (x->recv_paused ? CURLPAUSE_RECV : 0) | (x->send_paused ? CURLPAUSE_SEND : 0);
  curl_easy_pause(x->easy, still);
  loom__http_kick(x->h);
}

void loom__http_consume(loom_http_xfer_t *pub, size_t n) {
  http_xfer *x = (http_xfer *)pub;
  x->need = 0;
  x->off += n;
  x->pub.len -= n;
  x->pub.buf = x->base + x->off;
  if (x->pub.len == 0)
    x->off = 0;
  if (x->recv_paused && x->easy && x->pub.len < x->high_water / 2 + 1) {
    x->recv_paused = 0;
    resume(x);
  }
}

void loom__http_want(loom_http_xfer_t *pub, size_t n) {
  http_xfer *x = (http_xfer *)pub;
  x->need = n;
  if (x->recv_paused && x->easy && x->pub.len < n) {
    x->recv_paused = 0;
    resume(x);
  }
}

int loom__http_feed(loom_http_xfer_t *pub, const char *p, size_t len) {
  http_xfer *x = (http_xfer *)pub;
  if (len == 0) {
    x->up_eof = 1;
  } else {
    if (x->up_off == x->up_len)
      x->up_off = x->up_len = 0;
    if (!reserve(&x->up, &x->up_cap, x->up_len + len))
      return -1;
    memcpy(x->up + x->up_len, p, len);
    x->up_len += len;
  }
  x->pub.wants_body = 0;
  if (x->send_paused && x->easy) {
    x->send_paused = 0;
    resume(x);
  }
  return 0;
}

void loom__http_abort(loom_http_xfer_t *pub) {
  http_xfer *x = (http_xfer *)pub;
  if (x->h)
    release(x);
  if (!x->pub.done)
    set_result(x, -1, "the transfer was stopped");
}

void loom__http_free(loom_http_xfer_t *pub) {
  http_xfer *x = (http_xfer *)pub;
  loom__http_abort(pub);
  if (x->h) {
    if (x->prev)
      x->prev->next = x->next;
    else
      x->h->xfers = x->next;
    if (x->next)
      x->next->prev = x->prev;
    x->h->transfers--;
  }
  curl_slist_free_all(x->hdrs);
  free(x->base);
  free(x->up);
  free(x->pub.headers);
  free(x->pub.url);
  free(x);
}
