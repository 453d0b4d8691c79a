/* TLS under a stream (core/stream.h's transport seam): the engine of
 * core/tls.h fed with what the socket reads, its ciphertext sent raw, its
 * plaintext pushed into the stream's buffer.
 *
 * A TLS failure is the stream's read error LOOM_TLS_STREAM_ERROR (or the
 * write's return), and loom_tls_stream_error tells what it was; a socket
 * error under TLS stays that socket error. The peer's close_notify is the
 * stream's EOF (even with the socket still open); the socket's EOF without
 * one is the engine's "truncated" error. */
#ifndef LOOM_TLS_TRANSPORT_H
#define LOOM_TLS_TRANSPORT_H

#include "stream.h"
#include "tls.h"

#define LOOM_TLS_STREAM_ERROR UV_EPROTO

/* Puts TLS on ctx under s; host as for loom_tls_new. Bytes s buffered
 * already (read before the transport came) go to the engine first. 0, or
 * -1 with err set. */
int loom_tls_transport_attach(loom_stream_t *s, loom_tls_ctx_t *ctx, const char *host,
                              loom_tls_error_t *err);

/* Starts the handshake once s is connected (a client sends its hello; a
 * server answers a hello that came already). 0 or an error. */
int loom_tls_transport_start(loom_stream_t *s);

/* Watching the handshake: until loom_tls_transport_unwatch, cb runs each
 * time the stream's read side moved (bytes, the handshake's end, EOF, a
 * socket error), before the owner's on_read, and once more as the stream
 * is freed (s->closing set: s is gone after cb returns). The owner's
 * on_read stays its own: the watch goes between. arg is for cb
 * (loom_tls_transport_watcher). */
void loom_tls_transport_watch(loom_stream_t *s, loom_stream_cb cb, void *arg);
void loom_tls_transport_unwatch(loom_stream_t *s);
void *loom_tls_transport_watcher(const loom_stream_t *s);

/* The engine under s, or NULL when s has no TLS. */
loom_tls_t *loom_tls_transport_engine(const loom_stream_t *s);

/* What ended s when that was TLS (its error has a code), else NULL. */
const loom_tls_error_t *loom_tls_stream_error(const loom_stream_t *s);

#endif
