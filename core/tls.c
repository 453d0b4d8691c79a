/* The TLS engine of tls.h. Patterns taken from engines that run OpenSSL on
 * memory BIOs (tlsuv, node's tls_wrap, h2o): ciphertext out is flushed
 * after every SSL_* call, a read as much as a write (TLS 1.3 sends
 * session tickets and key updates from SSL_read); writes made before the
 * handshake completes are kept and sent in order once it has; the
 * "handshake done" news is given once however many calls observe it; a
 * transport EOF without close_notify is an error, never a quiet EOF. */
#include "tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "loom.h"
#include "resolve.h"

/* Contexts no connection uses are kept for the next one, up to this many
 * (the oldest goes first): a client connecting again and again with the
 * same options finds its CA store already loaded. */
#define IDLE_MAX 8

struct loom_tls_ctx {
  SSL_CTX *ssl;
  loom_tls_ctx_t *next;
  char *key; /* what the configuration says, to find it again */
  size_t keylen;
  int refs;
  unsigned long used; /* when last handed out, for eviction */
  unsigned char *alpn; /* wire format: length-prefixed names */
  unsigned alpnlen;
};

struct loom_tls {
  SSL *ssl;
  BIO *rbio, *wbio; /* owned by ssl */
  loom_tls_ctx_t *ctx;
  loom_tls_send_cb send;
  void *data;
  int established;
  int reported; /* loom_tls_handshake said DONE */
  int closed;   /* close_notify sent (or given up) */
  loom_tls_error_t err;
  char *queue; /* plaintext written before the handshake completed */
  size_t qlen, qcap;
};

static uv_once_t cache_once = UV_ONCE_INIT;
static uv_mutex_t cache_lock;
static loom_tls_ctx_t *cache;
static unsigned long cache_clock;

static void cache_init(void) {
  if (uv_mutex_init(&cache_lock) != 0)
    abort();
}

const char *loom_tls_code_name(loom_tls_code_t code) {
  switch (code) {
  case LOOM_TLS_OK: return "ok";
  case LOOM_TLS_ECONFIG: return "config";
  case LOOM_TLS_EVERIFY: return "verify";
  case LOOM_TLS_EHANDSHAKE: return "handshake";
  case LOOM_TLS_ETRUNCATED: return "truncated";
  case LOOM_TLS_EPROTOCOL: return "protocol";
  case LOOM_TLS_ECLOSED: return "closed";
  case LOOM_TLS_ENOMEM: return "nomem";
  }
  return "unknown";
}

static void set_error(loom_tls_error_t *err, loom_tls_code_t code, const char *reason) {
  if (!err)
    return;
  err->code = code;
  snprintf(err->reason, sizeof err->reason, "%s", reason);
}

/* OpenSSL's reason for the oldest error queued (the cause; later entries
 * are where it surfaced), the queue emptied: it is per thread and would
 * otherwise be blamed on whatever the thread does next. */
static void openssl_reason(char *buf, size_t len, const char *fallback) {
  unsigned long e = ERR_peek_error();
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  if (r)
    snprintf(buf, len, "%s", r);
  else if (e)
    ERR_error_string_n(e, buf, len);
  else
    snprintf(buf, len, "%s", fallback);
  ERR_clear_error();
}

static void config_error(loom_tls_error_t *err, const char *what, const char *path) {
  char reason[160];
  openssl_reason(reason, sizeof reason, "unreadable");
  if (!err)
    return;
  err->code = LOOM_TLS_ECONFIG;
  if (path)
    snprintf(err->reason, sizeof err->reason, "cannot load %s '%s': %s", what, path, reason);
  else
    snprintf(err->reason, sizeof err->reason, "cannot load %s: %s", what, reason);
}

/* ---- the cache key ----------------------------------------------------- */

typedef struct {
  char *p;
  size_t n, cap;
  int failed;
} buf_t;

static void put(buf_t *b, const void *s, size_t n) {
  if (b->failed)
    return;
  if (b->n + n > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 256;
    while (cap < b->n + n)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->failed = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
}

/* Length first, so no two configurations give the same key. */
static void put_str(buf_t *b, const char *s) {
  size_t n = s ? strlen(s) : (size_t)-1;
  put(b, &n, sizeof n);
  if (s)
    put(b, s, n);
}

static int is_pem(const char *s) {
  return strncmp(s, "-----BEGIN", 10) == 0;
}

/* A file's identity and version: a certificate replaced under the same
 * name makes another key, so the new one is read. */
static void put_file(buf_t *b, const char *path) {
  put_str(b, path);
  if (!path || is_pem(path))
    return;
  struct stat st;
  memset(&st, 0, sizeof st);
  if (stat(path, &st) != 0)
    return; /* loading reports it */
  long long v[5] = {(long long)st.st_dev, (long long)st.st_ino, (long long)st.st_size,
                    (long long)st.st_mtim.tv_sec, (long long)st.st_mtim.tv_nsec};
  put(b, v, sizeof v);
}

static void make_key(buf_t *b, const loom_tls_config_t *cfg) {
  int flags[3] = {cfg->server, cfg->verify, cfg->nalpn};
  put(b, flags, sizeof flags);
  put_file(b, cfg->ca_file);
  put_file(b, cfg->ca_path);
  put_file(b, cfg->cert);
  put_file(b, cfg->key);
  for (int i = 0; i < cfg->nalpn; i++)
    put_str(b, cfg->alpn[i]);
}

/* ---- contexts ---------------------------------------------------------- */

static int no_password(char *buf, int size, int rwflag, void *u) {
  return 0;
}

static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned inlen, void *arg) {
  const loom_tls_ctx_t *ctx = arg;
  unsigned char *chosen;
  if (SSL_select_next_proto(&chosen, outlen, ctx->alpn, ctx->alpnlen, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK; /* go on without ALPN, the client decides */
  *out = chosen;
  return SSL_TLSEXT_ERR_OK;
}

static int load_cert(SSL_CTX *c, const char *cert, loom_tls_error_t *err) {
  if (!is_pem(cert)) {
    if (SSL_CTX_use_certificate_chain_file(c, cert) == 1)
      return 0;
    config_error(err, "certificate file", cert);
    return -1;
  }
  BIO *bio = BIO_new_mem_buf(cert, -1);
  X509 *x = bio ? PEM_read_bio_X509_AUX(bio, NULL, no_password, NULL) : NULL;
  int ok = x && SSL_CTX_use_certificate(c, x) == 1;
  X509_free(x);
  /* The rest of the text is the chain, up to the end of the PEM blocks. */
  while (ok && (x = PEM_read_bio_X509(bio, NULL, no_password, NULL)) != NULL)
    if (SSL_CTX_add0_chain_cert(c, x) != 1) {
      X509_free(x);
      ok = 0;
    }
  BIO_free(bio);
  if (!ok) {
    config_error(err, "certificate", NULL);
    return -1;
  }
  ERR_clear_error(); /* the end of the chain is a "no start line" */
  return 0;
}

static int load_key(SSL_CTX *c, const char *key, loom_tls_error_t *err) {
  if (!is_pem(key)) {
    if (SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM) == 1)
      return 0;
    config_error(err, "key file", key);
    return -1;
  }
  BIO *bio = BIO_new_mem_buf(key, -1);
  EVP_PKEY *k = bio ? PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL) : NULL;
  int ok = k && SSL_CTX_use_PrivateKey(c, k) == 1;
  EVP_PKEY_free(k);
  BIO_free(bio);
  if (!ok) {
    config_error(err, "key", NULL);
    return -1;
  }
  return 0;
}

static int set_alpn(loom_tls_ctx_t *ctx, const loom_tls_config_t *cfg, loom_tls_error_t *err) {
  buf_t b = {0};
  for (int i = 0; i < cfg->nalpn; i++) {
    size_t n = cfg->alpn[i] ? strlen(cfg->alpn[i]) : 0;
    if (n == 0 || n > 255) {
      free(b.p);
      set_error(err, LOOM_TLS_ECONFIG, "an ALPN protocol name is 1 to 255 bytes");
      return -1;
    }
    unsigned char len = (unsigned char)n;
    put(&b, &len, 1);
    put(&b, cfg->alpn[i], n);
  }
  if (b.failed || b.n > 0xffff) {
    free(b.p);
    set_error(err, b.failed ? LOOM_TLS_ENOMEM : LOOM_TLS_ECONFIG,
              b.failed ? "out of memory" : "the ALPN list is too long");
    return -1;
  }
  ctx->alpn = (unsigned char *)b.p;
  ctx->alpnlen = (unsigned)b.n;
  if (cfg->nalpn == 0)
    return 0;
  if (cfg->server) {
    SSL_CTX_set_alpn_select_cb(ctx->ssl, select_alpn, ctx);
    return 0;
  }
  /* 0 is success here, unlike the rest of OpenSSL. */
  if (SSL_CTX_set_alpn_protos(ctx->ssl, ctx->alpn, ctx->alpnlen) != 0) {
    set_error(err, LOOM_TLS_ENOMEM, "out of memory");
    return -1;
  }
  return 0;
}

static int configure(loom_tls_ctx_t *ctx, const loom_tls_config_t *cfg, loom_tls_error_t *err) {
  SSL_CTX *c = ctx->ssl;
  SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
  SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION);
  /* An idle connection gives its record buffers back (many held open). */
  SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_default_passwd_cb(c, no_password);
  if (cfg->ca_file || cfg->ca_path) {
    if (SSL_CTX_load_verify_locations(c, cfg->ca_file, cfg->ca_path) != 1) {
      config_error(err, "CA", cfg->ca_file ? cfg->ca_file : cfg->ca_path);
      return -1;
    }
  } else if (cfg->verify && SSL_CTX_set_default_verify_paths(c) != 1) {
    config_error(err, "the system's CA store", NULL);
    return -1;
  }
  int mode = SSL_VERIFY_NONE;
  if (cfg->verify)
    mode = cfg->server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER;
  SSL_CTX_set_verify(c, mode, NULL);
  if (cfg->server && (!cfg->cert || !cfg->key)) {
    set_error(err, LOOM_TLS_ECONFIG, "a TLS server needs a certificate and a key");
    return -1;
  }
  if (!cfg->cert != !cfg->key) {
    set_error(err, LOOM_TLS_ECONFIG, "a certificate needs its key and a key its certificate");
    return -1;
  }
  if (cfg->cert) {
    /* The key is checked against the certificate as it loads. */
    if (load_cert(c, cfg->cert, err) != 0 || load_key(c, cfg->key, err) != 0)
      return -1;
  }
  return set_alpn(ctx, cfg, err);
}

static void ctx_free(loom_tls_ctx_t *ctx) {
  SSL_CTX_free(ctx->ssl);
  if (ctx->key)
    OPENSSL_cleanse(ctx->key, ctx->keylen); /* it may hold a PEM key */
  free(ctx->key);
  free(ctx->alpn);
  free(ctx);
}

static loom_tls_ctx_t *ctx_new(const loom_tls_config_t *cfg, buf_t *key, loom_tls_error_t *err) {
  loom_tls_ctx_t *ctx = calloc(1, sizeof *ctx);
  if (!ctx) {
    set_error(err, LOOM_TLS_ENOMEM, "out of memory");
    return NULL;
  }
  ERR_clear_error();
  ctx->ssl = SSL_CTX_new(cfg->server ? TLS_server_method() : TLS_client_method());
  if (!ctx->ssl) {
    config_error(err, "a TLS context", NULL);
    free(ctx);
    return NULL;
  }
  if (configure(ctx, cfg, err) != 0) {
    ERR_clear_error();
    ctx_free(ctx);
    return NULL;
  }
  ctx->key = key->p;
  ctx->keylen = key->n;
  key->p = NULL;
  return ctx;
}

/* Under cache_lock: drops the least recently used idle context when more
 * than IDLE_MAX are idle. */
static loom_tls_ctx_t *evict_one(void) {
  int idle = 0;
  loom_tls_ctx_t **oldest = NULL;
  for (loom_tls_ctx_t **p = &cache; *p; p = &(*p)->next)
    if ((*p)->refs == 0) {
      idle++;
      if (!oldest || (*p)->used < (*oldest)->used)
        oldest = p;
    }
  if (idle <= IDLE_MAX)
    return NULL;
  loom_tls_ctx_t *ctx = *oldest;
  *oldest = ctx->next;
  return ctx;
}

loom_tls_ctx_t *loom_tls_ctx_get(const loom_tls_config_t *cfg, loom_tls_error_t *err) {
  if (err)
    err->code = LOOM_TLS_OK, err->reason[0] = '\0';
  buf_t key = {0};
  make_key(&key, cfg);
  if (key.failed) {
    free(key.p);
    set_error(err, LOOM_TLS_ENOMEM, "out of memory");
    return NULL;
  }
  uv_once(&cache_once, cache_init);
  uv_mutex_lock(&cache_lock);
  loom_tls_ctx_t *ctx = cache;
  while (ctx && !(ctx->keylen == key.n && memcmp(ctx->key, key.p, key.n) == 0))
    ctx = ctx->next;
  if (ctx) {
    ctx->refs++;
    ctx->used = ++cache_clock;
  }
  uv_mutex_unlock(&cache_lock);
  if (ctx) {
    OPENSSL_cleanse(key.p, key.n);
    free(key.p);
    return ctx;
  }
  /* Built outside the lock (it reads files); two threads building the same
   * one at once both keep theirs, which costs memory, never correctness. */
  ctx = ctx_new(cfg, &key, err);
  if (!ctx) {
    OPENSSL_cleanse(key.p, key.n);
    free(key.p);
    return NULL;
  }
  uv_mutex_lock(&cache_lock);
  ctx->refs = 1;
  ctx->used = ++cache_clock;
  ctx->next = cache;
  cache = ctx;
  uv_mutex_unlock(&cache_lock);
  return ctx;
}

void loom_tls_ctx_release(loom_tls_ctx_t *ctx) {
  if (!ctx)
    return;
  uv_mutex_lock(&cache_lock);
  ctx->refs--;
  loom_tls_ctx_t *gone = ctx->refs == 0 ? evict_one() : NULL;
  uv_mutex_unlock(&cache_lock);
  if (gone)
    ctx_free(gone);
}

/* ---- connections ------------------------------------------------------- */

loom_tls_t *loom_tls_new(loom_tls_ctx_t *ctx, const char *host, loom_tls_send_cb send,
                         void *data, loom_tls_error_t *err) {
  if (err)
    err->code = LOOM_TLS_OK, err->reason[0] = '\0';
  loom_tls_t *t = calloc(1, sizeof *t);
  if (!t) {
    set_error(err, LOOM_TLS_ENOMEM, "out of memory");
    return NULL;
  }
  ERR_clear_error();
  t->ssl = SSL_new(ctx->ssl);
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  if (!t->ssl || !t->rbio || !t->wbio) {
    SSL_free(t->ssl);
    BIO_free(t->rbio);
    BIO_free(t->wbio);
    free(t);
    ERR_clear_error();
    set_error(err, LOOM_TLS_ENOMEM, "out of memory");
    return NULL;
  }
  /* An empty input means "wait for more" until the transport ends. */
  BIO_set_mem_eof_return(t->rbio, -1);
  SSL_set_bio(t->ssl, t->rbio, t->wbio);
  int ok = 1;
  if (SSL_is_server(t->ssl)) {
    SSL_set_accept_state(t->ssl);
  } else {
    SSL_set_connect_state(t->ssl);
    if (host && loom_resolve_is_numeric(host)) {
      /* An address is checked against the IP SANs, and is no SNI name
       * (RFC 6066 3). */
      ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), host) == 1;
    } else if (host) {
      ok = SSL_set_tlsext_host_name(t->ssl, host) == 1 && SSL_set1_host(t->ssl, host) == 1;
    }
  }
  if (!ok) {
    SSL_free(t->ssl);
    free(t);
    ERR_clear_error();
    if (err) {
      err->code = LOOM_TLS_ECONFIG;
      snprintf(err->reason, sizeof err->reason, "not a host name TLS can check: '%s'", host);
    }
    return NULL;
  }
  uv_mutex_lock(&cache_lock);
  ctx->refs++;
  uv_mutex_unlock(&cache_lock);
  t->ctx = ctx;
  t->send = send;
  t->data = data;
  return t;
}

void loom_tls_free(loom_tls_t *t) {
  if (!t)
    return;
  SSL_free(t->ssl);
  loom_tls_ctx_release(t->ctx);
  free(t->queue);
  free(t);
}

static int fail(loom_tls_t *t, loom_tls_code_t code, const char *reason) {
  if (t->err.code == LOOM_TLS_OK) {
    t->err.code = code;
    snprintf(t->err.reason, sizeof t->err.reason, "%s", reason);
  }
  ERR_clear_error();
  return LOOM_TLS_ERROR;
}

/* Hands whatever the last SSL_* call produced to the transport. -1 when
 * the transport refused it: the caller says so (ECLOSED) unless the call
 * itself failed, which is the cause (an alert sent to a peer that is gone
 * does not hide why it was sent). */
static int flush(loom_tls_t *t) {
  char *p;
  long n = BIO_get_mem_data(t->wbio, &p);
  if (n <= 0)
    return 0;
  int rc = t->send ? t->send(t->data, p, (size_t)n) : 0;
  (void)BIO_reset(t->wbio);
  return rc != 0 ? -1 : 0;
}

static int transport_closed(loom_tls_t *t) {
  return fail(t, LOOM_TLS_ECLOSED, "the transport is closed");
}

/* What an SSL_* call returning rc means: WANT, EOF or ERROR (recorded). */
static int outcome(loom_tls_t *t, int rc) {
  int e = SSL_get_error(t->ssl, rc);
  if (e == SSL_ERROR_WANT_READ) {
    ERR_clear_error();
    return LOOM_TLS_WANT;
  }
  if (e == SSL_ERROR_ZERO_RETURN) {
    ERR_clear_error();
    return LOOM_TLS_EOF;
  }
  unsigned long first = ERR_peek_error();
  char reason[200];
  openssl_reason(reason, sizeof reason, e == SSL_ERROR_SYSCALL ? "unexpected eof while reading"
                                                               : "TLS failure");
  if (ERR_GET_LIB(first) == ERR_LIB_SSL &&
      ERR_GET_REASON(first) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
    long v = SSL_get_verify_result(t->ssl);
    char msg[256];
    snprintf(msg, sizeof msg, "%s: %s", reason,
             v != X509_V_OK ? X509_verify_cert_error_string(v) : "rejected");
    return fail(t, LOOM_TLS_EVERIFY, msg);
  }
  int eof = e == SSL_ERROR_SYSCALL ||
            (ERR_GET_LIB(first) == ERR_LIB_SSL &&
             ERR_GET_REASON(first) == SSL_R_UNEXPECTED_EOF_WHILE_READING);
  if (!t->established)
    return fail(t, LOOM_TLS_EHANDSHAKE, reason);
  return fail(t, eof ? LOOM_TLS_ETRUNCATED : LOOM_TLS_EPROTOCOL,
              eof ? "truncated: the peer closed without close_notify" : reason);
}

static int send_plain(loom_tls_t *t, const void *buf, size_t len) {
  if (len == 0)
    return 0;
  size_t n = 0;
  ERR_clear_error();
  int rc = SSL_write_ex(t->ssl, buf, len, &n);
  int sent = flush(t);
  if (rc != 1) {
    /* Memory BIOs never fill and renegotiation is off, so a write that
     * does not complete is a failure. */
    int r = outcome(t, rc);
    return r == LOOM_TLS_ERROR ? r : fail(t, LOOM_TLS_EPROTOCOL, "the write could not complete");
  }
  return sent == 0 ? 0 : transport_closed(t);
}

/* Drives the handshake; 1 once complete (the queue sent), WANT or ERROR. */
static int progress(loom_tls_t *t) {
  if (t->err.code != LOOM_TLS_OK)
    return LOOM_TLS_ERROR;
  if (t->established)
    return 1;
  ERR_clear_error();
  int rc = SSL_do_handshake(t->ssl);
  /* Alerts too go out: the peer learns why. */
  int sent = flush(t);
  if (rc != 1) {
    int r = outcome(t, rc);
    if (r == LOOM_TLS_EOF)
      return fail(t, LOOM_TLS_EHANDSHAKE, "closed during the handshake");
    return r == LOOM_TLS_WANT && sent != 0 ? transport_closed(t) : r;
  }
  if (sent != 0)
    return transport_closed(t);
  t->established = 1;
  char *q = t->queue;
  size_t qlen = t->qlen;
  t->queue = NULL;
  t->qlen = t->qcap = 0;
  rc = send_plain(t, q, qlen);
  free(q);
  return rc == 0 ? 1 : rc;
}

int loom_tls_feed(loom_tls_t *t, const void *buf, size_t len) {
  if (t->err.code != LOOM_TLS_OK)
    return LOOM_TLS_ERROR;
  while (len > 0) {
    int chunk = len > 1 << 30 ? 1 << 30 : (int)len;
    if (BIO_write(t->rbio, buf, chunk) != chunk)
      return fail(t, LOOM_TLS_ENOMEM, "out of memory");
    buf = (const char *)buf + chunk;
    len -= (size_t)chunk;
  }
  return 0;
}

void loom_tls_feed_eof(loom_tls_t *t) {
  BIO_set_mem_eof_return(t->rbio, 0);
}

int loom_tls_handshake(loom_tls_t *t) {
  int r = progress(t);
  if (r != 1)
    return r;
  if (t->reported)
    return LOOM_TLS_READY;
  t->reported = 1;
  return LOOM_TLS_DONE;
}

long loom_tls_read(loom_tls_t *t, void *buf, size_t cap) {
  int r = progress(t);
  if (r != 1)
    return r;
  size_t n = 0;
  ERR_clear_error();
  int rc = SSL_read_ex(t->ssl, buf, cap, &n);
  int sent = flush(t);
  r = rc == 1 ? 1 : outcome(t, rc);
  if (r == LOOM_TLS_ERROR)
    return r;
  if (sent != 0)
    return transport_closed(t);
  return rc == 1 ? (long)n : r;
}

int loom_tls_write(loom_tls_t *t, const void *buf, size_t len) {
  if (t->err.code != LOOM_TLS_OK)
    return LOOM_TLS_ERROR;
  if (t->closed)
    return fail(t, LOOM_TLS_ECLOSED, "write after close");
  if (t->established)
    return send_plain(t, buf, len);
  if (t->qlen + len > t->qcap) {
    size_t cap = t->qcap ? t->qcap : 4096;
    while (cap < t->qlen + len)
      cap *= 2;
    char *q = realloc(t->queue, cap);
    if (!q)
      return fail(t, LOOM_TLS_ENOMEM, "out of memory");
    t->queue = q;
    t->qcap = cap;
  }
  if (len > 0)
    memcpy(t->queue + t->qlen, buf, len);
  t->qlen += len;
  return LOOM_TLS_WANT;
}

size_t loom_tls_queued(const loom_tls_t *t) {
  return t->qlen;
}

int loom_tls_close(loom_tls_t *t) {
  if (t->closed)
    return 0;
  t->closed = 1;
  /* No close_notify after a fatal error (OpenSSL forbids it) nor before the
   * handshake completed (there is no session to close). */
  if (t->err.code != LOOM_TLS_OK || !t->established)
    return 0;
  ERR_clear_error();
  int rc = SSL_shutdown(t->ssl);
  int sent = flush(t);
  /* rc 0: sent, the peer's has not come (nor need it). */
  if (rc < 0 && outcome(t, rc) == LOOM_TLS_ERROR)
    return LOOM_TLS_ERROR;
  return sent == 0 ? 0 : transport_closed(t);
}

const loom_tls_error_t *loom_tls_error(const loom_tls_t *t) {
  return &t->err;
}

const char *loom_tls_alpn(const loom_tls_t *t, size_t *len) {
  const unsigned char *p = NULL;
  unsigned n = 0;
  SSL_get0_alpn_selected(t->ssl, &p, &n);
  *len = n;
  return (const char *)p;
}

const char *loom_tls_servername(const loom_tls_t *t) {
  return SSL_is_server(t->ssl) ? SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name) : NULL;
}

int loom_tls_established(const loom_tls_t *t) {
  return t->established;
}
