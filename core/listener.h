/* A listening socket (TCP or a Unix domain socket) whose connections are
 * taken one at a time by loom_listener_accept.
 *
 * A connection is accepted only when the owner asks for it: libuv holds
 * one accepted descriptor and stops watching the listening socket until it
 * is taken, so connections nobody takes wait in the kernel's backlog
 * instead of in memory. */
#ifndef LOOM_LISTENER_H
#define LOOM_LISTENER_H

#include "stream.h"

typedef struct loom_listener loom_listener_t;
typedef void (*loom_listener_cb)(loom_listener_t *l);

struct loom_listener {
  loom_stream_t *s; /* the listening handle; NULL once closed */
  int ready;        /* a connection waits for loom_listener_accept */
  int error;        /* the last failed accept (EMFILE...), until taken */
  loom_listener_cb on_connection; /* ready or error changed */
  void *data;       /* the owner's */
};

/* Binds to sa (TCP) or to path (a Unix domain socket) and listens. 0 or a
 * libuv error (nothing is left open then). */
int loom_listener_open(loom_listener_t *l, loom_loop_t *loop, const struct sockaddr *sa,
                       const char *path, int backlog);

/* The connection waiting, as a stream of the caller's: 0, UV_EAGAIN when
 * none waits, or the error an accept failed with. */
int loom_listener_accept(loom_listener_t *l, loom_stream_t **out);

/* Stops listening; safe twice. */
void loom_listener_close(loom_listener_t *l);

#endif
