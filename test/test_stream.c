/* core/stream, core/connect, core/listener: a loopback TCP pair, a
 * transport under a stream (the seam TLS plugs into), reading that stops
 * at the high-water mark and goes on once the reader takes bytes, every
 * host tried in turn, and a close that frees what it holds. */
#include <string.h>
#include "connect.h"
#include "listener.h"
#include "runner.h"

typedef struct {
  loom_stream_t *client, *server;
  int status, calls;
} pair_t;

static void on_connected(loom_connect_t *c, int status, loom_stream_t *s) {
  pair_t *p = c->data;
  p->calls++;
  p->status = status;
  p->client = s;
}

static void poll_until(loom_loop_t *loop, const int *flag) {
  for (int i = 0; i < 2000 && !*flag; i++)
    loom_loop_poll(loop, 10);
  ASSERT(*flag);
}

static void on_ready(loom_listener_t *l) { (void)l; }

static int port_of(loom_listener_t *l) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  ASSERT_EQ(uv_tcp_getsockname(&l->s->h.tcp, (struct sockaddr *)&ss, &len), 0);
  return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* Listens on 127.0.0.1, connects to it through hosts (NULL: 127.0.0.1
 * alone) and accepts: p holds both ends. */
static void make_pair(loom_loop_t *loop, loom_listener_t *l, pair_t *p, const char *const *hosts,
                      int nhosts) {
  struct sockaddr_in sa;
  uv_ip4_addr("127.0.0.1", 0, &sa);
  memset(l, 0, sizeof *l);
  l->on_connection = on_ready;
  ASSERT_EQ(loom_listener_open(l, loop, (struct sockaddr *)&sa, NULL, 16), 0);
  static const char *const local[] = {"127.0.0.1"};
  int err = 0;
  memset(p, 0, sizeof *p);
  ASSERT(loom_connect_tcp(loop, hosts ? hosts : local, hosts ? nhosts : 1, port_of(l), 0,
                          on_connected, p, &err) != NULL);
  poll_until(loop, &p->calls);
  ASSERT_EQ(p->status, 0);
  poll_until(loop, &l->ready);
  ASSERT_EQ(loom_listener_accept(l, &p->server), 0);
}

static void wait_buffered(loom_loop_t *loop, loom_stream_t *s, size_t n) {
  ASSERT_EQ(loom_stream_want(s, n), 0);
  for (int i = 0; i < 2000 && loom_stream_buffered(s) < n && !s->eof; i++)
    loom_loop_poll(loop, 10);
}

static void close_all(loom_loop_t *loop, loom_listener_t *l, pair_t *p) {
  loom_stream_close(p->client, NULL);
  loom_stream_close(p->server, NULL);
  loom_listener_close(l);
  loom_test_loop_close(loop);
}

/* A transport that flips every byte's bits both ways: what the socket
 * carries differs from what the user reads and writes. */
static int flip_received(loom_stream_t *s, const char *p, size_t n) {
  char buf[256];
  while (n > 0) {
    size_t k = n < sizeof buf ? n : sizeof buf;
    for (size_t i = 0; i < k; i++)
      buf[i] = (char)~p[i];
    int rc = loom_stream_push(s, buf, k);
    if (rc)
      return rc;
    p += k;
    n -= k;
  }
  return 0;
}

static int flip_send(loom_stream_t *s, const char *p, size_t n) {
  char buf[256];
  ASSERT(n <= sizeof buf);
  for (size_t i = 0; i < n; i++)
    buf[i] = (char)~p[i];
  return loom_stream_send_raw(s, buf, n);
}

static int flip_eof(loom_stream_t *s) { (void)s; return 0; }

static int freed;
static void flip_free(loom_stream_t *s) { freed += s->transport_data == &freed; }

static const loom_transport_t flip = {flip_received, flip_send, flip_eof, NULL, flip_free};

TEST_IMPL(stream_transport) {
  loom_loop_t loop;
  loom_listener_t l;
  pair_t p;
  loom_test_loop_init(&loop);
  make_pair(&loop, &l, &p, NULL, 0);
  loom_stream_set_transport(p.client, &flip, &freed);
  loom_stream_set_transport(p.server, &flip, &freed);
  ASSERT_EQ(loom_stream_write(p.client, "hello", 5), 0);
  wait_buffered(&loop, p.server, 5);
  ASSERT_EQ(loom_stream_buffered(p.server), 5);
  ASSERT(memcmp(loom_stream_peek(p.server), "hello", 5) == 0);
  /* Bytes sent raw reach the peer's transport as they are. */
  char raw[3] = {(char)~'a', (char)~'b', (char)~'c'};
  ASSERT_EQ(loom_stream_send_raw(p.server, raw, 3), 0);
  wait_buffered(&loop, p.client, 3);
  ASSERT(memcmp(loom_stream_peek(p.client), "abc", 3) == 0);
  freed = 0;
  close_all(&loop, &l, &p);
  ASSERT_EQ(freed, 2);
}

static void count_reads(loom_stream_t *s) { (*(int *)s->data)++; }

TEST_IMPL(stream_high_water) {
  loom_loop_t loop;
  loom_listener_t l;
  pair_t p;
  loom_test_loop_init(&loop);
  make_pair(&loop, &l, &p, NULL, 0);
  static char big[1 << 20];
  memset(big, 'x', sizeof big);
  ASSERT_EQ(loom_stream_write(p.client, big, sizeof big), 0);
  int reads = 0;
  p.server->data = &reads;
  p.server->on_read = count_reads;
  loom_stream_set_high_water(p.server, 4096);
  /* Reading stops once the buffer is past the mark: what it holds stays
   * below the mark and one read. */
  for (int i = 0; i < 100; i++)
    loom_loop_poll(&loop, 5);
  ASSERT(reads > 0);
  ASSERT(loom_stream_buffered(p.server) >= 4096);
  ASSERT(loom_stream_buffered(p.server) <= 4096 + 64 * 1024);
  ASSERT(!p.server->reading);
  /* Taking bytes reads on, until every byte came. */
  size_t total = 0;
  for (int i = 0; i < 20000 && total < sizeof big; i++) {
    size_t n = loom_stream_buffered(p.server);
    total += n;
    loom_stream_consume(p.server, n);
    if (total < sizeof big)
      loom_loop_poll(&loop, 5);
  }
  ASSERT_EQ(total, sizeof big);
  close_all(&loop, &l, &p);
}

/* ::1 refuses (nothing listens there), 127.0.0.1 answers: the connect
 * moves on to the next host and succeeds. */
TEST_IMPL(connect_every_host) {
  loom_loop_t loop;
  loom_listener_t l;
  pair_t p;
  loom_test_loop_init(&loop);
  static const char *const hosts[] = {"::1", "127.0.0.1"};
  make_pair(&loop, &l, &p, hosts, 2);
  struct sockaddr_storage ss;
  int len = sizeof ss;
  ASSERT_EQ(uv_tcp_getpeername(&p.client->h.tcp, (struct sockaddr *)&ss, &len), 0);
  ASSERT_EQ(ss.ss_family, AF_INET);
  close_all(&loop, &l, &p);
}

TEST_IMPL(connect_refused) {
  loom_loop_t loop;
  loom_listener_t l;
  loom_test_loop_init(&loop);
  struct sockaddr_in sa;
  uv_ip4_addr("127.0.0.1", 0, &sa);
  memset(&l, 0, sizeof l);
  ASSERT_EQ(loom_listener_open(&l, &loop, (struct sockaddr *)&sa, NULL, 1), 0);
  int port = port_of(&l);
  loom_listener_close(&l);
  pair_t p;
  memset(&p, 0, sizeof p);
  static const char *const hosts[] = {"127.0.0.1"};
  int err = 0;
  ASSERT(loom_connect_tcp(&loop, hosts, 1, port, 0, on_connected, &p, &err) != NULL);
  poll_until(&loop, &p.calls);
  ASSERT_EQ(p.status, UV_ECONNREFUSED);
  ASSERT(p.client == NULL);
  loom_test_loop_close(&loop);
}

static void mark_closed(loom_stream_t *s) { (*(int *)s->data)++; }

/* A stream closed with writes queued and bytes buffered frees them all
 * (LeakSanitizer would say otherwise) and says so once. */
TEST_IMPL(stream_close_frees) {
  loom_loop_t loop;
  loom_listener_t l;
  pair_t p;
  loom_test_loop_init(&loop);
  make_pair(&loop, &l, &p, NULL, 0);
  /* More than any kernel buffers for a loopback connection. */
  size_t len = 64 << 20;
  char *big = calloc(1, len);
  ASSERT(big != NULL);
  ASSERT_EQ(loom_stream_write(p.client, big, len), 0);
  free(big); /* the stream holds a copy of what it queued */
  ASSERT(loom_stream_queued(p.client) > 0);
  ASSERT_EQ(loom_stream_write(p.server, "x", 1), 0);
  wait_buffered(&loop, p.client, 1);
  int closed = 0;
  p.client->data = &closed;
  loom_stream_close(p.client, mark_closed);
  loom_stream_close(p.client, mark_closed);
  poll_until(&loop, &closed);
  ASSERT_EQ(closed, 1);
  loom_stream_close(p.server, NULL);
  loom_listener_close(&l);
  loom_test_loop_close(&loop);
}
