/* The TLS transport of tls_transport.h. */
#include "tls_transport.h"

#include <stdlib.h>

typedef struct {
  loom_tls_t *tls;
  /* The socket's own error when sending ciphertext failed: reported as
   * itself, not as a TLS failure. */
  int raw_error;
  /* loom_tls_transport_watch's: the watcher and the owner's on_read. */
  loom_stream_cb watch;
  void *watch_arg;
  loom_stream_cb owner_on_read;
} tls_transport_t;

static const loom_transport_t tls_transport;

static tls_transport_t *of(const loom_stream_t *s) {
  return s->transport == &tls_transport ? s->transport_data : NULL;
}

static int to_socket(void *data, const char *buf, size_t len) {
  loom_stream_t *s = data;
  tls_transport_t *x = s->transport_data;
  int rc = loom_stream_send_raw(s, buf, len);
  if (rc < 0 && !x->raw_error)
    x->raw_error = rc;
  return rc;
}

/* The socket's error when the engine stopped because the socket refused
 * its bytes, else 0. */
static int socket_error(const tls_transport_t *x) {
  loom_tls_code_t code = loom_tls_error(x->tls)->code;
  return code == LOOM_TLS_OK || code == LOOM_TLS_ECLOSED ? x->raw_error : 0;
}

static int failure(const tls_transport_t *x) {
  int raw = socket_error(x);
  return raw ? raw : LOOM_TLS_STREAM_ERROR;
}

/* Advances the handshake and moves every decrypted byte to the reader. */
static int drain(loom_stream_t *s, tls_transport_t *x) {
  int h = loom_tls_handshake(x->tls);
  if (h == LOOM_TLS_ERROR)
    return failure(x);
  if (h == LOOM_TLS_WANT)
    return 0;
  char buf[16 * 1024]; /* one record */
  for (;;) {
    long n = loom_tls_read(x->tls, buf, sizeof buf);
    if (n > 0) {
      int rc = loom_stream_push(s, buf, (size_t)n);
      if (rc)
        return rc;
      continue;
    }
    if (n == LOOM_TLS_WANT)
      return 0;
    if (n == LOOM_TLS_EOF) {
      /* close_notify ends the data though the socket may stay open (the
       * peer waits for ours): the reader sees EOF now. The seam has no
       * call for it; the flag is what the stream reads. */
      s->eof = 1;
      return 0;
    }
    return failure(x);
  }
}

static int received(loom_stream_t *s, const char *p, size_t n) {
  tls_transport_t *x = s->transport_data;
  if (s->eof)
    return 0; /* after close_notify: nothing more is data */
  if (loom_tls_feed(x->tls, p, n) != 0)
    return failure(x);
  return drain(s, x);
}

static int send_plain(loom_stream_t *s, const char *p, size_t n) {
  tls_transport_t *x = s->transport_data;
  return loom_tls_write(x->tls, p, n) == LOOM_TLS_ERROR ? failure(x) : 0;
}

static int eof(loom_stream_t *s) {
  tls_transport_t *x = s->transport_data;
  if (s->eof)
    return 0;
  loom_tls_feed_eof(x->tls);
  return drain(s, x);
}

static int shutdown_write(loom_stream_t *s) {
  tls_transport_t *x = s->transport_data;
  return loom_tls_close(x->tls) == LOOM_TLS_ERROR ? failure(x) : 0;
}

static void free_transport(loom_stream_t *s) {
  tls_transport_t *x = s->transport_data;
  if (x->watch)
    x->watch(s); /* s->closing: the watcher lets go of s */
  loom_tls_free(x->tls);
  free(x);
  s->transport_data = NULL;
}

static const loom_transport_t tls_transport = {
  .received = received,
  .send = send_plain,
  .eof = eof,
  .shutdown = shutdown_write,
  .free = free_transport,
};

int loom_tls_transport_attach(loom_stream_t *s, loom_tls_ctx_t *ctx, const char *host,
                              loom_tls_error_t *err) {
  tls_transport_t *x = calloc(1, sizeof *x);
  if (!x) {
    err->code = LOOM_TLS_ENOMEM;
    snprintf(err->reason, sizeof err->reason, "out of memory");
    return -1;
  }
  x->tls = loom_tls_new(ctx, host, to_socket, s, err);
  if (!x->tls) {
    free(x);
    return -1;
  }
  /* Bytes the stream read before TLS came (a client's hello, arrived while
   * the server set its options) are the engine's first. */
  size_t n = loom_stream_buffered(s);
  if (n > 0) {
    if (loom_tls_feed(x->tls, loom_stream_peek(s), n) != 0) {
      *err = *loom_tls_error(x->tls);
      loom_tls_free(x->tls);
      free(x);
      return -1;
    }
    loom_stream_consume(s, n);
  }
  loom_stream_set_transport(s, &tls_transport, x);
  return 0;
}

int loom_tls_transport_start(loom_stream_t *s) {
  tls_transport_t *x = s->transport_data;
  return drain(s, x);
}

loom_tls_t *loom_tls_transport_engine(const loom_stream_t *s) {
  const tls_transport_t *x = of(s);
  return x ? x->tls : NULL;
}

const loom_tls_error_t *loom_tls_stream_error(const loom_stream_t *s) {
  const tls_transport_t *x = of(s);
  if (!x || socket_error(x))
    return NULL;
  const loom_tls_error_t *e = loom_tls_error(x->tls);
  return e->code != LOOM_TLS_OK ? e : NULL;
}

static void watched_on_read(loom_stream_t *s) {
  tls_transport_t *x = s->transport_data;
  if (x->watch)
    x->watch(s);
  if (x->owner_on_read)
    x->owner_on_read(s);
}

void loom_tls_transport_watch(loom_stream_t *s, loom_stream_cb cb, void *arg) {
  tls_transport_t *x = s->transport_data;
  x->watch = cb;
  x->watch_arg = arg;
  if (s->on_read != watched_on_read) {
    x->owner_on_read = s->on_read;
    s->on_read = watched_on_read;
  }
}

void loom_tls_transport_unwatch(loom_stream_t *s) {
  tls_transport_t *x = of(s);
  if (!x)
    return;
  x->watch = NULL;
  x->watch_arg = NULL;
  /* A close cleared on_read for good: it stays cleared. */
  if (s->on_read == watched_on_read)
    s->on_read = x->owner_on_read;
}

void *loom_tls_transport_watcher(const loom_stream_t *s) {
  const tls_transport_t *x = of(s);
  return x ? x->watch_arg : NULL;
}
