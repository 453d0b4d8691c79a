/* One file descriptor watched on the loop, for whatever owns a socket (a
 * database driver today, a TCP stream tomorrow): libuv's uv__io_t as a
 * part an owner embeds. It knows nothing of the owner but two callbacks.
 *
 * The poll handle is allocated apart from the watcher: closing it takes a
 * loop turn, and meanwhile the owner may already watch another descriptor
 * (a client library that reconnects to the next address). The owner must
 * outlive every handle it opened: loom_watcher_busy says when that is, and
 * close_cb runs each time one has closed, so the owner can free itself. */
#ifndef LOOM_WATCHER_H
#define LOOM_WATCHER_H

#include "loom.h"

typedef struct loom_watcher loom_watcher_t;
/* status is 0 or a libuv error; events are UV_READABLE / UV_WRITABLE. */
typedef void (*loom_watcher_cb)(loom_watcher_t *w, int status, int events);
typedef void (*loom_watcher_close_cb)(loom_watcher_t *w);

struct loom_watcher {
  uv_poll_t *poll;   /* NULL: nothing watched */
  int fd;            /* the descriptor poll watches */
  int events;        /* what libuv is asked for now */
  int handles;       /* opened and not yet closed */
  loom_watcher_cb cb;
  loom_watcher_close_cb close_cb;
  void *data;        /* the owner's */
};

void loom_watcher_init(loom_watcher_t *w, loom_watcher_cb cb, loom_watcher_close_cb close_cb,
                       void *data);

/* Watches fd (nothing asked for yet). The same fd is kept as it is unless
 * fresh is set: a library may close a socket and open another that gets
 * the same number, which the kernel's registration forgot and libuv's did
 * not; fresh registers it again at the next loom_watcher_want. Another fd
 * replaces the old handle. 0, or -1 when fd < 0 or no handle could open
 * (nothing is watched then). */
int loom_watcher_track(loom_loop_t *loop, loom_watcher_t *w, int fd, int fresh);

/* Asks for events (0: none). keep_alive 0 lets the loop end while only
 * this waits: a socket idle between requests. */
void loom_watcher_want(loom_watcher_t *w, int events, int keep_alive);

/* Stops watching and closes the handle (close_cb follows). Safe when
 * nothing is watched. */
void loom_watcher_close(loom_watcher_t *w);

static inline int loom_watcher_busy(const loom_watcher_t *w) {
  return w->handles > 0;
}

#endif
