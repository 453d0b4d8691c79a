/* The buffered stream (stream.h). */
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include "stream.h"

/* Where bytes land while a stream has no room of its own: libuv calls the
 * read callback right after the allocation, on this thread, so one area
 * per thread serves every stream of every loop it runs. */
#define SCRATCH_SIZE (64 * 1024)
static _Thread_local char scratch[SCRATCH_SIZE];
/* Read straight into the buffer only when it has at least this much room
 * left; a smaller read would cost more system calls than the copy. */
#define DIRECT_MIN 4096

typedef struct loom_stream_write_req {
  uv_write_t req;
  size_t len;
  char data[];
} loom_stream_write_req_t;

loom_stream_t *loom_stream_new(loom_loop_t *loop, int kind, int *err) {
  loom_stream_t *s = calloc(1, sizeof *s);
  if (s == NULL) {
    *err = UV_ENOMEM;
    return NULL;
  }
  int rc = kind == LOOM_STREAM_TCP ? uv_tcp_init(&loop->uv, &s->h.tcp)
                                   : uv_pipe_init(&loop->uv, &s->h.pipe, 0);
  if (rc) {
    free(s);
    *err = rc;
    return NULL;
  }
  s->h.handle.data = s;
  s->loop = loop;
  s->kind = kind;
  s->high_water = LOOM_STREAM_HIGH_WATER;
  return s;
}

int loom_stream_check_path(const char *path) {
  struct sockaddr_un sun;
  return strlen(path) < sizeof sun.sun_path ? 0 : UV_ENAMETOOLONG;
}

void loom_stream_set_transport(loom_stream_t *s, const loom_transport_t *t, void *data) {
  s->transport = t;
  s->transport_data = data;
}

static size_t read_limit(const loom_stream_t *s) {
  return s->want > s->high_water ? s->want : s->high_water;
}

static int can_read(const loom_stream_t *s) {
  return !s->eof && !s->read_error && !s->closing && loom_stream_buffered(s) < read_limit(s);
}

/* Reading stops lazily: a full buffer refuses the next read (libuv then
 * reports UV_ENOBUFS), so a reader that takes the bytes before more arrive
 * costs no stop and restart (two epoll_ctl calls each). */
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  loom_stream_t *s = h->data;
  if (loom_stream_buffered(s) >= read_limit(s)) {
    *buf = uv_buf_init(NULL, 0);
    return;
  }
  if (s->transport == NULL) {
    size_t len = s->rend - s->rstart;
    if (s->rcap - s->rend < DIRECT_MIN && s->rstart > 0 && s->rcap - len >= DIRECT_MIN) {
      memmove(s->rbuf, s->rbuf + s->rstart, len);
      s->rstart = 0;
      s->rend = len;
    }
    if (s->rcap - s->rend >= DIRECT_MIN) {
      *buf = uv_buf_init(s->rbuf + s->rend, (unsigned)(s->rcap - s->rend));
      return;
    }
  }
  *buf = uv_buf_init(scratch, SCRATCH_SIZE);
}

static void stop_reading(loom_stream_t *s) {
  if (s->reading) {
    uv_read_stop(&s->h.stream);
    s->reading = 0;
  }
}

static void on_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf) {
  loom_stream_t *s = h->data;
  if (nread == 0)
    return;
  if (nread == UV_ENOBUFS) {
    stop_reading(s);
    return;
  }
  if (nread > 0) {
    int rc = 0;
    if (buf->base != scratch)
      s->rend += (size_t)nread;
    else if (s->transport)
      rc = s->transport->received(s, buf->base, (size_t)nread);
    else
      rc = loom_stream_push(s, buf->base, (size_t)nread);
    if (rc < 0 && !s->read_error)
      s->read_error = rc;
  } else if (nread == UV_EOF) {
    int rc = s->transport ? s->transport->eof(s) : 0;
    if (rc < 0)
      s->read_error = rc;
    else
      s->eof = 1;
  } else {
    s->read_error = (int)nread;
  }
  if (s->eof || s->read_error)
    stop_reading(s);
  if (s->on_read)
    s->on_read(s);
}

static void start_reading(loom_stream_t *s) {
  if (s->reading || !can_read(s))
    return;
  int rc = uv_read_start(&s->h.stream, on_alloc, on_read);
  if (rc)
    s->read_error = rc;
  else
    s->reading = 1;
}

int loom_stream_want(loom_stream_t *s, size_t n) {
  s->want = n;
  start_reading(s);
  return s->reading ? 0 : s->read_error;
}

void loom_stream_set_high_water(loom_stream_t *s, size_t n) {
  s->high_water = n;
  start_reading(s);
}

void loom_stream_consume(loom_stream_t *s, size_t n) {
  s->rstart += n;
  if (s->rstart == s->rend) {
    s->rstart = s->rend = 0;
    /* A buffer grown past the mark (a long read(n), read("a")) goes back
     * to the allocator once emptied. */
    if (s->rcap > s->high_water) {
      free(s->rbuf);
      s->rbuf = NULL;
      s->rcap = 0;
    }
  }
  if (s->want && loom_stream_buffered(s) < s->want)
    s->want = 0;
  start_reading(s);
}

int loom_stream_push(loom_stream_t *s, const char *p, size_t n) {
  if (n > 0) {
    size_t len = s->rend - s->rstart;
    if (s->rcap - s->rend < n && s->rstart > 0) {
      memmove(s->rbuf, s->rbuf + s->rstart, len);
      s->rstart = 0;
      s->rend = len;
    }
    if (s->rcap - s->rend < n) {
      size_t cap = s->rcap ? s->rcap : 256;
      while (cap < len + n)
        cap *= 2;
      char *grown = realloc(s->rbuf, cap);
      if (grown == NULL)
        return UV_ENOMEM;
      s->rbuf = grown;
      s->rcap = cap;
    }
    memcpy(s->rbuf + s->rend, p, n);
    s->rend += n;
  }
  return 0;
}

void loom_stream_fail(loom_stream_t *s, int err) {
  if (!s->read_error)
    s->read_error = err;
  stop_reading(s);
}

static void on_written(uv_write_t *req, int status) {
  loom_stream_write_req_t *w = (loom_stream_write_req_t *)req;
  loom_stream_t *s = req->handle->data;
  s->queued -= w->len;
  free(w);
  if (status < 0 && status != UV_ECANCELED && !s->write_error)
    s->write_error = status;
  if (s->on_write)
    s->on_write(s);
}

int loom_stream_send_raw(loom_stream_t *s, const char *p, size_t n) {
  if (s->closing)
    return UV_EPIPE;
  if (s->write_error)
    return s->write_error;
  if (n == 0)
    return 0;
  if (s->queued == 0) {
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int rc = uv_try_write(&s->h.stream, &b, 1);
    if (rc >= 0) {
      p += rc;
      n -= (size_t)rc;
    } else if (rc != UV_EAGAIN && rc != UV_ENOSYS) {
      s->write_error = rc;
      return rc;
    }
    if (n == 0)
      return 0;
  }
  loom_stream_write_req_t *w = malloc(sizeof *w + n);
  if (w == NULL)
    return UV_ENOMEM;
  w->len = n;
  memcpy(w->data, p, n);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
  int rc = uv_write(&w->req, &s->h.stream, &b, 1, on_written);
  if (rc) {
    free(w);
    s->write_error = rc;
    return rc;
  }
  s->queued += n;
  return 0;
}

int loom_stream_write(loom_stream_t *s, const char *p, size_t n) {
  if (s->closing || s->shut)
    return UV_EPIPE;
  if (s->write_error)
    return s->write_error;
  return s->transport ? s->transport->send(s, p, n) : loom_stream_send_raw(s, p, n);
}

static void on_shut(uv_shutdown_t *req, int status) {
  loom_stream_t *s = req->handle->data;
  s->shutdown_status = status;
  if (s->on_shutdown)
    s->on_shutdown(s);
}

int loom_stream_shutdown(loom_stream_t *s, loom_stream_cb on_done) {
  if (s->closing)
    return UV_EPIPE;
  if (s->shut)
    return UV_EALREADY;
  if (s->transport && s->transport->shutdown) {
    int rc = s->transport->shutdown(s);
    if (rc)
      return rc;
  }
  int rc = uv_shutdown(&s->shutdown_req, &s->h.stream, on_shut);
  if (rc)
    return rc;
  s->shut = 1;
  s->on_shutdown = on_done;
  return 0;
}

static void on_handle_closed(uv_handle_t *h) {
  loom_stream_t *s = h->data;
  if (s->on_closed)
    s->on_closed(s);
  if (s->transport && s->transport->free)
    s->transport->free(s);
  free(s->rbuf);
  free(s);
}

void loom_stream_close(loom_stream_t *s, loom_stream_cb on_closed) {
  if (s->closing)
    return;
  s->closing = 1;
  s->on_read = s->on_write = s->on_shutdown = NULL;
  s->on_closed = on_closed;
  stop_reading(s);
  uv_close(&s->h.handle, on_handle_closed);
}
