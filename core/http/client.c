/* One HTTP client per loop: curl's multi handle, a poll per socket it
 * watches and one timer, all on the loop's libuv (curl's multi-uv.c is
 * the model). curl is only ever called from libuv callbacks and from the
 * owner, never from inside a curl callback. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "client.h"

static void drain(loom_http_t *h) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(h->multi, &left))) {
    if (msg->msg != CURLMSG_DONE)
      continue;
    CURLcode result = msg->data.result;
    http_xfer *x = NULL;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
    loom__http_xfer_finished(x, result);
  }
}

static void act(loom_http_t *h, curl_socket_t fd, int flags) {
  int running;
  curl_multi_socket_action(h->multi, fd, flags, &running);
  drain(h);
}

static void on_timeout(uv_timer_t *t) {
  loom_http_t *h = t->data;
  act(h, CURL_SOCKET_TIMEOUT, 0);
  /* libuv runs due timers before it polls: a transfer this ended (curl's
   * own timeout, the end of a body seen after a resume) must wake its
   * task now, not when some later, unrelated event ends the poll (as
   * core/timer.c's timers do). */
  uv_stop(&h->loop->uv);
}

void loom__http_kick(loom_http_t *h) {
  uv_timer_start(&h->timer, on_timeout, 0, 0);
}

/* CURLMOPT_TIMERFUNCTION: arms the timer, calls nothing of curl's. */
static int on_timer(CURLM *multi, long timeout_ms, void *clientp) {
  (void)multi;
  loom_http_t *h = clientp;
  if (timeout_ms < 0)
    uv_timer_stop(&h->timer);
  else
    uv_timer_start(&h->timer, on_timeout, (uint64_t)timeout_ms, 0);
  return 0;
}

static void on_poll(uv_poll_t *p, int status, int events) {
  http_sock *s = p->data;
  int flags = 0;
  if (status < 0)
    flags = CURL_CSELECT_ERR;
  else {
    if (events & UV_READABLE)
      flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
      flags |= CURL_CSELECT_OUT;
  }
  act(s->h, s->fd, flags);
}

static void sock_free(uv_handle_t *handle) {
  free(handle->data);
}

/* Stopped at once (libuv takes the fd out of epoll now), freed later: the
 * fd may close right after, and a new socket may get its number. */
static void sock_close(loom_http_t *h, http_sock *s) {
  h->by_fd[s->fd] = NULL;
  h->sockets--;
  uv_poll_stop(&s->poll);
  uv_close((uv_handle_t *)&s->poll, sock_free);
}

static http_sock *sock_find(loom_http_t *h, curl_socket_t fd) {
  return fd >= 0 && (size_t)fd < h->nfd ? h->by_fd[fd] : NULL;
}

static http_sock *sock_open(loom_http_t *h, curl_socket_t fd) {
  if ((size_t)fd >= h->nfd) {
    size_t n = h->nfd ? h->nfd : 64;
    while (n <= (size_t)fd)
      n *= 2;
    http_sock **by_fd = realloc(h->by_fd, n * sizeof *by_fd);
    if (by_fd == NULL)
      return NULL;
    memset(by_fd + h->nfd, 0, (n - h->nfd) * sizeof *by_fd);
    h->by_fd = by_fd;
    h->nfd = n;
  }
  http_sock *s = malloc(sizeof *s);
  if (s == NULL)
    return NULL;
  if (uv_poll_init_socket(&h->loop->uv, &s->poll, fd) != 0) {
    free(s);
    return NULL;
  }
  s->poll.data = s;
  s->h = h;
  s->fd = fd;
  h->by_fd[fd] = s;
  h->sockets++;
  return s;
}

/* CURLMOPT_SOCKETFUNCTION: what curl wants to hear about fd now. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *clientp, void *socketp) {
  (void)easy; (void)socketp;
  loom_http_t *h = clientp;
  http_sock *s = sock_find(h, fd);
  if (what == CURL_POLL_REMOVE) {
    if (s)
      sock_close(h, s);
    return 0;
  }
  if (s == NULL && (s = sock_open(h, fd)) == NULL)
    return -1;
  int events = 0;
  if (what & CURL_POLL_IN)
    events |= UV_READABLE;
  if (what & CURL_POLL_OUT)
    events |= UV_WRITABLE;
  return uv_poll_start(&s->poll, events, on_poll) == 0 ? 0 : -1;
}

/* CURLOPT_CLOSESOCKETFUNCTION: the poll goes before the fd does, or epoll
 * would be left watching a closed fd (libuv#1495). curl normally says
 * CURL_POLL_REMOVE first; this holds when it does not. */
int loom__http_closesocket(void *clientp, curl_socket_t fd) {
  loom_http_t *h = clientp;
  http_sock *s = sock_find(h, fd);
  if (s)
    sock_close(h, s);
  return close(fd);
}

CURL *loom__http_easy_get(loom_http_t *h) {
  CURL *easy = h->nidle > 0 ? h->idle[--h->nidle] : curl_easy_init();
  if (easy)
    h->easy_live++;
  return easy;
}

void loom__http_easy_put(loom_http_t *h, CURL *easy) {
  h->easy_live--;
  if (h->nidle < LOOM_HTTP_IDLE_MAX) {
    curl_easy_reset(easy);
    h->idle[h->nidle++] = easy;
  } else {
    curl_easy_cleanup(easy);
  }
}

static loom_http_t *http_open(loom_loop_t *loop, char *err, size_t errlen) {
  CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (rc != CURLE_OK) {
    snprintf(err, errlen, "libcurl does not start: %s", curl_easy_strerror(rc));
    return NULL;
  }
  loom_http_t *h = calloc(1, sizeof *h);
  if (h == NULL || (h->multi = curl_multi_init()) == NULL) {
    free(h);
    curl_global_cleanup();
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  h->loop = loop;
  uv_timer_init(&loop->uv, &h->timer);
  h->timer.data = h;
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
  return h;
}

static void http_free(uv_handle_t *handle) {
  loom_http_t *h = handle->data;
  free(h->by_fd);
  free(h);
}

static void http_close(loom_http_t *h) {
  while (h->xfers) {
    http_xfer *x = h->xfers;
    loom_http_engine.abort(&x->pub);
    h->xfers = x->next;
    x->prev = x->next = NULL;
    x->h = NULL;
  }
  while (h->nidle > 0)
    curl_easy_cleanup(h->idle[--h->nidle]);
  /* Closes the connections kept for reuse, through the callbacks above. */
  curl_multi_cleanup(h->multi);
  curl_global_cleanup();
  for (size_t fd = 0; fd < h->nfd; fd++)
    if (h->by_fd[fd])
      sock_close(h, h->by_fd[fd]);
  uv_timer_stop(&h->timer);
  uv_close((uv_handle_t *)&h->timer, http_free);
}

static void http_stats(loom_http_t *h, loom_http_stats *s) {
  s->transfers = h->transfers;
  s->easy_live = h->easy_live;
  s->easy_idle = (size_t)h->nidle;
  s->sockets = h->sockets;
}

const loom_http_engine_t loom_http_engine = {
  .open = http_open,
  .close = http_close,
  .start = loom__http_start,
  .consume = loom__http_consume,
  .want = loom__http_want,
  .feed = loom__http_feed,
  .abort = loom__http_abort,
  .free = loom__http_free,
  .stats = http_stats,
};
