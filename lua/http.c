/* The binding of loom.http's transfers: one HTTP client per loop (a
 * userdata in the registry, closed with the state) and a transfer object
 * whose waits go through request.c. The engine, libcurl's side, comes from
 * the loom.curl module as a vtable (core/http/http.h), as a database
 * driver's does: loom.core itself links no libcurl. lua/loom/http.lua
 * makes the API out of these pieces. */
#include <limits.h>
#include <string.h>
#include "lm.h"
#include "http/http.h"

#define LM_HTTP_ENGINES "loom.http.engines"
#define LM_HTTP_CLIENT_MT "loom.http.client"
#define LM_HTTP_XFER_MT "loom.http.transfer"

static char client_key;

typedef struct lm_http_client {
  const loom_http_engine_t *eng;
  loom_http_t *h;
} lm_http_client;

typedef struct lm_http_xfer {
  lm_request rq;
  const loom_http_engine_t *eng;
  loom_http_xfer_t *x;
  int events; /* what happened and was not asked for yet */
  int want;   /* what the wait in progress is for */
} lm_http_xfer;

static int client_gc(lua_State *L) {
  lm_http_client *c = lua_touserdata(L, 1);
  if (c->h)
    c->eng->close(c->h);
  c->h = NULL;
  return 0;
}

/* The engine at arg, or NULL when it is not one loom.curl handed out. */
static const loom_http_engine_t *to_engine(lua_State *L, int arg) {
  const loom_http_engine_t *eng = lua_touserdata(L, arg);
  if (!lua_islightuserdata(L, arg) || eng == NULL)
    return NULL;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LM_HTTP_ENGINES);
  int known = lua_rawgetp(L, -1, eng) == LUA_TBOOLEAN;
  lua_pop(L, 2);
  return known ? eng : NULL;
}

/* This state's client, made on first use; pushed. */
static lm_http_client *push_client(lua_State *L, const loom_http_engine_t *eng) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &client_key) == LUA_TUSERDATA)
    return lua_touserdata(L, -1);
  lua_pop(L, 1);
  lm_ctx *ctx = lm_ctx_get(L);
  lm_http_client *c = lua_newuserdatauv(L, sizeof *c, 0);
  c->eng = eng;
  c->h = NULL;
  luaL_setmetatable(L, LM_HTTP_CLIENT_MT);
  char err[256];
  c->h = eng->open(&ctx->loop, err, sizeof err);
  if (c->h == NULL)
    lm_error(L, "http", "%s", err);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &client_key);
  return c;
}

static void on_event(loom_http_xfer_t *x, int events) {
  lm_http_xfer *u = x->data;
  u->events |= events;
  if (events & u->want)
    lm_request_complete(&u->rq);
}

static int xfer_pending(lm_request *r) {
  lm_http_xfer *u = LM_CONTAINER_OF(r, lm_http_xfer, rq);
  return u->x && !u->x->done && !(u->events & u->want);
}

/* A cancel or a timeout: the transfer stops now, its handle freed. */
static void xfer_stop(lm_request *r) {
  lm_http_xfer *u = LM_CONTAINER_OF(r, lm_http_xfer, rq);
  u->eng->abort(u->x);
}

static const lm_request_ops xfer_ops = {xfer_pending, xfer_stop, NULL, NULL, 0};

static lm_http_xfer *check_xfer(lua_State *L) {
  lm_http_xfer *u = lm_check_self(L, LM_HTTP_XFER_MT, "loom.http transfer");
  if (u->x == NULL)
    lm_error(L, "closed", "the HTTP transfer is closed");
  return u;
}

/* t:close(), also its __gc: the transfer stops and is freed. A task
 * waiting on it meanwhile is woken to find it stopped; the collector
 * frees it then. */
static int xfer_close(lua_State *L) {
  lm_http_xfer *u = lua_touserdata(L, 1);
  if (u->x == NULL)
    return 0;
  if (u->rq.wait) {
    u->eng->abort(u->x);
    lm_request_complete(&u->rq);
    return 0;
  }
  u->eng->free(u->x);
  u->x = NULL;
  return 0;
}

static const char *opt_string(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  const char *s = lua_tostring(L, -1);
  lua_pop(L, 1); /* the table keeps it */
  return s;
}

static lua_Integer opt_int(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  lua_Integer n = lua_tointeger(L, -1);
  lua_pop(L, 1);
  return n;
}

/* Seconds as curl's milliseconds, rounded up: a timeout under a
 * millisecond is not none. One too long for a long (or infinite) is none:
 * the cast would be undefined. */
static long to_ms(lua_Number seconds) {
  lua_Number ms = seconds * 1000 + 0.999;
  return ms > 0 && ms < (lua_Number)LONG_MAX ? (long)ms : 0;
}

/* core._http_start(engine, opts) -> transfer, started. opts comes checked
 * from lua/loom/http.lua: method, url, headers (a list of "Name: value"),
 * body (a string) or body_pull, timeout and connect_timeout (seconds),
 * follow, verify, cafile, version, high_water. */
static int l_http_start(lua_State *L) {
  const loom_http_engine_t *eng = to_engine(L, 1);
  if (eng == NULL)
    return lm_argerror(L, 1, "not an HTTP engine from loom.curl");
  luaL_checktype(L, 2, LUA_TTABLE);
  lm_http_client *c = push_client(L, eng);
  int client = lua_gettop(L);
  loom_http_opts o;
  memset(&o, 0, sizeof o);
  o.method = opt_string(L, 2, "method");
  o.url = opt_string(L, 2, "url");
  lua_getfield(L, 2, "body");
  o.body = lua_tolstring(L, -1, &o.body_len);
  lua_pop(L, 1);
  lua_getfield(L, 2, "body_pull");
  o.body_pull = lua_toboolean(L, -1);
  lua_getfield(L, 2, "verify");
  o.verify = lua_toboolean(L, -1);
  lua_getfield(L, 2, "timeout");
  o.timeout_ms = to_ms(lua_tonumber(L, -1));
  lua_getfield(L, 2, "connect_timeout");
  o.connect_timeout_ms = to_ms(lua_tonumber(L, -1));
  lua_pop(L, 4);
  o.follow = (long)opt_int(L, 2, "follow");
  o.version = (int)opt_int(L, 2, "version");
  o.high_water = (size_t)opt_int(L, 2, "high_water");
  o.cafile = opt_string(L, 2, "cafile");
  if (o.method == NULL || o.url == NULL)
    return lm_error(L, "argument", "an HTTP request needs a method and a url");
  lua_getfield(L, 2, "headers");
  int nh = lua_istable(L, -1) ? (int)luaL_len(L, -1) : 0;
  const char **lines = lua_newuserdatauv(L, sizeof *lines * (size_t)(nh + 1), 0);
  for (int i = 0; i < nh; i++) {
    lua_geti(L, -2, i + 1);
    lines[i] = lua_tostring(L, -1);
    lua_pop(L, 1); /* the headers table keeps it */
  }
  o.headers = lines;
  o.nheaders = (size_t)nh;
  lm_http_xfer *u = lua_newuserdatauv(L, sizeof *u, 1);
  memset(u, 0, sizeof *u);
  luaL_setmetatable(L, LM_HTTP_XFER_MT);
  lua_pushvalue(L, client);
  lua_setiuservalue(L, -2, 1); /* the client outlives its transfers */
  u->eng = eng;
  u->rq.ctx = lm_ctx_get(L);
  u->x = eng->start(c->h, &o, on_event, u);
  if (u->x == NULL)
    return lm_error(L, "memory", "cannot allocate an HTTP transfer");
  return 1;
}

static int push_events(lua_State *L, lm_http_xfer *u) {
  int ev = u->events & u->want;
  if (u->x->done)
    ev |= LOOM_HTTP_EV_DONE;
  u->events &= ~ev;
  lua_pushinteger(L, ev);
  return 1;
}

static int wait_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lm_http_xfer *u = LM_CONTAINER_OF((lm_request *)kctx, lm_http_xfer, rq);
  lm_request_check(L, &u->rq);
  return push_events(L, u);
}

/* t:wait(events) -> the events (LOOM_HTTP_EV_*) that came, waiting until
 * one of those asked for did, or the transfer ended. */
static int xfer_wait(lua_State *L) {
  lm_http_xfer *u = check_xfer(L);
  /* One request slot: a second waiter would orphan the first's wait. */
  if (u->rq.wait)
    return lm_error(L, "usage", "another task is reading this HTTP response");
  u->want = (int)luaL_checkinteger(L, 2) | LOOM_HTTP_EV_DONE;
  if (u->x->done || (u->events & u->want))
    return push_events(L, u);
  lm_request_prepare(L, &u->rq, &xfer_ops, 0);
  return lm_request_wait(L, &u->rq, wait_k);
}

/* t:head() -> status, version (10, 11, 20, 30), header block, url */
static int xfer_head(lua_State *L) {
  lm_http_xfer *u = check_xfer(L);
  loom_http_xfer_t *x = u->x;
  lua_pushinteger(L, x->status);
  lua_pushinteger(L, x->version);
  lua_pushlstring(L, x->headers ? x->headers : "", x->headers_len);
  lua_pushstring(L, x->url);
  return 4;
}

/* t:result() -> nil while running or once it succeeded; else the
 * CURLcode's name, curl's reason and the code (-1: stopped by loom). */
static int xfer_result(lua_State *L) {
  lm_http_xfer *u = check_xfer(L);
  if (!u->x->done || u->x->result == 0)
    return 0;
  lua_pushstring(L, u->x->result_name);
  lua_pushstring(L, u->x->reason);
  lua_pushinteger(L, u->x->result);
  return 3;
}

/* t:take([n]) -> up to n buffered body bytes (all without n), or "" */
static int xfer_take(lua_State *L) {
  lm_http_xfer *u = check_xfer(L);
  size_t n = u->x->len;
  if (!lua_isnoneornil(L, 2)) {
    lua_Integer want = luaL_checkinteger(L, 2);
    if (want >= 0 && (size_t)want < n)
      n = (size_t)want;
  }
  lua_pushlstring(L, u->x->buf ? u->x->buf : "", n);
  if (n > 0)
    u->eng->consume(u->x, n);
  return 1;
}

/* t:want(n): the transfer goes on until n body bytes are buffered, its
 * buffer option notwithstanding, for a read that asks for more. */
static int xfer_want(lua_State *L) {
  lm_http_xfer *u = check_xfer(L);
  lua_Integer n = luaL_checkinteger(L, 2);
  u->eng->want(u->x, n < 0 ? 0 : (size_t)n);
  return 0;
}

/* t:find(byte) -> the position of the first such byte buffered, or nil */
static int xfer_find(lua_State *L) {
  lm_http_xfer *u = check_xfer(L);
  const char *s = luaL_checkstring(L, 2);
  const char *p = u->x->len ? memchr(u->x->buf, s[0], u->x->len) : NULL;
  if (p == NULL)
    return 0;
  lua_pushinteger(L, (lua_Integer)(p - u->x->buf) + 1);
  return 1;
}

static int xfer_buffered(lua_State *L) {
  lm_http_xfer *u = check_xfer(L);
  lua_pushinteger(L, (lua_Integer)u->x->len);
  lua_pushboolean(L, u->x->done);
  return 2;
}

/* t:feed(chunk) sends the next piece of the upload; t:feed() ends it. */
static int xfer_feed(lua_State *L) {
  lm_http_xfer *u = check_xfer(L);
  size_t len = 0;
  const char *p = luaL_optlstring(L, 2, "", &len);
  if (u->eng->feed(u->x, p, len) != 0)
    return lm_error(L, "memory", "cannot buffer the upload");
  return 0;
}

/* core._http_stats() -> {transfers=, easy_live=, easy_idle=, sockets=},
 * or nil before the first request */
static int l_http_stats(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &client_key) != LUA_TUSERDATA)
    return 0;
  lm_http_client *c = lua_touserdata(L, -1);
  loom_http_stats s;
  c->eng->stats(c->h, &s);
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, (lua_Integer)s.transfers);
  lua_setfield(L, -2, "transfers");
  lua_pushinteger(L, (lua_Integer)s.easy_live);
  lua_setfield(L, -2, "easy_live");
  lua_pushinteger(L, (lua_Integer)s.easy_idle);
  lua_setfield(L, -2, "easy_idle");
  lua_pushinteger(L, (lua_Integer)s.sockets);
  lua_setfield(L, -2, "sockets");
  return 1;
}

const luaL_Reg lm_http_funcs[] = {
  {"_http_start", l_http_start},
  {"_http_stats", l_http_stats},
  {NULL, NULL}
};

static const luaL_Reg xfer_methods[] = {
  {"wait", xfer_wait},
  {"head", xfer_head},
  {"result", xfer_result},
  {"take", xfer_take},
  {"find", xfer_find},
  {"want", xfer_want},
  {"buffered", xfer_buffered},
  {"feed", xfer_feed},
  {"close", xfer_close},
  {NULL, NULL}
};

static const luaL_Reg xfer_meta[] = {{"__gc", xfer_close}, {"__close", xfer_close}, {NULL, NULL}};
static const luaL_Reg client_meta[] = {{"__gc", client_gc}, {NULL, NULL}};

void lm_open_http(lua_State *L) {
  lm_new_class(L, LM_HTTP_XFER_MT, xfer_methods, xfer_meta);
  lm_new_class(L, LM_HTTP_CLIENT_MT, NULL, client_meta);
}
