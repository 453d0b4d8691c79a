/* core/tls_transport: TLS under core/stream's seam, on the loop, over a
 * connected pair of sockets (a socketpair: no port, no listener). The
 * engine's own cases are test_tls.c's; these check the plumbing: bytes
 * both ways through the stream's buffer, errors as the stream's, EOF on
 * close_notify and "truncated" without it. */
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include "certs.h"
#include "runner.h"
#include "tls_transport.h"

static char dir[64];

typedef struct {
  loom_stream_t *s;
  char *got; /* what was read */
  size_t n, cap;
  int echo;   /* write back what comes */
  int closing; /* side_close ran */
  int closed;  /* on_closed ran */
} side_t;

static void take(side_t *x) {
  loom_stream_t *s = x->s;
  size_t n = loom_stream_buffered(s);
  if (n == 0)
    return;
  if (x->echo)
    ASSERT_EQ(loom_stream_write(s, loom_stream_peek(s), n), 0);
  if (x->n + n > x->cap) {
    x->cap = (x->n + n) * 2;
    x->got = realloc(x->got, x->cap);
  }
  memcpy(x->got + x->n, loom_stream_peek(s), n);
  x->n += n;
  loom_stream_consume(s, n);
}

static void on_read(loom_stream_t *s) {
  take(s->data);
}

static void on_closed(loom_stream_t *s) {
  side_t *x = s->data;
  x->closed = 1;
}

/* A stream over fd, reading, its reads going to x. */
static void side_stream(loom_loop_t *loop, side_t *x, int fd) {
  memset(x, 0, sizeof *x);
  int err = 0;
  x->s = loom_stream_new(loop, LOOM_STREAM_PIPE, &err);
  ASSERT(x->s != NULL);
  ASSERT_EQ(uv_pipe_open(&x->s->h.pipe, fd), 0);
  x->s->data = x;
  x->s->on_read = on_read;
  ASSERT_EQ(loom_stream_want(x->s, 0), 0);
}

/* TLS under x: a server with cert and key, else a client trusting the
 * test CA and checking host. */
static void side_tls(side_t *x, const char *cert, const char *key, const char *host) {
  char ca[128], c[128], k[128];
  snprintf(ca, sizeof ca, "%s/ca.crt", dir);
  loom_tls_config_t cfg;
  memset(&cfg, 0, sizeof cfg);
  if (cert) {
    snprintf(c, sizeof c, "%s/%s", dir, cert);
    snprintf(k, sizeof k, "%s/%s", dir, key);
    cfg.server = 1;
    cfg.cert = c;
    cfg.key = k;
  } else {
    cfg.verify = 1;
    cfg.ca_file = ca;
  }
  loom_tls_error_t e;
  loom_tls_ctx_t *ctx = loom_tls_ctx_get(&cfg, &e);
  ASSERT(ctx != NULL);
  ASSERT_EQ(loom_tls_transport_attach(x->s, ctx, host, &e), 0);
  loom_tls_ctx_release(ctx);
  ASSERT(loom_tls_transport_engine(x->s) != NULL);
  ASSERT_EQ(loom_tls_transport_start(x->s), 0);
}

/* Once: the stream is freed after its close. */
static void side_close(side_t *x) {
  if (!x->closing)
    loom_stream_close(x->s, on_closed);
  x->closing = 1;
}

/* Runs the loop until done(arg) (bounded). */
static void run_until(loom_loop_t *loop, int (*done)(void *), void *arg) {
  for (int i = 0; i < 5000 && !done(arg); i++)
    loom_loop_poll(loop, 10);
  ASSERT(done(arg));
}

static int is_established(void *arg) {
  side_t *x = arg;
  return loom_tls_established(loom_tls_transport_engine(x->s)) || x->s->read_error;
}

static int is_ended(void *arg) {
  side_t *x = arg;
  return x->s->eof || x->s->read_error;
}

static int is_closed(void *arg) {
  side_t *x = arg;
  return x->closed;
}

static size_t want_n;
static int has_all(void *arg) {
  side_t *x = arg;
  return x->n >= want_n || x->s->read_error;
}

/* Certificates, a loop, and a client and a server (cert and key) over a
 * socketpair, the client checking for localhost. */
static void start(loom_loop_t *loop, side_t *client, side_t *server, const char *cert,
                  const char *key) {
  /* A write to a peer gone raises SIGPIPE, which a libuv program ignores
   * (the write's EPIPE says it). */
  signal(SIGPIPE, SIG_IGN);
  loom_test_certs_make(dir, sizeof dir);
  loom_test_loop_init(loop);
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  side_stream(loop, server, fds[1]);
  side_tls(server, cert, key, NULL);
  side_stream(loop, client, fds[0]);
  side_tls(client, NULL, NULL, "localhost");
}

static void finish(loom_loop_t *loop, side_t *client, side_t *server) {
  side_close(client);
  side_close(server);
  run_until(loop, is_closed, client);
  run_until(loop, is_closed, server);
  free(client->got);
  free(server->got);
  loom_test_loop_close(loop);
  loom_test_certs_remove(dir);
}

TEST_IMPL(tls_stream_echo) {
  loom_loop_t loop;
  side_t c, s;
  start(&loop, &c, &s, "server.crt", "server.key");
  s.echo = 1;
  /* Written before the handshake completed: kept and sent in order. */
  size_t big = 2 * 1024 * 1024 + 3;
  char *data = malloc(big);
  for (size_t i = 0; i < big; i++)
    data[i] = (char)(i * 7 + (i >> 12));
  ASSERT_EQ(loom_stream_write(c.s, data, 1000), 0);
  run_until(&loop, is_established, &c);
  ASSERT(!c.s->read_error);
  ASSERT_EQ(loom_stream_write(c.s, data + 1000, big - 1000), 0);
  want_n = big;
  run_until(&loop, has_all, &c);
  ASSERT(!c.s->read_error && !s.s->read_error);
  ASSERT_EQ(c.n, big);
  ASSERT(memcmp(c.got, data, big) == 0);
  ASSERT_EQ(s.n, big);
  free(data);
  /* close_notify, then the socket's shutdown: EOF for the server, with
   * nothing lost. */
  ASSERT_EQ(loom_stream_shutdown(c.s, NULL), 0);
  run_until(&loop, is_ended, &s);
  ASSERT(s.s->eof && !s.s->read_error);
  finish(&loop, &c, &s);
}

TEST_IMPL(tls_stream_wrong_host) {
  loom_loop_t loop;
  side_t c, s;
  start(&loop, &c, &s, "wrong.crt", "wrong.key");
  run_until(&loop, is_established, &c);
  ASSERT_EQ(c.s->read_error, LOOM_TLS_STREAM_ERROR);
  const loom_tls_error_t *e = loom_tls_stream_error(c.s);
  ASSERT(e != NULL && e->code == LOOM_TLS_EVERIFY);
  ASSERT(strstr(e->reason, "hostname mismatch") != NULL);
  /* The server hears the client's alert. */
  run_until(&loop, is_ended, &s);
  ASSERT(loom_tls_stream_error(s.s) != NULL);
  ASSERT(loom_stream_write(c.s, "x", 1) != 0);
  finish(&loop, &c, &s);
}

TEST_IMPL(tls_stream_truncated) {
  loom_loop_t loop;
  side_t c, s;
  start(&loop, &c, &s, "server.crt", "server.key");
  run_until(&loop, is_established, &c);
  run_until(&loop, is_established, &s);
  ASSERT_EQ(loom_stream_write(s.s, "partial", 7), 0);
  /* The server's socket goes away with no close_notify. */
  side_close(&s);
  run_until(&loop, is_ended, &c);
  ASSERT(c.n == 7 && memcmp(c.got, "partial", 7) == 0);
  ASSERT(!c.s->eof);
  ASSERT_EQ(c.s->read_error, LOOM_TLS_STREAM_ERROR);
  ASSERT_EQ(loom_tls_stream_error(c.s)->code, LOOM_TLS_ETRUNCATED);
  finish(&loop, &c, &s);
}

TEST_IMPL(tls_stream_close_notify_is_eof) {
  loom_loop_t loop;
  side_t c, s;
  start(&loop, &c, &s, "server.crt", "server.key");
  run_until(&loop, is_established, &s);
  ASSERT_EQ(loom_stream_write(s.s, "bye", 3), 0);
  /* close_notify with the socket still open for reading: EOF already. */
  ASSERT_EQ(s.s->transport->shutdown(s.s), 0);
  run_until(&loop, is_ended, &c);
  ASSERT(c.s->eof && !c.s->read_error);
  ASSERT(c.n == 3 && memcmp(c.got, "bye", 3) == 0);
  finish(&loop, &c, &s);
}

static int watched, watched_closing;

static void watch_cb(loom_stream_t *s) {
  ASSERT(loom_tls_transport_watcher(s) == &watched);
  watched++;
  watched_closing += s->closing;
}

/* The owner's on_read still runs behind the watch, and the watch hears the
 * stream's end when it is freed mid-handshake. */
TEST_IMPL(tls_stream_watch) {
  loom_loop_t loop;
  side_t c, s;
  start(&loop, &c, &s, "server.crt", "server.key");
  s.echo = 1;
  loom_tls_transport_watch(c.s, watch_cb, &watched);
  ASSERT_EQ(loom_stream_write(c.s, "ping", 4), 0);
  want_n = 4;
  run_until(&loop, has_all, &c);
  ASSERT(watched > 0 && watched_closing == 0);
  ASSERT(c.n == 4 && memcmp(c.got, "ping", 4) == 0);
  loom_tls_transport_unwatch(c.s);
  ASSERT(loom_tls_transport_watcher(c.s) == NULL);
  int before = watched;
  ASSERT_EQ(loom_stream_write(c.s, "pong", 4), 0);
  want_n = 8;
  run_until(&loop, has_all, &c);
  ASSERT_EQ(watched, before);
  finish(&loop, &c, &s);
  /* Freed while watched. */
  start(&loop, &c, &s, "server.crt", "server.key");
  watched = watched_closing = 0;
  loom_tls_transport_watch(c.s, watch_cb, &watched);
  finish(&loop, &c, &s);
  ASSERT_EQ(watched_closing, 1);
}

static int has_bytes(void *arg) {
  const loom_stream_t *s = arg;
  return loom_stream_buffered(s) > 0;
}

/* The client's hello arrives before the server put TLS on (it was busy
 * setting options): the bytes its stream read are the engine's first. */
TEST_IMPL(tls_stream_hello_before_attach) {
  signal(SIGPIPE, SIG_IGN);
  loom_test_certs_make(dir, sizeof dir);
  loom_loop_t loop;
  loom_test_loop_init(&loop);
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  side_t c, s;
  side_stream(&loop, &s, fds[1]);
  s.s->on_read = NULL; /* nobody takes the bytes yet */
  side_stream(&loop, &c, fds[0]);
  side_tls(&c, NULL, NULL, "localhost");
  run_until(&loop, has_bytes, s.s);
  s.s->on_read = on_read;
  s.echo = 1;
  side_tls(&s, "server.crt", "server.key", NULL);
  ASSERT_EQ(loom_stream_buffered(s.s), 0);
  ASSERT_EQ(loom_stream_write(c.s, "hi", 2), 0);
  want_n = 2;
  run_until(&loop, has_all, &c);
  ASSERT(!c.s->read_error && c.n == 2 && memcmp(c.got, "hi", 2) == 0);
  finish(&loop, &c, &s);
}
