/* TLS as an engine between a transport and its user: OpenSSL 3 on two
 * memory BIOs, so it knows no socket and no loop. The transport feeds it
 * the ciphertext it received and sends what the engine hands to its send
 * callback; the user writes and reads plaintext. A TCP stream, a Unix
 * socket or a test pumping two engines into each other in memory all use
 * it the same way.
 *
 * Verification is on by default for clients: the peer's chain against the
 * given CA (or the system's), and its name against the host (an IP literal
 * against the certificate's IP addresses); SNI carries names only. TLS 1.2
 * is the oldest version spoken and renegotiation is refused.
 *
 * An SSL_CTX is costly (loading the system's CA store takes milliseconds),
 * so there is one per configuration, shared by every connection made with
 * it and kept for the next one: loom_tls_ctx_get finds it by what the
 * configuration says (and the files' sizes and times, so a replaced
 * certificate is read again). */
#ifndef LOOM_TLS_H
#define LOOM_TLS_H

#include <stddef.h>

typedef struct loom_tls_ctx loom_tls_ctx_t;
typedef struct loom_tls loom_tls_t;

/* What a failure was, for the binding to name (every one is kind `tls`
 * to Lua but closed, which is `closed`). The reason text is OpenSSL's. */
typedef enum {
  LOOM_TLS_OK = 0,
  LOOM_TLS_ECONFIG,    /* a CA, certificate or key that does not load */
  LOOM_TLS_EVERIFY,    /* the peer's certificate failed verification */
  LOOM_TLS_EHANDSHAKE, /* any other handshake failure (an alert, no shared version) */
  LOOM_TLS_ETRUNCATED, /* the transport ended without the peer's close_notify */
  LOOM_TLS_EPROTOCOL,  /* a bad record once established */
  LOOM_TLS_ECLOSED,    /* a write after loom_tls_close */
  LOOM_TLS_ENOMEM
} loom_tls_code_t;

typedef struct {
  loom_tls_code_t code;
  char reason[256];
} loom_tls_error_t;

typedef struct {
  int server;
  /* Clients: 1 (the default a binding should give) verifies the server.
   * Servers: 1 asks for a client certificate and refuses a connection
   * without a valid one. */
  int verify;
  /* Trusted CAs: a PEM file, a hashed directory, or neither for the
   * system's default paths. */
  const char *ca_file;
  const char *ca_path;
  /* This side's certificate chain and key: each a PEM file's path, or the
   * PEM text itself (it starts with "-----BEGIN"). A server needs both, a
   * client only to present a client certificate. Encrypted keys are not
   * read: there is no one to ask for a password. */
  const char *cert;
  const char *key;
  /* Protocols for ALPN, in preference order: a client's offer, or what a
   * server accepts (it picks the first of its own the client offers). */
  const char *const *alpn;
  int nalpn;
} loom_tls_config_t;

/* The shared context for cfg, with a reference the caller gives back with
 * loom_tls_ctx_release. NULL with err set (ECONFIG, ENOMEM) on failure; the
 * reason names a file, never its content. Any thread. */
loom_tls_ctx_t *loom_tls_ctx_get(const loom_tls_config_t *cfg, loom_tls_error_t *err);
void loom_tls_ctx_release(loom_tls_ctx_t *ctx);

/* Called with ciphertext for the peer, after every engine call that made
 * some (reads too: TLS 1.3 sends tickets and key updates then). The bytes
 * are valid during the call only. Nonzero stops the engine: the call that
 * sent fails with ECLOSED. */
typedef int (*loom_tls_send_cb)(void *data, const char *buf, size_t len);

/* A connection on ctx (which it keeps a reference to). host, for a client,
 * is the name or IP literal the certificate must match and the name sent
 * as SNI; NULL sends no SNI and checks no name (which verification then
 * refuses unless verify is off). Servers pass NULL. The first flight of a
 * client goes out on the first loom_tls_handshake. */
loom_tls_t *loom_tls_new(loom_tls_ctx_t *ctx, const char *host, loom_tls_send_cb send,
                         void *data, loom_tls_error_t *err);
void loom_tls_free(loom_tls_t *t);

/* Returns of loom_tls_handshake, loom_tls_read and loom_tls_write. */
#define LOOM_TLS_WANT 0   /* nothing until more ciphertext is fed */
#define LOOM_TLS_DONE 1   /* handshake: completed, said once */
#define LOOM_TLS_READY 2  /* handshake: completed before */
#define LOOM_TLS_ERROR (-1)
#define LOOM_TLS_EOF (-2) /* read: the peer's close_notify, after all its data */

/* Ciphertext the transport received (len 0 is fine). It is only stored:
 * the next handshake or read consumes it. 0, or LOOM_TLS_ERROR. */
int loom_tls_feed(loom_tls_t *t, const void *buf, size_t len);
/* The transport's end of stream: reading past the data fed so far is
 * then EOF if the peer said close_notify, else ETRUNCATED. */
void loom_tls_feed_eof(loom_tls_t *t);

/* Advances the handshake: WANT, DONE on the first call that finds it
 * complete (whichever call completed it), READY after, or ERROR. */
int loom_tls_handshake(loom_tls_t *t);

/* Up to cap bytes of plaintext: their count, WANT, EOF or ERROR. Drives the
 * handshake first while it is not complete. */
long loom_tls_read(loom_tls_t *t, void *buf, size_t cap);

/* Takes all of buf: encrypted and sent now, or, before the handshake
 * completes, kept and sent in order once it has. LOOM_TLS_WANT (0) or
 * ERROR. */
int loom_tls_write(loom_tls_t *t, const void *buf, size_t len);
/* Plaintext written before the handshake and not yet sent. */
size_t loom_tls_queued(const loom_tls_t *t);

/* Sends close_notify (once; writes after it fail with ECLOSED). Reading
 * goes on: the peer's data and its own close_notify may still come. 0 or
 * ERROR. */
int loom_tls_close(loom_tls_t *t);

/* The error that stopped t (it stays: every later call returns ERROR). */
const loom_tls_error_t *loom_tls_error(const loom_tls_t *t);
/* The protocol ALPN settled on (len 0: none). */
const char *loom_tls_alpn(const loom_tls_t *t, size_t *len);
/* A server's view of the client's SNI name, or NULL. */
const char *loom_tls_servername(const loom_tls_t *t);
/* 1 once the handshake is complete. */
int loom_tls_established(const loom_tls_t *t);
/* A stable name for a code: "config", "verify", "handshake", ... */
const char *loom_tls_code_name(loom_tls_code_t code);

#endif
