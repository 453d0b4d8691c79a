/* An nginx-style HTTP server on libh2o (2.2, built on libuv) that gives each
 * request to a Lua handler running as a loom task.
 *
 *   h2o_host [--threads N] [--deadline SECONDS] [--port P] handler.lua
 *
 * handler.lua returns function(req) -> status, headers, body, where req has
 * method, path (with the query), headers (lower-case names) and body. A
 * handler that raises gives a 500, one that overruns the deadline (default
 * 30 s) is cancelled and gives a 504; both are logged to stderr. Prints
 * "listening on 127.0.0.1:PORT" once every worker listens; SIGINT or SIGTERM
 * stops it gracefully.
 *
 * Each worker thread owns a uv loop, an h2o context, a listener on the same
 * port (SO_REUSEPORT: the kernel spreads connections, no accept thread) and a
 * lua_State with its own loom. The host owns the uv loop and drives loom
 * through loom_fd and loom_next_timeout, as any host does: loom's loop stays
 * its own, and loom runs only where the host says (never inside an h2o
 * callback). h2o's callbacks only queue requests; a check handle, after each
 * turn's I/O, hands the queued ones to Lua and steps loom once for all of
 * them. */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>
#include <h2o.h>
#include "embed_state.h"

#define MAX_THREADS 64
/* How long a stopping worker waits for its connections to finish. */
#define GRACE_MS 5000

/* The allocator of a worker's Lua state: free lists of small blocks, by 16
 * bytes of size, kept for the state's next allocation. A request allocates
 * and frees a coroutine, tables and strings; the same sizes come back at
 * once, and only the worker's thread ever uses its state. glibc's per-thread
 * cache holds 7 blocks a size and then takes its slower paths, which cost
 * the host a tenth of its time under load. Blocks stay on the lists until
 * the worker ends. */
#define SLAB_MAX 1024
#define SLAB_CLASS(n) (((n) + 15) / 16)

typedef struct slab_block {
  struct slab_block *next;
} slab_block_t;

typedef struct slab {
  slab_block_t *free[SLAB_CLASS(SLAB_MAX) + 1];
} slab_t;

static void *slab_get(slab_t *s, size_t n) {
  slab_block_t *b = s->free[SLAB_CLASS(n)];
  if (b == NULL)
    return malloc(SLAB_CLASS(n) * 16);
  s->free[SLAB_CLASS(n)] = b->next;
  return b;
}

static void slab_put(slab_t *s, void *p, size_t n) {
  slab_block_t *b = p;
  b->next = s->free[SLAB_CLASS(n)];
  s->free[SLAB_CLASS(n)] = b;
}

static void slab_dispose(slab_t *s) {
  for (size_t c = 0; c <= SLAB_CLASS(SLAB_MAX); c++)
    while (s->free[c]) {
      slab_block_t *b = s->free[c];
      s->free[c] = b->next;
      free(b);
    }
}

static void *slab_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  slab_t *s = ud;
  if (ptr == NULL)
    osize = 0; /* then osize says what kind of object, not a size */
  int was_small = ptr != NULL && osize <= SLAB_MAX, small = nsize <= SLAB_MAX;
  if (nsize == 0) {
    if (was_small)
      slab_put(s, ptr, osize);
    else
      free(ptr);
    return NULL;
  }
  if (ptr == NULL)
    return small ? slab_get(s, nsize) : malloc(nsize);
  if (!was_small && !small)
    return realloc(ptr, nsize);
  if (was_small && small && SLAB_CLASS(osize) == SLAB_CLASS(nsize))
    return ptr;
  void *p = small ? slab_get(s, nsize) : malloc(nsize);
  if (p == NULL)
    return NULL;
  memcpy(p, ptr, osize < nsize ? osize : nsize);
  if (was_small)
    slab_put(s, ptr, osize);
  else
    free(ptr);
  return p;
}

typedef struct worker worker_t;

/* A request between h2o and Lua. h2o's side ends when the request's pool is
 * cleared (answered, or the client gone): a link in that pool then clears
 * req. Lua's side ends when respond() answers or the userdata is collected.
 * Whichever ends last frees it. */
typedef struct request {
  h2o_req_t *req;
  worker_t *w;
  struct request *next; /* in the worker's queue until handed to Lua */
  int refs;
} request_t;

struct worker {
  pthread_t thread;
  int listen_fd;
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_async_t stop;
  uv_poll_t loom_poll;
  uv_timer_t loom_timer, grace;
  uv_idle_t loom_idle;
  uv_check_t loom_check;
  h2o_context_t ctx;
  h2o_accept_ctx_t accept_ctx;
  slab_t slab;
  lua_State *L;
  int serve_ref;             /* the Lua serve function, in the registry */
  request_t *queue, **queue_tail;
  int loom_dirty;            /* something woke loom: step it this turn */
  int conns;                 /* open connections */
  int stopping, finished, init_failed;
};

static h2o_globalconf_t config;
static const char *handler_file;
static double deadline = 30;

static void request_unref(request_t *r) {
  if (--r->refs == 0)
    free(r);
}

static void on_link_dispose(void *p) {
  request_t *r = *(request_t **)p;
  r->req = NULL;
  request_unref(r);
}

static int on_req(h2o_handler_t *self, h2o_req_t *req) {
  (void)self;
  worker_t *w = (worker_t *)((char *)req->conn->ctx - offsetof(worker_t, ctx));
  request_t *r = malloc(sizeof *r);
  if (r == NULL)
    return -1;
  request_t **link = h2o_mem_alloc_shared(&req->pool, sizeof *link, on_link_dispose);
  *link = r;
  *r = (request_t){.req = req, .w = w, .refs = 2};
  *w->queue_tail = r;
  w->queue_tail = &r->next;
  return 0;
}

/* ---- the Lua side of a request ---- */

static const char REQUEST_MT[] = "h2o_host.request";

static int request_gc(lua_State *L) {
  request_t **ud = luaL_checkudata(L, 1, REQUEST_MT);
  if (*ud) {
    /* Its task was lost without answering: the client still gets one. */
    if ((*ud)->req)
      h2o_send_error_500((*ud)->req, "Internal Server Error", "handler lost\n", 0);
    request_unref(*ud);
    *ud = NULL;
  }
  return 0;
}

static const char *reason_of(int status) {
  switch (status) {
  case 200: return "OK";
  case 201: return "Created";
  case 204: return "No Content";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 304: return "Not Modified";
  case 400: return "Bad Request";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 500: return "Internal Server Error";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  default: return "";
  }
}

/* respond(ref, status, headers, body) -> true, or false and what is wrong
 * with the answer: it checks everything before it sends anything, so that
 * the request is still there to answer otherwise. A request whose client
 * went away is dropped quietly. */
static int bad_answer(lua_State *L, const char *what) {
  lua_pushboolean(L, 0);
  lua_pushstring(L, what);
  return 2;
}

static int l_respond(lua_State *L) {
  request_t **ud = luaL_checkudata(L, 1, REQUEST_MT);
  if (*ud == NULL)
    return luaL_error(L, "request already answered");
  int isint;
  lua_Integer status = lua_tointegerx(L, 2, &isint);
  if (!isint || status < 100 || status > 999)
    return bad_answer(L, "the status must be an integer from 100 to 999");
  int has_headers = !lua_isnoneornil(L, 3);
  if (has_headers && !lua_istable(L, 3))
    return bad_answer(L, "the headers must be a table");
  if (lua_type(L, 4) != LUA_TSTRING)
    return bad_answer(L, "the body must be a string");
  size_t body_len;
  const char *body = lua_tolstring(L, 4, &body_len);
  if (has_headers) {
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
        return bad_answer(L, "the headers must map names to strings");
      lua_pop(L, 1);
    }
  }
  request_t *r = *ud;
  *ud = NULL;
  h2o_req_t *req = r->req;
  request_unref(r);
  lua_pushboolean(L, 1);
  if (req == NULL)
    return 1;
  req->res.status = (int)status;
  req->res.reason = reason_of((int)status);
  if (has_headers) {
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      size_t nl, vl;
      const char *n = lua_tolstring(L, -2, &nl), *v = lua_tolstring(L, -1, &vl);
      h2o_iovec_t name = h2o_strdup(&req->pool, n, nl);
      for (size_t i = 0; i < nl; i++)
        name.base[i] = (char)tolower((unsigned char)name.base[i]);
      h2o_iovec_t value = h2o_strdup(&req->pool, v, vl);
      h2o_add_header_by_str(&req->pool, &req->res.headers, name.base, nl, 1, NULL, value.base, vl);
      lua_pop(L, 1);
    }
  }
  req->res.content_length = body_len;
  h2o_send_inline(req, body, body_len);
  return 1;
}

static void push_request(lua_State *L, h2o_req_t *req) {
  lua_createtable(L, 0, 4);
  lua_pushlstring(L, req->method.base, req->method.len);
  lua_setfield(L, -2, "method");
  lua_pushlstring(L, req->path.base, req->path.len);
  lua_setfield(L, -2, "path");
  lua_createtable(L, 0, (int)req->headers.size);
  for (size_t i = 0; i < req->headers.size; i++) {
    h2o_header_t *h = &req->headers.entries[i];
    lua_pushlstring(L, h->name->base, h->name->len);
    /* A repeated header: its values joined, as HTTP allows for lists. */
    if (lua_rawget(L, -2) == LUA_TSTRING) {
      lua_pushlstring(L, ", ", 2);
      lua_pushlstring(L, h->value.base, h->value.len);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushlstring(L, h->value.base, h->value.len);
    }
    lua_pushlstring(L, h->name->base, h->name->len);
    lua_insert(L, -2);
    lua_rawset(L, -3);
  }
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, req->entity.base ? req->entity.base : "", req->entity.len);
  lua_setfield(L, -2, "body");
}

/* ---- driving loom from the worker's uv loop ---- */

static void hand_to_lua(worker_t *w) {
  lua_State *L = w->L;
  while (w->queue) {
    request_t *r = w->queue;
    w->queue = r->next;
    if (r->req == NULL) { /* gone before Lua saw it */
      request_unref(r);
      continue;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->serve_ref);
    push_request(L, r->req);
    request_t **ud = lua_newuserdatauv(L, sizeof *ud, 0);
    *ud = r;
    luaL_setmetatable(L, REQUEST_MT);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
      fprintf(stderr, "h2o_host: serve: %s\n", luaL_tolstring(L, -1, NULL));
      lua_pop(L, 1);
      lua_pop(L, 1);
    }
  }
  w->queue_tail = &w->queue;
}

/* An active idle handle keeps this turn's poll from blocking, so the check
 * after it comes at once: a timer fires before the poll, and without it the
 * step it asks for would wait for the next I/O. */
static void on_loom_idle(uv_idle_t *i) { ((worker_t *)i->loop->data)->loom_dirty = 1; }
static void on_loom_timer(uv_timer_t *t) {
  worker_t *w = t->loop->data;
  w->loom_dirty = 1;
  uv_idle_start(&w->loom_idle, on_loom_idle);
}
static void on_loom_fd(uv_poll_t *p, int status, int events) {
  (void)status;
  (void)events;
  ((worker_t *)p->loop->data)->loom_dirty = 1;
}

/* After each turn's I/O: new requests to Lua, one loom step, and the
 * timer or idle handle set from what loom says it needs next. */
static void on_check(uv_check_t *c) {
  worker_t *w = c->loop->data;
  if (w->queue) {
    hand_to_lua(w);
    w->loom_dirty = 1;
  }
  if (!w->loom_dirty)
    return;
  w->loom_dirty = 0;
  loom_step(w->L, 0);
  int next = loom_next_timeout(w->L);
  if (next == 0) {
    uv_idle_start(&w->loom_idle, on_loom_idle);
  } else {
    uv_idle_stop(&w->loom_idle);
    if (next > 0)
      uv_timer_start(&w->loom_timer, on_loom_timer, (uint64_t)next, 0);
    else
      uv_timer_stop(&w->loom_timer);
  }
}

/* ---- connections ---- */

static void on_conn_close(uv_handle_t *h);

static void on_accept(uv_stream_t *listener, int status) {
  worker_t *w = listener->loop->data;
  if (status != 0)
    return;
  uv_tcp_t *conn = malloc(sizeof *conn);
  if (conn == NULL)
    return;
  uv_tcp_init(listener->loop, conn);
  if (uv_accept(listener, (uv_stream_t *)conn) != 0) {
    uv_close((uv_handle_t *)conn, (uv_close_cb)free);
    return;
  }
  uv_tcp_nodelay(conn, 1);
  w->conns++;
  h2o_accept(&w->accept_ctx, h2o_uv_socket_create((uv_stream_t *)conn, on_conn_close));
}

/* ---- stopping ---- */

static void close_if_open(uv_handle_t *h) {
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

/* Every connection is closed: the handles that drive loom first (the poll
 * stops watching loom's fd before loom closes it), then Lua, which answers
 * nothing any more (no request is alive), then h2o's context; uv_run then
 * returns. */
static void finish(worker_t *w) {
  if (w->finished)
    return;
  w->finished = 1;
  uv_handle_t *hs[] = {(uv_handle_t *)&w->loom_poll, (uv_handle_t *)&w->loom_timer,
                       (uv_handle_t *)&w->loom_idle, (uv_handle_t *)&w->loom_check,
                       (uv_handle_t *)&w->grace};
  for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++)
    close_if_open(hs[i]);
  lua_close(w->L);
  w->L = NULL;
  slab_dispose(&w->slab);
  /* h2o's HTTP/2 shutdown links a one-second entry (to send GOAWAY again)
   * whether or not it has HTTP/2 connections, and disposing of a context
   * asserts that no entry is linked: h2o's own server never disposes. */
  if (h2o_timeout_is_linked(&w->ctx.http2._graceful_shutdown_timeout))
    h2o_timeout_unlink(&w->ctx.http2._graceful_shutdown_timeout);
  h2o_context_dispose(&w->ctx);
}

static void on_finish(uv_timer_t *t) { finish(t->loop->data); }

/* The last connection's close callback runs while h2o still holds its
 * timeout entries; its context is disposed of a turn later. */
static void on_conn_close(uv_handle_t *h) {
  worker_t *w = h->loop->data;
  free(h);
  if (--w->conns == 0 && w->stopping)
    uv_timer_start(&w->grace, on_finish, 0, 0);
}

static void on_grace_over(uv_timer_t *t) {
  worker_t *w = t->loop->data;
  fprintf(stderr, "h2o_host: %d connections still open after %d ms; stopping anyway\n", w->conns, GRACE_MS);
  uv_stop(&w->loop);
}

static void on_stop(uv_async_t *a) {
  worker_t *w = a->loop->data;
  w->stopping = 1;
  close_if_open((uv_handle_t *)&w->listener);
  close_if_open((uv_handle_t *)&w->stop);
  h2o_context_request_shutdown(&w->ctx);
  if (w->conns == 0)
    finish(w);
  else
    uv_timer_start(&w->grace, on_grace_over, GRACE_MS, 0);
}

/* ---- a worker ---- */

static int l_panic(lua_State *L) {
  fprintf(stderr, "h2o_host: unprotected Lua error: %s\n", lua_tostring(L, -1));
  abort();
}

static lua_State *new_state(worker_t *w) {
  lua_State *L = lua_newstate(slab_alloc, &w->slab);
  if (L == NULL)
    return NULL;
  lua_atpanic(L, l_panic);
  embed_open_loom(L);
  luaL_newmetatable(L, REQUEST_MT);
  lua_pushcfunction(L, request_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  if (luaL_loadfile(L, H2O_HOST_LUA) != LUA_OK)
    goto fail;
  lua_pushcfunction(L, l_respond);
  lua_pushstring(L, handler_file);
  lua_pushnumber(L, deadline);
  if (lua_pcall(L, 3, 1, 0) != LUA_OK)
    goto fail;
  w->serve_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return L;
fail:
  fprintf(stderr, "h2o_host: %s\n", luaL_tolstring(L, -1, NULL));
  lua_close(L);
  return NULL;
}

static int worker_init(worker_t *w) {
  uv_loop_init(&w->loop);
  w->loop.data = w;
  w->queue_tail = &w->queue;
  if ((w->L = new_state(w)) == NULL)
    return -1;
  h2o_context_init(&w->ctx, &w->loop, &config);
  w->accept_ctx.ctx = &w->ctx;
  w->accept_ctx.hosts = config.hosts;
  uv_tcp_init(&w->loop, &w->listener);
  int rc = uv_tcp_open(&w->listener, w->listen_fd);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&w->listener, SOMAXCONN, on_accept);
  if (rc != 0) {
    fprintf(stderr, "h2o_host: listen: %s\n", uv_strerror(rc));
    return -1;
  }
  uv_async_init(&w->loop, &w->stop, on_stop);
  uv_poll_init(&w->loop, &w->loom_poll, loom_fd(w->L));
  uv_poll_start(&w->loom_poll, UV_READABLE, on_loom_fd);
  uv_timer_init(&w->loop, &w->loom_timer);
  uv_timer_init(&w->loop, &w->grace);
  uv_idle_init(&w->loop, &w->loom_idle);
  uv_check_init(&w->loop, &w->loom_check);
  uv_check_start(&w->loom_check, on_check);
  /* Loading the handler may have given loom work (a pool opening). */
  w->loom_dirty = 1;
  uv_idle_start(&w->loom_idle, on_loom_idle);
  return 0;
}

static pthread_barrier_t started;

/* The worker's loop, Lua state and loom are made on the thread that runs
 * them; main learns at the barrier whether all of them could start. */
static void *worker_main(void *arg) {
  worker_t *w = arg;
  w->init_failed = worker_init(w) != 0;
  pthread_barrier_wait(&started);
  if (w->init_failed)
    return NULL;
  uv_run(&w->loop, UV_RUN_DEFAULT);
  if (w->finished) {
    uv_run(&w->loop, UV_RUN_DEFAULT); /* the close callbacks */
    uv_loop_close(&w->loop);
  }
  return NULL;
}

static int listen_socket(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), on = 1;
  if (fd < 0)
    return -1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0 ||
      bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static int usage(void) {
  fprintf(stderr, "usage: h2o_host [--threads N] [--deadline SECONDS] [--port P] handler.lua\n");
  return 2;
}

int main(int argc, char **argv) {
  int threads = 1, port = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (strcmp(argv[i], "--deadline") == 0 && i + 1 < argc)
      deadline = atof(argv[++i]);
    else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
      port = atoi(argv[++i]);
    else if (argv[i][0] != '-' && handler_file == NULL)
      handler_file = argv[i];
    else
      return usage();
  }
  if (handler_file == NULL || threads < 1 || threads > MAX_THREADS || !(deadline > 0) || port < 0)
    return usage();

  signal(SIGPIPE, SIG_IGN);
  /* Only the main thread takes SIGINT and SIGTERM (sigwait below). */
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

  h2o_config_init(&config);
  h2o_hostconf_t *host = h2o_config_register_host(&config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
  h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
  h2o_create_handler(path, sizeof(h2o_handler_t))->on_req = on_req;

  static worker_t workers[MAX_THREADS];
  for (int i = 0; i < threads; i++) {
    workers[i].listen_fd = listen_socket(port);
    if (workers[i].listen_fd < 0) {
      perror("h2o_host: bind");
      return 1;
    }
    if (port == 0) { /* the first socket's port, for the others to share */
      struct sockaddr_in a;
      socklen_t len = sizeof a;
      getsockname(workers[i].listen_fd, (struct sockaddr *)&a, &len);
      port = ntohs(a.sin_port);
    }
  }
  pthread_barrier_init(&started, NULL, (unsigned)threads + 1);
  for (int i = 0; i < threads; i++)
    if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
      perror("h2o_host: pthread_create");
      return 1;
    }
  pthread_barrier_wait(&started);
  /* A handler that fails to load stops the host before it says it listens. */
  for (int i = 0; i < threads; i++)
    if (workers[i].init_failed)
      return 1;
  printf("listening on 127.0.0.1:%d\n", port);
  fflush(stdout);

  int sig;
  sigwait(&stop_signals, &sig);
  for (int i = 0; i < threads; i++)
    uv_async_send(&workers[i].stop);
  int clean = 1;
  for (int i = 0; i < threads; i++) {
    pthread_join(workers[i].thread, NULL);
    clean &= workers[i].finished;
  }
  if (clean)
    h2o_config_dispose(&config);
  return clean ? 0 : 1;
}
