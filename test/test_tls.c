/* core/tls: a client engine and a server engine pumping ciphertext into
 * each other in memory, no socket and no loop. Certificates are made per
 * test by test/tls_certs.sh (the openssl command) in a temporary directory. */
#include <pthread.h>
#include <string.h>
#include "certs.h"
#include "runner.h"
#include "tls.h"

typedef struct {
  char *p;
  size_t n, cap;
} bytes_t;

static void bytes_add(bytes_t *b, const void *s, size_t n) {
  if (b->n + n > b->cap) {
    b->cap = (b->n + n) * 2;
    b->p = realloc(b->p, b->cap);
    ASSERT(b->p != NULL);
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
}

typedef struct end end_t;
struct end {
  loom_tls_t *t;
  end_t *peer;
  bytes_t wire;   /* ciphertext the peer sent, not fed yet */
  bytes_t plain;  /* plaintext read */
  int done;       /* DONE seen */
  int eof;        /* EOF read */
  int error;      /* ERROR seen */
  int peer_gone;  /* the transport to the peer ended: feed EOF */
};

static int to_peer(void *data, const char *buf, size_t len) {
  end_t *e = data;
  bytes_add(&e->peer->wire, buf, len);
  return 0;
}

static char dir[64];

static void path(char *out, size_t len, const char *name) {
  snprintf(out, len, "%s/%s", dir, name);
}

static void certs_remove(void) {
  loom_test_certs_remove(dir);
}

/* Paths under dir, kept for the test's length. */
static char ca_crt[128], other_ca_crt[128], server_crt[128], server_key[128], wrong_crt[128],
    wrong_key[128], stranger_crt[128], stranger_key[128], client_crt[128], client_key[128];

static void setup(void) {
  loom_test_certs_make(dir, sizeof dir);
  path(ca_crt, sizeof ca_crt, "ca.crt");
  path(other_ca_crt, sizeof other_ca_crt, "other_ca.crt");
  path(server_crt, sizeof server_crt, "server.crt");
  path(server_key, sizeof server_key, "server.key");
  path(wrong_crt, sizeof wrong_crt, "wrong.crt");
  path(wrong_key, sizeof wrong_key, "wrong.key");
  path(stranger_crt, sizeof stranger_crt, "stranger.crt");
  path(stranger_key, sizeof stranger_key, "stranger.key");
  path(client_crt, sizeof client_crt, "client.crt");
  path(client_key, sizeof client_key, "client.key");
}

static loom_tls_config_t client_cfg(void) {
  loom_tls_config_t c;
  memset(&c, 0, sizeof c);
  c.verify = 1;
  c.ca_file = ca_crt;
  return c;
}

static loom_tls_config_t server_cfg(const char *cert, const char *key) {
  loom_tls_config_t c;
  memset(&c, 0, sizeof c);
  c.server = 1;
  c.cert = cert;
  c.key = key;
  return c;
}

static void end_open(end_t *e, end_t *peer, const loom_tls_config_t *cfg, const char *host) {
  memset(e, 0, sizeof *e);
  e->peer = peer;
  loom_tls_error_t err;
  loom_tls_ctx_t *ctx = loom_tls_ctx_get(cfg, &err);
  if (!ctx)
    fprintf(stderr, "ctx: %s\n", err.reason);
  ASSERT(ctx != NULL);
  e->t = loom_tls_new(ctx, host, to_peer, e, &err);
  ASSERT(e->t != NULL);
  loom_tls_ctx_release(ctx); /* the connection keeps its own reference */
}

static void end_close(end_t *e) {
  loom_tls_free(e->t);
  free(e->wire.p);
  free(e->plain.p);
}

/* One turn of an end: feed what came, advance, read all there is. 1 when
 * something happened. */
static int turn(end_t *e) {
  int moved = 0;
  if (e->wire.n) {
    ASSERT_EQ(loom_tls_feed(e->t, e->wire.p, e->wire.n), e->error ? LOOM_TLS_ERROR : 0);
    e->wire.n = 0;
    moved = 1;
  }
  if (e->peer_gone == 1) {
    loom_tls_feed_eof(e->t);
    e->peer_gone = 2;
    moved = 1;
  }
  if (e->error || e->eof)
    return moved;
  int h = loom_tls_handshake(e->t);
  if (h == LOOM_TLS_ERROR) {
    e->error = 1;
    return 1;
  }
  if (h == LOOM_TLS_DONE) {
    e->done++;
    moved = 1;
  }
  if (h == LOOM_TLS_WANT)
    return moved;
  char buf[20000];
  for (;;) {
    long n = loom_tls_read(e->t, buf, sizeof buf);
    if (n > 0) {
      bytes_add(&e->plain, buf, (size_t)n);
      moved = 1;
      continue;
    }
    if (n == LOOM_TLS_EOF)
      e->eof = 1, moved = 1;
    if (n == LOOM_TLS_ERROR)
      e->error = 1, moved = 1;
    break;
  }
  return moved;
}

/* Until neither end has anything left to do (bounded). */
static void pump(end_t *a, end_t *b) {
  for (int i = 0; i < 1000; i++)
    if (!(turn(a) | turn(b)))
      return;
  ASSERT(!"pump did not settle");
}

static void pair(end_t *c, end_t *s, const loom_tls_config_t *cc, const char *host,
                 const loom_tls_config_t *sc) {
  end_open(c, s, cc, host);
  end_open(s, c, sc, NULL);
  pump(c, s);
}

static int contains(const char *s, const char *part) {
  return strstr(s, part) != NULL;
}

static void assert_reason(const end_t *e, loom_tls_code_t code, const char *part) {
  const loom_tls_error_t *err = loom_tls_error(e->t);
  if (err->code != code || !contains(err->reason, part))
    fprintf(stderr, "got %s: %s\n", loom_tls_code_name(err->code), err->reason);
  ASSERT_EQ(err->code, code);
  ASSERT(contains(err->reason, part));
}

TEST_IMPL(tls_handshake) {
  setup();
  loom_tls_config_t cc = client_cfg(), sc = server_cfg(server_crt, server_key);
  end_t c, s;
  pair(&c, &s, &cc, "localhost", &sc);
  ASSERT(!c.error && !s.error);
  /* Said once each, though turn() asked on every round. */
  ASSERT_EQ(c.done, 1);
  ASSERT_EQ(s.done, 1);
  ASSERT_EQ(loom_tls_handshake(c.t), LOOM_TLS_READY);
  ASSERT(loom_tls_established(c.t) && loom_tls_established(s.t));
  ASSERT(loom_tls_queued(c.t) == 0);
  /* No ALPN asked for, none settled. */
  size_t n;
  loom_tls_alpn(c.t, &n);
  ASSERT_EQ(n, 0);
  end_close(&c);
  end_close(&s);
  certs_remove();
}

static void fill(char *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++)
    p[i] = (char)((i * 131 + seed) >> 3);
}

TEST_IMPL(tls_data_both_ways) {
  setup();
  loom_tls_config_t cc = client_cfg(), sc = server_cfg(server_crt, server_key);
  end_t c, s;
  pair(&c, &s, &cc, "localhost", &sc);
  /* Far beyond one 16 KiB record, and one byte, each way. */
  size_t big = 3 * 1024 * 1024 + 7;
  char *up = malloc(big), *down = malloc(big);
  fill(up, big, 1);
  fill(down, big, 2);
  ASSERT_EQ(loom_tls_write(c.t, up, big), 0);
  ASSERT_EQ(loom_tls_write(c.t, "!", 1), 0);
  ASSERT_EQ(loom_tls_write(s.t, down, big), 0);
  pump(&c, &s);
  ASSERT(!c.error && !s.error);
  ASSERT_EQ(s.plain.n, big + 1);
  ASSERT(memcmp(s.plain.p, up, big) == 0 && s.plain.p[big] == '!');
  ASSERT_EQ(c.plain.n, big);
  ASSERT(memcmp(c.plain.p, down, big) == 0);
  free(up);
  free(down);
  end_close(&c);
  end_close(&s);
  certs_remove();
}

TEST_IMPL(tls_alpn) {
  setup();
  const char *offer[] = {"h2", "http/1.1"};
  const char *accept[] = {"http/1.1", "h2"};
  const char *other[] = {"imap"};
  loom_tls_config_t cc = client_cfg(), sc = server_cfg(server_crt, server_key);
  cc.alpn = offer;
  cc.nalpn = 2;
  sc.alpn = accept;
  sc.nalpn = 2;
  end_t c, s;
  pair(&c, &s, &cc, "localhost", &sc);
  ASSERT(!c.error && !s.error);
  size_t n;
  const char *p = loom_tls_alpn(c.t, &n);
  /* The server's preference wins. */
  ASSERT(n == 8 && memcmp(p, "http/1.1", 8) == 0);
  p = loom_tls_alpn(s.t, &n);
  ASSERT(n == 8 && memcmp(p, "http/1.1", 8) == 0);
  end_close(&c);
  end_close(&s);
  /* Nothing in common: the connection goes on without ALPN. */
  sc.alpn = other;
  sc.nalpn = 1;
  pair(&c, &s, &cc, "localhost", &sc);
  ASSERT(!c.error && !s.error);
  loom_tls_alpn(c.t, &n);
  ASSERT_EQ(n, 0);
  end_close(&c);
  end_close(&s);
  certs_remove();
}

TEST_IMPL(tls_sni) {
  setup();
  loom_tls_config_t cc = client_cfg(), sc = server_cfg(server_crt, server_key);
  end_t c, s;
  pair(&c, &s, &cc, "localhost", &sc);
  ASSERT(!c.error && !s.error);
  const char *name = loom_tls_servername(s.t);
  ASSERT(name && strcmp(name, "localhost") == 0);
  end_close(&c);
  end_close(&s);
  /* An address is verified against the IP SANs and sent as no SNI. */
  pair(&c, &s, &cc, "127.0.0.1", &sc);
  ASSERT(!c.error && !s.error);
  ASSERT(loom_tls_servername(s.t) == NULL);
  end_close(&c);
  end_close(&s);
  pair(&c, &s, &cc, "::1", &sc);
  ASSERT(!c.error && !s.error);
  end_close(&c);
  end_close(&s);
  certs_remove();
}

TEST_IMPL(tls_wrong_host) {
  setup();
  loom_tls_config_t cc = client_cfg(), sc = server_cfg(wrong_crt, wrong_key);
  end_t c, s;
  pair(&c, &s, &cc, "localhost", &sc);
  ASSERT(c.error && !c.done);
  assert_reason(&c, LOOM_TLS_EVERIFY, "certificate verify failed: hostname mismatch");
  /* The client's alert told the server why. */
  ASSERT(s.error && !s.done);
  assert_reason(&s, LOOM_TLS_EHANDSHAKE, "bad certificate");
  ASSERT(loom_tls_read(c.t, (char[8]){0}, 8) == LOOM_TLS_ERROR);
  end_close(&c);
  end_close(&s);
  /* An address the certificate does not name. */
  sc = server_cfg(server_crt, server_key);
  pair(&c, &s, &cc, "127.0.0.2", &sc);
  assert_reason(&c, LOOM_TLS_EVERIFY, "IP address mismatch");
  end_close(&c);
  end_close(&s);
  certs_remove();
}

TEST_IMPL(tls_untrusted_ca) {
  setup();
  loom_tls_config_t cc = client_cfg(), sc = server_cfg(stranger_crt, stranger_key);
  end_t c, s;
  pair(&c, &s, &cc, "localhost", &sc);
  assert_reason(&c, LOOM_TLS_EVERIFY, "certificate verify failed: unable to get local issuer");
  ASSERT(s.error);
  end_close(&c);
  end_close(&s);
  /* The system's store does not know the test CA either. */
  cc.ca_file = NULL;
  sc = server_cfg(server_crt, server_key);
  pair(&c, &s, &cc, "localhost", &sc);
  assert_reason(&c, LOOM_TLS_EVERIFY, "certificate verify failed");
  end_close(&c);
  end_close(&s);
  certs_remove();
}

TEST_IMPL(tls_verify_off) {
  setup();
  loom_tls_config_t cc = client_cfg(), sc = server_cfg(stranger_crt, stranger_key);
  cc.verify = 0;
  cc.ca_file = NULL;
  end_t c, s;
  /* Neither the chain nor the name is checked. */
  pair(&c, &s, &cc, "wrong.example", &sc);
  ASSERT(!c.error && !s.error && c.done == 1);
  ASSERT_EQ(loom_tls_write(c.t, "ping", 4), 0);
  pump(&c, &s);
  ASSERT(s.plain.n == 4 && memcmp(s.plain.p, "ping", 4) == 0);
  end_close(&c);
  end_close(&s);
  certs_remove();
}

TEST_IMPL(tls_truncated) {
  setup();
  loom_tls_config_t cc = client_cfg(), sc = server_cfg(server_crt, server_key);
  end_t c, s;
  pair(&c, &s, &cc, "localhost", &sc);
  ASSERT_EQ(loom_tls_write(s.t, "last words", 10), 0);
  /* The server's socket closes without close_notify: its data first, then
   * the error, never a quiet EOF. */
  c.peer_gone = 1;
  pump(&c, &s);
  ASSERT(c.plain.n == 10 && memcmp(c.plain.p, "last words", 10) == 0);
  ASSERT(c.error && !c.eof);
  assert_reason(&c, LOOM_TLS_ETRUNCATED, "truncated");
  end_close(&c);
  end_close(&s);
  /* Closed mid-handshake: a handshake failure. */
  end_open(&c, &s, &cc, "localhost");
  end_open(&s, &c, &sc, NULL);
  ASSERT_EQ(loom_tls_handshake(c.t), LOOM_TLS_WANT);
  s.wire.n = 0;
  c.peer_gone = 1;
  pump(&c, &s);
  assert_reason(&c, LOOM_TLS_EHANDSHAKE, "");
  end_close(&c);
  end_close(&s);
  certs_remove();
}

TEST_IMPL(tls_close_notify) {
  setup();
  loom_tls_config_t cc = client_cfg(), sc = server_cfg(server_crt, server_key);
  end_t c, s;
  pair(&c, &s, &cc, "localhost", &sc);
  ASSERT_EQ(loom_tls_write(s.t, "bye", 3), 0);
  ASSERT_EQ(loom_tls_close(s.t), 0);
  ASSERT_EQ(loom_tls_close(s.t), 0); /* once */
  c.peer_gone = 1; /* the socket closes after close_notify: still EOF */
  pump(&c, &s);
  ASSERT(c.plain.n == 3 && memcmp(c.plain.p, "bye", 3) == 0);
  ASSERT(c.eof && !c.error);
  ASSERT(loom_tls_read(c.t, (char[8]){0}, 8) == LOOM_TLS_EOF);
  /* Writing to a peer that closed does not crash; writing after one's own
   * close is an error. */
  (void)loom_tls_write(c.t, "late", 4);
  ASSERT_EQ(loom_tls_write(s.t, "more", 4), LOOM_TLS_ERROR);
  ASSERT_EQ(loom_tls_error(s.t)->code, LOOM_TLS_ECLOSED);
  end_close(&c);
  end_close(&s);
  certs_remove();
}

TEST_IMPL(tls_early_writes) {
  setup();
  loom_tls_config_t cc = client_cfg(), sc = server_cfg(server_crt, server_key);
  end_t c, s;
  end_open(&c, &s, &cc, "localhost");
  end_open(&s, &c, &sc, NULL);
  /* Before anything went over the wire, from both sides. */
  ASSERT_EQ(loom_tls_write(c.t, "one ", 4), LOOM_TLS_WANT);
  ASSERT_EQ(loom_tls_write(c.t, "two ", 4), LOOM_TLS_WANT);
  ASSERT_EQ(loom_tls_write(s.t, "hello", 5), LOOM_TLS_WANT);
  ASSERT_EQ(loom_tls_queued(c.t), 8);
  turn(&c);
  ASSERT_EQ(loom_tls_write(c.t, "three", 5), LOOM_TLS_WANT);
  pump(&c, &s);
  ASSERT(!c.error && !s.error);
  ASSERT_EQ(loom_tls_queued(c.t), 0);
  ASSERT_EQ(loom_tls_write(c.t, " four", 5), 0);
  pump(&c, &s);
  ASSERT(s.plain.n == 18 && memcmp(s.plain.p, "one two three four", 18) == 0);
  ASSERT(c.plain.n == 5 && memcmp(c.plain.p, "hello", 5) == 0);
  end_close(&c);
  end_close(&s);
  certs_remove();
}

static char *slurp(const char *file) {
  FILE *f = fopen(file, "rb");
  ASSERT(f != NULL);
  char *p = calloc(1, 65536);
  size_t n = fread(p, 1, 65535, f);
  ASSERT(n > 0);
  fclose(f);
  return p;
}

TEST_IMPL(tls_pem_text) {
  setup();
  char *cert = slurp(server_crt), *key = slurp(server_key);
  loom_tls_config_t cc = client_cfg(), sc = server_cfg(cert, key);
  end_t c, s;
  pair(&c, &s, &cc, "localhost", &sc);
  ASSERT(!c.error && !s.error && c.done == 1);
  end_close(&c);
  end_close(&s);
  /* A key that is not the certificate's. */
  char *other = slurp(wrong_key);
  sc.key = other;
  loom_tls_error_t err;
  ASSERT(loom_tls_ctx_get(&sc, &err) == NULL);
  ASSERT_EQ(err.code, LOOM_TLS_ECONFIG);
  ASSERT(contains(err.reason, "cannot load key: key values mismatch"));
  /* No key text in the reason. */
  ASSERT(!contains(err.reason, "BEGIN"));
  free(cert);
  free(key);
  free(other);
  certs_remove();
}

TEST_IMPL(tls_client_cert) {
  setup();
  loom_tls_config_t cc = client_cfg(), sc = server_cfg(server_crt, server_key);
  sc.verify = 1;
  sc.ca_file = ca_crt;
  end_t c, s;
  /* None presented: refused by the server. */
  pair(&c, &s, &cc, "localhost", &sc);
  ASSERT(s.error && !s.done);
  assert_reason(&s, LOOM_TLS_EHANDSHAKE, "certificate");
  ASSERT(c.error);
  end_close(&c);
  end_close(&s);
  cc.cert = client_crt;
  cc.key = client_key;
  pair(&c, &s, &cc, "localhost", &sc);
  ASSERT(!c.error && !s.error && s.done == 1);
  ASSERT_EQ(loom_tls_write(c.t, "id", 2), 0);
  pump(&c, &s);
  ASSERT(s.plain.n == 2);
  end_close(&c);
  end_close(&s);
  certs_remove();
}

TEST_IMPL(tls_config_errors) {
  setup();
  loom_tls_error_t err;
  loom_tls_config_t sc = server_cfg("/nonexistent/server.crt", server_key);
  ASSERT(loom_tls_ctx_get(&sc, &err) == NULL);
  ASSERT_EQ(err.code, LOOM_TLS_ECONFIG);
  ASSERT(contains(err.reason, "/nonexistent/server.crt"));
  sc = server_cfg(NULL, NULL);
  ASSERT(loom_tls_ctx_get(&sc, &err) == NULL);
  ASSERT(contains(err.reason, "needs a certificate and a key"));
  loom_tls_config_t cc = client_cfg();
  cc.ca_file = "/nonexistent/ca.crt";
  ASSERT(loom_tls_ctx_get(&cc, &err) == NULL);
  ASSERT(contains(err.reason, "cannot load CA '/nonexistent/ca.crt'"));
  cc = client_cfg();
  const char *empty[] = {""};
  cc.alpn = empty;
  cc.nalpn = 1;
  ASSERT(loom_tls_ctx_get(&cc, &err) == NULL);
  ASSERT(contains(err.reason, "ALPN"));
  cc = client_cfg();
  cc.cert = client_crt;
  ASSERT(loom_tls_ctx_get(&cc, &err) == NULL);
  ASSERT(contains(err.reason, "needs its key"));
  certs_remove();
}

TEST_IMPL(tls_ctx_shared) {
  setup();
  loom_tls_error_t err;
  loom_tls_config_t a = client_cfg(), b = client_cfg();
  loom_tls_ctx_t *x = loom_tls_ctx_get(&a, &err), *y = loom_tls_ctx_get(&b, &err);
  ASSERT(x != NULL && x == y);
  loom_tls_ctx_release(y);
  loom_tls_ctx_release(x);
  /* Kept while idle: the same one again. */
  y = loom_tls_ctx_get(&b, &err);
  ASSERT(y == x);
  loom_tls_ctx_release(y);
  b.verify = 0;
  y = loom_tls_ctx_get(&b, &err);
  ASSERT(y != NULL && y != x);
  loom_tls_ctx_release(y);
  /* Many configurations: idle ones beyond a few are dropped, none leaks
   * (ASan's leak check says so at exit). */
  char names[40][8];
  for (int i = 0; i < 40; i++) {
    const char *one[1] = {names[i]};
    snprintf(names[i], sizeof names[i], "p%d", i);
    loom_tls_config_t c = client_cfg();
    c.alpn = one;
    c.nalpn = 1;
    loom_tls_ctx_t *z = loom_tls_ctx_get(&c, &err);
    ASSERT(z != NULL);
    loom_tls_ctx_release(z);
  }
  certs_remove();
}

typedef struct {
  const loom_tls_config_t *cfg;
  int ok;
} thread_arg_t;

static void *handshakes(void *p) {
  thread_arg_t *a = p;
  loom_tls_config_t sc = server_cfg(server_crt, server_key);
  for (int i = 0; i < 20; i++) {
    end_t c, s;
    pair(&c, &s, a->cfg, "localhost", &sc);
    a->ok += !c.error && !s.error && c.done == 1 && s.done == 1;
    end_close(&c);
    end_close(&s);
  }
  return NULL;
}

/* Threads (loom.thread's workers) share the cache: the same contexts,
 * taken and given back at once, handshakes on each. */
TEST_IMPL(tls_ctx_threads) {
  setup();
  const char *offer[] = {"h2"};
  loom_tls_config_t a = client_cfg(), b = client_cfg();
  b.alpn = offer;
  b.nalpn = 1;
  pthread_t th[4];
  thread_arg_t args[4];
  for (int i = 0; i < 4; i++) {
    args[i].cfg = i % 2 ? &a : &b;
    args[i].ok = 0;
    ASSERT_EQ(pthread_create(&th[i], NULL, handshakes, &args[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    ASSERT_EQ(pthread_join(th[i], NULL), 0);
    ASSERT_EQ(args[i].ok, 20);
  }
  certs_remove();
}
