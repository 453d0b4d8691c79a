/* Opening a stream to a server: TCP hosts and a port (every address each
 * name resolves to, host after host, in the resolver's order, each attempt
 * bounded), or a Unix domain socket's path.
 *
 * A client that tries only a name's first address cannot reach a server
 * that listens on another one ("localhost": ::1 refused, 127.0.0.1
 * listening), and one that waits on an address that never answers never
 * gets to the next. So each address gets at most attempt_ns, and a
 * refused, unreachable or silent one passes to the next; the last failure
 * is what the caller hears. Several hosts (a primary and its standbys)
 * are tried in the order given, each resolved only when its turn comes.
 *
 * The connect object frees itself right after its callback, which runs
 * exactly once: with 0 and the connected stream (then the caller's), or
 * with an error and NULL (UV_ECANCELED after loom_connect_cancel,
 * UV_ETIMEDOUT when the last attempt ran out of time). */
#ifndef LOOM_CONNECT_H
#define LOOM_CONNECT_H

#include "resolve.h"
#include "stream.h"

typedef struct loom_connect loom_connect_t;
typedef void (*loom_connect_cb)(loom_connect_t *c, int status, loom_stream_t *s);

struct loom_connect {
  loom_loop_t *loop;
  loom_resolve_t res;
  loom_timer_t timer;
  uint64_t attempt_ns; /* 0: attempts are not bounded */
  loom_stream_t *attempt;
  char *path;          /* a Unix domain socket's, else NULL */
  char **hosts;        /* the TCP hosts, and the next to resolve */
  int nhosts, next_host;
  int port;
  int timed_out;       /* the attempt was closed for its time */
  int cancelled;
  int status;          /* the last attempt's failure */
  loom_connect_cb cb;
  void *data;          /* the caller's */
};

/* Starts connecting; NULL and *err when it could not start (cb will not
 * run then). */
loom_connect_t *loom_connect_tcp(loom_loop_t *loop, const char *const *hosts, int nhosts,
                                 int port, uint64_t attempt_ns, loom_connect_cb cb, void *data,
                                 int *err);
loom_connect_t *loom_connect_pipe(loom_loop_t *loop, const char *path, uint64_t attempt_ns,
                                  loom_connect_cb cb, void *data, int *err);

/* Stops: the callback still runs, with UV_ECANCELED. */
void loom_connect_cancel(loom_connect_t *c);

#endif
