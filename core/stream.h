/* A buffered byte stream over a libuv uv_stream_t: a TCP connection, a
 * Unix domain socket, a pipe to a child process. It knows nothing of Lua;
 * its owner (lua/io/stream.c) is told through two callbacks when there is
 * something to read and when queued writes went out.
 *
 * Reading. One uv_read_start for the stream's life, stopped only when
 * bytes arrive while the buffer holds the high-water mark (64 KiB unless
 * set) or more, or what a reader asked for with loom_stream_want, and
 * started again once the reader took bytes below it. An idle stream holds no buffer: libuv asks
 * for memory only once the socket is readable, and bytes that arrive while
 * the buffer is empty are read into a scratch area per thread and copied
 * into a buffer just big enough for them. EOF and a read error are kept
 * beside the bytes still buffered: a reader gets the bytes first.
 *
 * Writing. loom_stream_write tries uv_try_write first (it fails with
 * EAGAIN while earlier writes are queued, so order holds) and copies only
 * what the kernel did not take into one queued uv_write. The owner applies
 * backpressure with loom_stream_queued: it waits (on_write) while that is
 * above the high-water mark. A failed queued write is kept in write_error
 * and reported by the next call.
 *
 * Transport seam. A transport sits between the socket and the buffer and
 * transforms bytes both ways; TLS (core/tls.c, OpenSSL over memory BIOs)
 * is the one foreseen. Without one, bytes go straight between the socket
 * and the buffer. With one:
 *   socket bytes -> transport->received -> loom_stream_push -> buffer
 *   user bytes -> loom_stream_write -> transport->send -> loom_stream_send_raw -> socket
 * The transport may also send on its own (a handshake, a TLS 1.3 ticket)
 * with loom_stream_send_raw from any of its hooks, and may wake the owner
 * (handshake done) with loom_stream_push(s, NULL, 0). Its state hangs off
 * s->transport_data and is released by its free hook when the stream is.
 *
 * Lifetime. loom_stream_new allocates; the stream frees itself after libuv's
 * close callback, which loom_stream_close asks for (the owner's on_closed
 * runs just before the memory goes). Queued writes are cancelled by the
 * close. After loom_stream_close the owner's callbacks never run again, so
 * an owner that is collected first only has to call it. */
#ifndef LOOM_STREAM_H
#define LOOM_STREAM_H

#include "loom.h"

typedef struct loom_stream loom_stream_t;
typedef void (*loom_stream_cb)(loom_stream_t *s);

/* What loom_stream_new opens: a TCP socket, or a pipe (a Unix domain
 * socket, a child's stdin/stdout/stderr). */
enum loom_stream_kind { LOOM_STREAM_TCP, LOOM_STREAM_PIPE };

#define LOOM_STREAM_HIGH_WATER (64 * 1024)

typedef struct loom_transport {
  /* n bytes (n > 0) read from the socket: what they decode to goes to
   * loom_stream_push. 0, or a negative libuv-style error, which becomes
   * the stream's read error. */
  int (*received)(loom_stream_t *s, const char *p, size_t n);
  /* n user bytes to send: what they encode to goes to loom_stream_send_raw.
   * 0 or a negative error. */
  int (*send)(loom_stream_t *s, const char *p, size_t n);
  /* The socket reached EOF. 0 lets the reader see EOF; an error (a TLS
   * peer gone without close_notify) is what the reader sees instead. */
  int (*eof)(loom_stream_t *s);
  /* Optional: last bytes before the write side shuts (close_notify). */
  int (*shutdown)(loom_stream_t *s);
  /* Optional: the stream is being freed; let go of transport_data. */
  void (*free)(loom_stream_t *s);
} loom_transport_t;

struct loom_stream {
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h;
  uv_connect_t connect_req; /* core/connect.c's; lives as long as the handle */
  uv_shutdown_t shutdown_req;
  loom_loop_t *loop;
  int kind;

  /* The read buffer: bytes [rstart, rend) of rbuf (rcap allocated). */
  char *rbuf;
  size_t rstart, rend, rcap;
  size_t high_water;
  size_t want;       /* a reader waits for this many bytes (0: none asked) */
  int reading;       /* uv_read_start is in effect */
  int eof;           /* the peer finished: nothing more will come */
  int read_error;    /* 0, or the libuv error that ended reading */

  size_t queued;     /* bytes in uv_writes not completed yet */
  int write_error;   /* 0, or the first error of a queued write */
  int shut;          /* loom_stream_shutdown was called */
  int shutdown_status;
  int closing;

  const loom_transport_t *transport;
  void *transport_data;

  /* The owner's: on_read when bytes, EOF or a read error arrived (or a
   * transport's news), on_write when a queued write completed or failed. */
  loom_stream_cb on_read;
  loom_stream_cb on_write;
  loom_stream_cb on_shutdown;
  loom_stream_cb on_closed;
  void *data;
};

/* A new stream of that kind on loop, not connected yet (a TCP socket to
 * connect or accept into, a pipe for uv_spawn's stdio or to connect).
 * NULL when out of memory or libuv refused (*err says why). */
loom_stream_t *loom_stream_new(loom_loop_t *loop, int kind, int *err);

/* The libuv stream, for uv_accept, uv_spawn's stdio, uv_tcp_* options. */
static inline uv_stream_t *loom_stream_uv(loom_stream_t *s) { return &s->h.stream; }

/* 0, or UV_ENAMETOOLONG for a path longer than a Unix domain socket's
 * address holds: libuv (1.44) would cut it short without a word, binding
 * or connecting to another file than the one named. */
int loom_stream_check_path(const char *path);

/* Puts a transport under the stream (before any byte flows). */
void loom_stream_set_transport(loom_stream_t *s, const loom_transport_t *t, void *data);

/* Reading: buffered bytes, taking them, and asking for more. */
static inline size_t loom_stream_buffered(const loom_stream_t *s) { return s->rend - s->rstart; }
static inline const char *loom_stream_peek(const loom_stream_t *s) {
  return s->rbuf ? s->rbuf + s->rstart : "";
}
/* Takes n buffered bytes (n <= loom_stream_buffered), reading on if that
 * brought the buffer below the mark. */
void loom_stream_consume(loom_stream_t *s, size_t n);
/* Read until n bytes are buffered (beyond the high-water mark if n is
 * larger: a reader needs them), or EOF, or an error; on_read tells. 0:
 * back to reading up to the mark. Returns 0 or the error starting failed
 * with (kept in read_error too). */
int loom_stream_want(loom_stream_t *s, size_t n);
void loom_stream_set_high_water(loom_stream_t *s, size_t n);

/* Whether the stream's reading keeps the loop alive. Its owner lets go (0)
 * while nobody waits for its bytes, so an idle connection is no work for
 * the loop (a wait that nothing else can end is then found out), and holds
 * on (1) while a reader waits. Writes, a shutdown and a close keep the loop
 * alive by themselves until they end. */
static inline void loom_stream_keep_alive(loom_stream_t *s, int on) {
  if (on)
    uv_ref(&s->h.handle);
  else
    uv_unref(&s->h.handle);
}

/* For a transport: decoded bytes for the reader (n may be 0: only wakes
 * the owner). 0 or UV_ENOMEM. */
int loom_stream_push(loom_stream_t *s, const char *p, size_t n);
/* For a transport: the reader sees this error once the buffer is read. */
void loom_stream_fail(loom_stream_t *s, int err);

/* Writing: n bytes, through the transport if there is one. Returns 0 (all
 * written or queued) or an error (write_error, or UV_EPIPE once shut or
 * closing). */
int loom_stream_write(loom_stream_t *s, const char *p, size_t n);
/* Bytes straight to the socket, bypassing the transport. */
int loom_stream_send_raw(loom_stream_t *s, const char *p, size_t n);
static inline size_t loom_stream_queued(const loom_stream_t *s) { return s->queued; }

/* Shuts the write side once queued writes went out (the transport's last
 * bytes first); on_done runs with s->shutdown_status set. 0 or an error
 * (then on_done does not run). */
int loom_stream_shutdown(loom_stream_t *s, loom_stream_cb on_done);

/* Closes the handle: queued writes are cancelled, the callbacks stop, and
 * on_closed (may be NULL) runs just before s is freed. Safe twice (the
 * second call changes nothing). */
void loom_stream_close(loom_stream_t *s, loom_stream_cb on_closed);

#endif
