/* A listening socket (listener.h). */
#include "listener.h"

static void on_connection(uv_stream_t *server, int status) {
  loom_listener_t *l = ((loom_stream_t *)server->data)->data;
  if (status < 0)
    l->error = status;
  else
    l->ready = 1;
  if (l->on_connection)
    l->on_connection(l);
}

int loom_listener_open(loom_listener_t *l, loom_loop_t *loop, const struct sockaddr *sa,
                       const char *path, int backlog) {
  int rc = path ? loom_stream_check_path(path) : 0;
  if (rc)
    return rc;
  loom_stream_t *s = loom_stream_new(loop, path ? LOOM_STREAM_PIPE : LOOM_STREAM_TCP, &rc);
  if (s == NULL)
    return rc;
  s->data = l;
  rc = path ? uv_pipe_bind(&s->h.pipe, path) : uv_tcp_bind(&s->h.tcp, sa, 0);
  if (rc == 0)
    rc = uv_listen(loom_stream_uv(s), backlog, on_connection);
  if (rc) {
    loom_stream_close(s, NULL);
    return rc;
  }
  l->s = s;
  l->ready = 0;
  l->error = 0;
  return 0;
}

int loom_listener_accept(loom_listener_t *l, loom_stream_t **out) {
  if (l->error) {
    int err = l->error;
    l->error = 0;
    return err;
  }
  if (!l->ready || l->s == NULL)
    return UV_EAGAIN;
  int rc;
  loom_stream_t *c = loom_stream_new(l->s->loop, l->s->kind, &rc);
  if (c == NULL)
    return rc;
  rc = uv_accept(loom_stream_uv(l->s), loom_stream_uv(c));
  l->ready = 0;
  if (rc) {
    loom_stream_close(c, NULL);
    return rc;
  }
  *out = c;
  return 0;
}

void loom_listener_close(loom_listener_t *l) {
  if (l->s) {
    loom_stream_close(l->s, NULL);
    l->s = NULL;
  }
}
