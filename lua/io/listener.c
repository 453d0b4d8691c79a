/* core._listen(kind, address_or_path, port, backlog) -> a listener whose
 * accept() waits for the next connection (core/listener.c): the accept
 * loop of loom.tcp.listen and loom.unix.listen (lua/loom/server.lua). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "lm_io.h"
#include "listener.h"

#define LM_LISTENER_MT "loom.listener"

typedef struct llistener {
  loom_listener_t l;
  lm_ctx *ctx;
  lm_request rq;
  int waiting;
  int closed;
  char *path; /* the socket file to remove on close */
} llistener;

static llistener *check_listener(lua_State *L) {
  return lm_check_self(L, LM_LISTENER_MT, "loom.listener");
}

static void on_connection(loom_listener_t *l) {
  llistener *ll = l->data;
  if (ll->waiting) {
    ll->waiting = 0;
    lm_request_complete(&ll->rq);
  }
}

static int rq_pending(lm_request *r) {
  return LM_CONTAINER_OF(r, llistener, rq)->waiting;
}

static void rq_stop(lm_request *r) {
  LM_CONTAINER_OF(r, llistener, rq)->waiting = 0;
}

static const lm_request_ops accept_ops = {rq_pending, rq_stop, NULL, NULL, 0};

static int accept_now(lua_State *L, llistener *ll);

static int accept_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  llistener *ll = LM_CONTAINER_OF((lm_request *)kctx, llistener, rq);
  lua_pushnil(L);
  lua_setiuservalue(L, 1, 1);
  lm_request_check(L, &ll->rq);
  lua_settop(L, 1);
  return accept_now(L, ll);
}

static int accept_now(lua_State *L, llistener *ll) {
  if (ll->closed)
    return 0;
  loom_stream_t *s;
  int rc = loom_listener_accept(&ll->l, &s);
  if (rc == 0) {
    lm_stream_push(L, ll->ctx, s);
    return 1;
  }
  if (rc != UV_EAGAIN)
    return lm_io_error(L, rc, "accept");
  if (ll->waiting)
    return lm_error(L, "usage", "another task is accepting on this listener");
  if (ll->ctx->current && !lua_isyieldable(L))
    return lm_error(L, "usage", "cannot wait here: a C function without continuation is on the stack");
  lm_request_prepare(L, &ll->rq, &accept_ops, 0);
  ll->waiting = 1;
  lua_pushthread(L);
  lua_setiuservalue(L, 1, 1);
  return lm_request_wait(L, &ll->rq, accept_k);
}

/* l:accept() -> the next connection's stream, or nothing once closed. */
static int listener_accept(lua_State *L) {
  llistener *ll = check_listener(L);
  lua_settop(L, 1);
  return accept_now(L, ll);
}

static void close_listener(llistener *ll) {
  if (ll->closed)
    return;
  ll->closed = 1;
  if (!ll->ctx->closed)
    loom_listener_close(&ll->l);
  if (ll->path) {
    unlink(ll->path);
    free(ll->path);
    ll->path = NULL;
  }
}

/* l:close(): stops listening (a waiting accept returns nothing) and, for
 * a Unix domain socket, removes its file. */
static int listener_close(lua_State *L) {
  llistener *ll = check_listener(L);
  close_listener(ll);
  if (ll->waiting) {
    ll->waiting = 0;
    lm_request_complete(&ll->rq);
  }
  return 0;
}

static int listener_gc(lua_State *L) {
  close_listener(lua_touserdata(L, 1));
  return 0;
}

/* l:sockname() -> {address=, port=, family=} or {path=, family="unix"} */
static int listener_sockname(lua_State *L) {
  llistener *ll = check_listener(L);
  if (ll->closed)
    return lm_error(L, "closed", "the listener is closed");
  loom_stream_t *s = ll->l.s;
  if (s->kind == LOOM_STREAM_PIPE) {
    char path[1024];
    size_t len = sizeof path;
    int rc = uv_pipe_getsockname(&s->h.pipe, path, &len);
    if (rc)
      return lm_io_error(L, rc, "sockname");
    lua_createtable(L, 0, 2);
    lua_pushlstring(L, path, len);
    lua_setfield(L, -2, "path");
    lua_pushliteral(L, "unix");
    lua_setfield(L, -2, "family");
    return 1;
  }
  struct sockaddr_storage ss;
  int len = sizeof ss;
  int rc = uv_tcp_getsockname(&s->h.tcp, (struct sockaddr *)&ss, &len);
  if (rc)
    return lm_io_error(L, rc, "sockname");
  lm_io_push_sockaddr(L, (struct sockaddr *)&ss);
  return 1;
}

int lm_io_listen(lua_State *L) {
  lm_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
  const char *kind = luaL_checkstring(L, 1);
  const char *target = luaL_checkstring(L, 2);
  int port = (int)luaL_optinteger(L, 3, 0);
  int backlog = (int)luaL_optinteger(L, 4, 511);
  int is_unix = strcmp(kind, "unix") == 0;
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  if (!is_unix && uv_ip4_addr(target, port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(target, port, (struct sockaddr_in6 *)&ss) != 0)
    /* In the name of the one caller with an address (a name was resolved). */
    return lm_error(L, "argument",
                    "bad argument #1 to 'loom.tcp.listen' (not an IPv4 or IPv6 address)");
  llistener *ll = lua_newuserdatauv(L, sizeof *ll, 1);
  memset(ll, 0, sizeof *ll);
  ll->ctx = ctx;
  ll->rq.ctx = ctx;
  ll->l.data = ll;
  ll->l.on_connection = on_connection;
  ll->closed = 1; /* born closed: collected before it opened, it closes nothing */
  luaL_setmetatable(L, LM_LISTENER_MT);
  int rc = loom_listener_open(&ll->l, &ctx->loop, (struct sockaddr *)&ss, is_unix ? target : NULL,
                              backlog);
  if (rc) {
    const char *what = is_unix ? lua_pushfstring(L, "listen on %s", target)
                               : lua_pushfstring(L, "listen on %s port %d", target, port);
    return lm_io_error(L, rc, what);
  }
  ll->closed = 0;
  if (is_unix)
    ll->path = strdup(target);
  return 1;
}

static const luaL_Reg listener_methods[] = {
  {"accept", listener_accept},
  {"close", listener_close},
  {"sockname", listener_sockname},
  {NULL, NULL}
};

static const luaL_Reg listener_metamethods[] = {
  {"__gc", listener_gc},
  {"__close", listener_close},
  {NULL, NULL}
};

void lm_open_listener(lua_State *L) {
  lm_new_class(L, LM_LISTENER_MT, listener_methods, listener_metamethods);
}
