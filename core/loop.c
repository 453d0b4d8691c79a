/* One libuv loop per loom context. Never uv_default_loop(): two contexts on
 * two threads must not share anything. */
#include <string.h>
#include "loom.h"

void loom__timer_heap_init(loom_loop_t *loop);
void loom__timer_heap_free(loom_loop_t *loop);

static void wakeup_cb(uv_async_t *handle) {
  loom_loop_t *loop = handle->data;
  if (loop->on_wake)
    loop->on_wake(loop);
}

int loom_loop_init(loom_loop_t *loop) {
  memset(loop, 0, sizeof *loop);
  int r = uv_loop_init(&loop->uv);
  if (r)
    return r;
  loom__timer_heap_init(loop);
  uv_timer_init(&loop->uv, &loop->heap_timer);
  uv_timer_init(&loop->uv, &loop->poll_timer);
  r = uv_async_init(&loop->uv, &loop->wakeup, wakeup_cb);
  if (r) {
    uv_close((uv_handle_t *)&loop->heap_timer, NULL);
    uv_close((uv_handle_t *)&loop->poll_timer, NULL);
    uv_run(&loop->uv, UV_RUN_DEFAULT);
    uv_loop_close(&loop->uv);
    return r;
  }
  loop->wakeup.data = loop;
  /* Only real work keeps the loop alive: an idle wake-up handle or the
   * bound of a poll must not make loom_loop_alive() report pending work. */
  uv_unref((uv_handle_t *)&loop->wakeup);
  uv_unref((uv_handle_t *)&loop->poll_timer);
  loop->initialized = 1;
  return 0;
}

static void close_any(uv_handle_t *handle, void *arg) {
  (void)arg;
  if (!uv_is_closing(handle))
    uv_close(handle, NULL);
}

void loom_loop_close(loom_loop_t *loop) {
  if (!loop->initialized)
    return;
  loop->initialized = 0;
  loom__timer_heap_free(loop);
  uv_walk(&loop->uv, close_any, NULL);
  uv_run(&loop->uv, UV_RUN_DEFAULT);
  uv_loop_close(&loop->uv);
}

static void poll_timer_cb(uv_timer_t *handle) { (void)handle; }

int loom_loop_poll(loom_loop_t *loop, int64_t timeout_ms) {
  if (timeout_ms == 0)
    return uv_run(&loop->uv, UV_RUN_NOWAIT);
  if (timeout_ms > 0)
    uv_timer_start(&loop->poll_timer, poll_timer_cb, (uint64_t)timeout_ms, 0);
  int alive = uv_run(&loop->uv, UV_RUN_ONCE);
  if (timeout_ms > 0)
    uv_timer_stop(&loop->poll_timer);
  return alive;
}

int loom_loop_alive(const loom_loop_t *loop) {
  return uv_loop_alive(&loop->uv);
}

int loom_loop_fd(const loom_loop_t *loop) { return uv_backend_fd(&loop->uv); }

int loom_loop_wake(loom_loop_t *loop) { return uv_async_send(&loop->wakeup); }

const char *loom_strerror(int status) {
  switch (status) {
  case LOOM_OK: return "ok";
  case LOOM_EAGAIN: return "would wait";
  case LOOM_ETIMEDOUT: return "timed out";
  case LOOM_ECANCELED: return "cancelled";
  case LOOM_ECLOSED: return "closed";
  case LOOM_ENOMEM: return "out of memory";
  default: return uv_strerror(status);
  }
}
