/* Connecting to every address in turn (connect.h). */
#include <stdlib.h>
#include <string.h>
#include "connect.h"

static void free_connect(loom_connect_t *c) {
  for (int i = 0; i < c->nhosts; i++)
    free(c->hosts[i]);
  free(c->hosts);
  free(c->path);
  free(c);
}

static void finish(loom_connect_t *c, int status, loom_stream_t *s) {
  loom_resolve_free(&c->res);
  c->cb(c, status, s);
  free_connect(c);
}

static void on_resolved(loom_resolve_t *r, int status);

/* Resolves the next host: 0, or the error starting failed with. */
static int resolve_next_host(loom_connect_t *c) {
  const char *host = c->hosts[c->next_host++];
  return loom_resolve_start(c->loop, &c->res, host, c->port, on_resolved);
}

static void next(loom_connect_t *c);

static void on_connected(uv_connect_t *req, int status) {
  loom_connect_t *c = req->data;
  loom_stream_t *s = req->handle->data;
  loom_timer_stop(c->loop, &c->timer);
  c->attempt = NULL;
  if (status == 0 && !c->cancelled) {
    finish(c, 0, s);
    return;
  }
  /* A closed attempt (its time ran out, or a cancel) hears ECANCELED. */
  if (c->timed_out)
    status = UV_ETIMEDOUT;
  c->timed_out = 0;
  loom_stream_close(s, NULL);
  if (c->cancelled) {
    finish(c, UV_ECANCELED, NULL);
    return;
  }
  c->status = status ? status : UV_ECANCELED;
  next(c);
}

static void attempt_expired(loom_timer_t *t) {
  loom_connect_t *c = t->data;
  if (c->attempt) {
    c->timed_out = 1;
    loom_stream_close(c->attempt, NULL);
  }
}

static int attempt(loom_connect_t *c, const struct sockaddr *sa) {
  int rc;
  loom_stream_t *s = loom_stream_new(c->loop, c->path ? LOOM_STREAM_PIPE : LOOM_STREAM_TCP, &rc);
  if (s == NULL)
    return rc;
  s->connect_req.data = c;
  if (c->path) {
    uv_pipe_connect(&s->connect_req, &s->h.pipe, c->path, on_connected);
  } else {
    rc = uv_tcp_connect(&s->connect_req, &s->h.tcp, sa, on_connected);
    if (rc) {
      loom_stream_close(s, NULL);
      return rc;
    }
  }
  c->attempt = s;
  if (c->attempt_ns)
    loom_timer_start(c->loop, &c->timer, c->attempt_ns);
  return 0;
}

static void next(loom_connect_t *c) {
  char ip[INET6_ADDRSTRLEN];
  struct sockaddr_storage sa;
  while (loom_resolve_next(&c->res, ip, sizeof ip, &sa)) {
    int rc = attempt(c, (struct sockaddr *)&sa);
    if (rc == 0)
      return;
    c->status = rc;
  }
  while (c->next_host < c->nhosts) {
    int rc = resolve_next_host(c);
    if (rc == 0)
      return;
    c->status = rc;
  }
  finish(c, c->status ? c->status : UV_EAI_NONAME, NULL);
}

/* A host that does not resolve is one more failure: the next host may. */
static void on_resolved(loom_resolve_t *r, int status) {
  loom_connect_t *c = r->data;
  if (c->cancelled || status == UV_ECANCELED) {
    finish(c, UV_ECANCELED, NULL);
    return;
  }
  if (status)
    c->status = status;
  next(c);
}

static loom_connect_t *new_connect(loom_loop_t *loop, uint64_t attempt_ns, loom_connect_cb cb,
                                   void *data) {
  loom_connect_t *c = calloc(1, sizeof *c);
  if (c == NULL)
    return NULL;
  c->loop = loop;
  c->attempt_ns = attempt_ns;
  c->cb = cb;
  c->data = data;
  c->res.data = c;
  loom_timer_init(&c->timer, attempt_expired, c);
  return c;
}

loom_connect_t *loom_connect_tcp(loom_loop_t *loop, const char *const *hosts, int nhosts,
                                 int port, uint64_t attempt_ns, loom_connect_cb cb, void *data,
                                 int *err) {
  loom_connect_t *c = new_connect(loop, attempt_ns, cb, data);
  int rc = UV_ENOMEM;
  if (c && nhosts > 0 && (c->hosts = calloc((size_t)nhosts, sizeof *c->hosts)) != NULL) {
    c->port = port;
    for (rc = 0; c->nhosts < nhosts && rc == 0; c->nhosts++)
      if ((c->hosts[c->nhosts] = strdup(hosts[c->nhosts])) == NULL)
        rc = UV_ENOMEM;
    /* A host refused as it is looked up (a name that cannot be one) is
     * one more failure, as one that does not resolve: the next may. */
    if (rc == 0) {
      do
        rc = resolve_next_host(c);
      while (rc != 0 && rc != UV_ENOMEM && c->next_host < c->nhosts);
    }
  }
  if (rc) {
    if (c)
      free_connect(c);
    *err = rc;
    return NULL;
  }
  return c;
}

loom_connect_t *loom_connect_pipe(loom_loop_t *loop, const char *path, uint64_t attempt_ns,
                                  loom_connect_cb cb, void *data, int *err) {
  int rc = loom_stream_check_path(path);
  if (rc) {
    *err = rc;
    return NULL;
  }
  loom_connect_t *c = new_connect(loop, attempt_ns, cb, data);
  if (c)
    c->path = strdup(path);
  rc = c && c->path ? attempt(c, NULL) : UV_ENOMEM;
  if (rc) {
    if (c)
      free_connect(c);
    *err = rc;
    return NULL;
  }
  return c;
}

void loom_connect_cancel(loom_connect_t *c) {
  if (c->cancelled)
    return;
  c->cancelled = 1;
  if (c->res.active)
    loom_resolve_cancel(&c->res);
  if (c->attempt) {
    loom_timer_stop(c->loop, &c->timer);
    loom_stream_close(c->attempt, NULL);
  }
}
