/* The fd watcher (watcher.h). */
#include <fcntl.h>
#include <stdlib.h>
#include "watcher.h"

void loom_watcher_init(loom_watcher_t *w, loom_watcher_cb cb, loom_watcher_close_cb close_cb,
                       void *data) {
  w->poll = NULL;
  w->fd = -1;
  w->events = 0;
  w->handles = 0;
  w->cb = cb;
  w->close_cb = close_cb;
  w->data = data;
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  loom_watcher_t *w = handle->data;
  /* libuv stops a poll that reports an error: what is asked must be asked
   * again. */
  if (status < 0)
    w->events = 0;
  w->cb(w, status, events);
}

static void on_closed(uv_handle_t *h) {
  loom_watcher_t *w = h->data;
  free(h);
  w->handles--;
  w->close_cb(w);
}

void loom_watcher_close(loom_watcher_t *w) {
  if (w->poll) {
    uv_close((uv_handle_t *)w->poll, on_closed);
    w->poll = NULL;
    w->events = 0;
  }
}

int loom_watcher_track(loom_loop_t *loop, loom_watcher_t *w, int fd, int fresh) {
  if (w->poll && fd == w->fd) {
    if (fresh && w->events) {
      uv_poll_stop(w->poll);
      w->events = 0;
    }
    return 0;
  }
  loom_watcher_close(w);
  if (fd < 0)
    return -1;
  uv_poll_t *poll = malloc(sizeof *poll);
  if (poll == NULL)
    return -1;
  if (uv_poll_init_socket(&loop->uv, poll, fd) != 0) {
    free(poll);
    return -1;
  }
  poll->data = w;
  w->poll = poll;
  w->handles++;
  w->fd = fd;
  w->events = 0;
  /* Client libraries may open sockets without close-on-exec: a child the
   * process starts (os.execute) would keep one open, and with it its
   * registration in the loop's epoll set after it is closed here. */
  int flags = fcntl(fd, F_GETFD);
  if (flags >= 0 && !(flags & FD_CLOEXEC))
    fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
  return 0;
}

void loom_watcher_want(loom_watcher_t *w, int events, int keep_alive) {
  if (w->poll == NULL)
    return;
  if (events != w->events) {
    w->events = events;
    if (events)
      uv_poll_start(w->poll, events, on_poll);
    else
      uv_poll_stop(w->poll);
  }
  if (keep_alive)
    uv_ref((uv_handle_t *)w->poll);
  else
    uv_unref((uv_handle_t *)w->poll);
}
