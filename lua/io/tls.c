/* TLS in Lua: core._tls_context(opts, server, argn, fname) -> context,
 * servername; core._starttls(stream, context, host, timeout) -> stream,
 * once the handshake is over; s:alpn(), s:servername().
 *
 * A context holds a reference on core/tls.h's shared SSL_CTX, given back
 * by its collector: a server keeps one for all its connections, a client
 * makes one per connect (the core finds the same SSL_CTX again).
 *
 * The handshake is one lm_request. The transport runs the handshake as
 * bytes arrive; its watch (core/tls_transport.h) wakes the waiter when the
 * handshake is over, the socket failed or ended, or the stream was freed
 * (closed by another task). No option is echoed in an error: cert and key
 * may be PEM text, key material included. */
#include <string.h>
#include <sys/stat.h>
#include "lm_tls.h"
#include "tls_transport.h"

#define LM_TLS_CTX_MT "loom.tls.context"
#define LM_TLS_HS_MT "loom.tls.handshake"
#define ALPN_MAX 16

typedef struct {
  loom_tls_ctx_t *ctx;
} ltls_ctx;

static void push_tls_error(lua_State *L, const loom_tls_error_t *e, const char *what) {
  if (e->code == LOOM_TLS_ECLOSED && !what) {
    lm_push_error(L, "closed", "%s", e->reason);
    return;
  }
  lm_push_error(L, e->code == LOOM_TLS_ECLOSED ? "closed" : "tls", "%s%s%s", what ? what : "",
                what ? ": " : "", e->reason);
  lua_pushstring(L, loom_tls_code_name(e->code));
  lua_setfield(L, -2, "code");
}

int lm_stream_error(lua_State *L, const loom_stream_t *s, int err, const char *what) {
  const loom_tls_error_t *e = err == LOOM_TLS_STREAM_ERROR ? loom_tls_stream_error(s) : NULL;
  if (!e)
    return lm_io_error(L, err, what);
  push_tls_error(L, e, what);
  return lua_error(L);
}

/* ---- options --------------------------------------------------------------- */

typedef struct {
  int arg;
  const char *fname;
} where_t;

static int bad_option(lua_State *L, const where_t *w, const char *msg) {
  return lm_error(L, "argument", "bad argument #%d to '%s' (%s)", w->arg, w->fname, msg);
}

/* OpenSSL reads names, paths and PEM text up to a NUL: a string holding one
 * would be checked (or loaded) as a shorter one than given. */
static int has_nul(lua_State *L, int idx) {
  size_t len;
  const char *s = lua_tolstring(L, idx, &len);
  return strlen(s) != len;
}

static const char *opt_string(lua_State *L, int t, const where_t *w, const char *name) {
  int type = lua_getfield(L, t, name);
  const char *s = type == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  int nul = s && has_nul(L, -1);
  lua_pop(L, 1); /* the option table keeps the string alive */
  if (type != LUA_TNIL && type != LUA_TSTRING)
    bad_option(L, w, lua_pushfstring(L, "tls.%s must be a string", name));
  if (nul)
    bad_option(L, w, lua_pushfstring(L, "tls.%s has a NUL byte", name));
  return s;
}

static int opt_alpn(lua_State *L, int t, const where_t *w, const char **out) {
  int type = lua_getfield(L, t, "alpn");
  int n = 0;
  if (type == LUA_TTABLE) {
    lua_Integer len = luaL_len(L, -1);
    if (len > ALPN_MAX)
      bad_option(L, w, lua_pushfstring(L, "tls.alpn lists at most %d protocols", ALPN_MAX));
    for (n = 0; n < len; n++) {
      if (lua_geti(L, -1, n + 1) != LUA_TSTRING)
        bad_option(L, w, "tls.alpn must be a list of strings");
      if (has_nul(L, -1))
        bad_option(L, w, "tls.alpn has a NUL byte");
      out[n] = lua_tostring(L, -1);
      lua_pop(L, 1);
    }
  } else if (type != LUA_TNIL) {
    bad_option(L, w, "tls.alpn must be a list of strings");
  }
  lua_pop(L, 1);
  return n;
}

static void check_keys(lua_State *L, int t, const where_t *w, int server) {
  static const char *const known[] = {"ca", "verify", "alpn", "cert", "key", "servername", NULL};
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1);
    const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    int ok = 0;
    for (int i = 0; k && known[i]; i++)
      ok |= strcmp(k, known[i]) == 0 && !(server && strcmp(k, "servername") == 0);
    if (!ok)
      bad_option(L, w, k ? lua_pushfstring(L, "unknown tls option '%s'", k)
                         : "tls options are named");
  }
}

static int ctx_gc(lua_State *L) {
  ltls_ctx *u = lua_touserdata(L, 1);
  loom_tls_ctx_release(u->ctx);
  u->ctx = NULL;
  return 0;
}

/* core._tls_context(opts, server, argn, fname) -> context, servername:
 * opts true (a client with the defaults) or {ca =, verify =, servername
 * = (clients), alpn =, cert =, key =}. Clients verify unless verify is
 * false; servers ask a client certificate only with verify = true. ca is
 * a PEM file or a hashed directory; cert and key a PEM file or PEM text. */
int lm_tls_context(lua_State *L) {
  int server = lua_toboolean(L, 2);
  where_t w = {(int)luaL_optinteger(L, 3, 1), luaL_optstring(L, 4, "?")};
  loom_tls_config_t cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.server = server;
  cfg.verify = !server;
  const char *alpn[ALPN_MAX];
  const char *servername = NULL;
  if (lua_type(L, 1) == LUA_TTABLE) {
    check_keys(L, 1, &w, server);
    const char *ca = opt_string(L, 1, &w, "ca");
    struct stat st;
    if (ca && stat(ca, &st) == 0 && S_ISDIR(st.st_mode))
      cfg.ca_path = ca;
    else
      cfg.ca_file = ca;
    int type = lua_getfield(L, 1, "verify");
    if (type != LUA_TNIL && type != LUA_TBOOLEAN)
      bad_option(L, &w, "tls.verify must be a boolean");
    if (type == LUA_TBOOLEAN)
      cfg.verify = lua_toboolean(L, -1);
    lua_pop(L, 1);
    servername = server ? NULL : opt_string(L, 1, &w, "servername");
    cfg.cert = opt_string(L, 1, &w, "cert");
    cfg.key = opt_string(L, 1, &w, "key");
    cfg.alpn = alpn;
    cfg.nalpn = opt_alpn(L, 1, &w, alpn);
  } else if (server || !(lua_type(L, 1) == LUA_TBOOLEAN && lua_toboolean(L, 1))) {
    bad_option(L, &w, server ? "tls must be a table {cert =, key =, ...}"
                             : "tls must be true or a table");
  }
  ltls_ctx *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->ctx = NULL;
  luaL_setmetatable(L, LM_TLS_CTX_MT);
  loom_tls_error_t err;
  u->ctx = loom_tls_ctx_get(&cfg, &err);
  if (!u->ctx) {
    push_tls_error(L, &err, NULL);
    return lua_error(L);
  }
  if (servername)
    lua_pushstring(L, servername);
  else
    lua_pushnil(L);
  return 2;
}

/* ---- the handshake --------------------------------------------------------- */

typedef struct {
  lm_request rq;
  loom_stream_t *s; /* NULL once freed under the waiter */
  int waiting;
  double timeout;
} lhandshake;

/* Over: complete, failed, or nothing more can come. */
static int over(const loom_stream_t *s) {
  return s == NULL || s->closing || s->eof || s->read_error || s->write_error ||
         loom_tls_established(loom_tls_transport_engine(s));
}

static void on_progress(loom_stream_t *s) {
  lhandshake *h = loom_tls_transport_watcher(s);
  if (s->closing)
    h->s = NULL; /* freed when this returns */
  if (h->waiting && over(h->s)) {
    h->waiting = 0;
    lm_request_complete(&h->rq);
  }
}

/* Lets go of the stream: unwatched, it no longer says when it is freed. */
static void unwatch(lhandshake *h) {
  if (h->s)
    loom_tls_transport_unwatch(h->s);
  h->s = NULL;
}

static int hs_pending(lm_request *r) {
  return LM_CONTAINER_OF(r, lhandshake, rq)->waiting;
}

static void hs_stop(lm_request *r) {
  lhandshake *h = LM_CONTAINER_OF(r, lhandshake, rq);
  h->waiting = 0;
  unwatch(h);
}

static void hs_drained(lua_State *L, lm_request *r) {
  lhandshake *h = LM_CONTAINER_OF(r, lhandshake, rq);
  if (r->interrupted == LOOM_ETIMEDOUT) {
    lm_push_error(L, "timeout", "timed out after %f s in the TLS handshake", h->timeout);
    lua_pushliteral(L, "ETIMEDOUT");
    lua_setfield(L, -2, "code");
    lua_error(L);
  }
}

static const lm_request_ops handshake_ops = {hs_pending, hs_stop, hs_drained, NULL, 0};

/* Stack: stream, context, host, timeout, what, the lhandshake. */
static int handshake_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lhandshake *h = LM_CONTAINER_OF((lm_request *)kctx, lhandshake, rq);
  loom_stream_t *s = h->s;
  const char *what = lua_tostring(L, 5);
  unwatch(h);
  lm_request_check(L, &h->rq);
  if (s == NULL || s->closing)
    return lm_error(L, "closed", "the stream was closed during the TLS handshake");
  if (loom_tls_established(loom_tls_transport_engine(s)) && !s->read_error && !s->write_error) {
    lua_settop(L, 1);
    return 1;
  }
  if (s->read_error)
    return lm_stream_error(L, s, s->read_error, what);
  if (s->write_error)
    return lm_stream_error(L, s, s->write_error, what);
  lm_push_error(L, "tls", "%s: the peer closed the connection", what);
  lua_pushliteral(L, "handshake");
  lua_setfield(L, -2, "code");
  return lua_error(L);
}

/* A waiter collected with its task (the state closing) lets go of the
 * stream first: the stream's free would call it back. */
static int hs_gc(lua_State *L) {
  lhandshake *h = lua_touserdata(L, 1);
  h->waiting = 0;
  unwatch(h);
  return 0;
}

/* core._starttls(stream, context, host, timeout[, what]) -> stream: TLS
 * on the connected stream, host what the server's certificate must name
 * (nil on a server), and the handshake waited for (timeout seconds, nil:
 * only loom.timeout's bound). what starts its errors' messages ("TLS
 * handshake with example.com port 443"; default "TLS handshake"). */
int lm_tls_start(lua_State *L) {
  lm_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
  loom_stream_t *s = lm_stream_check(L, 1);
  ltls_ctx *u = luaL_checkudata(L, 2, LM_TLS_CTX_MT);
  const char *host = luaL_optstring(L, 3, NULL);
  double timeout = lm_optseconds(L, 4);
  luaL_optstring(L, 5, NULL);
  lua_settop(L, 5);
  if (lua_isnil(L, 5)) {
    lua_pushliteral(L, "TLS handshake");
    lua_replace(L, 5);
  }
  if (s->transport)
    return lm_error(L, "usage", "the stream is under TLS already");
  loom_tls_error_t err;
  if (loom_tls_transport_attach(s, u->ctx, host, &err) != 0) {
    push_tls_error(L, &err, lua_tostring(L, 5));
    return lua_error(L);
  }
  lhandshake *h = lua_newuserdatauv(L, sizeof *h, 0);
  memset(h, 0, sizeof *h);
  luaL_setmetatable(L, LM_TLS_HS_MT);
  h->s = s;
  h->rq.ctx = ctx;
  h->timeout = timeout;
  /* The hello goes out (a client's); a failure to send it is the
   * stream's write error, which ends the wait below. */
  (void)loom_tls_transport_start(s);
  int rc = loom_stream_want(s, 0);
  if (rc)
    return lm_io_error(L, rc, lua_tostring(L, 5));
  lm_request_prepare(L, &h->rq, &handshake_ops, 0);
  lm_wait_arm(h->rq.wait, timeout);
  loom_tls_transport_watch(s, on_progress, h);
  h->waiting = !over(s);
  return lm_request_wait(L, &h->rq, handshake_k);
}

/* s:alpn() -> the protocol ALPN settled on, or nil. */
static int stream_alpn(lua_State *L) {
  loom_stream_t *s = lm_stream_check(L, 1);
  const loom_tls_t *t = loom_tls_transport_engine(s);
  size_t n = 0;
  const char *p = t ? loom_tls_alpn(t, &n) : NULL;
  if (n > 0)
    lua_pushlstring(L, p, n);
  else
    lua_pushnil(L);
  return 1;
}

static const luaL_Reg ctx_meta[] = {{"__gc", ctx_gc}, {NULL, NULL}};
static const luaL_Reg hs_meta[] = {{"__gc", hs_gc}, {NULL, NULL}};
/* s:servername() -> on a server, the name the client asked for (SNI), or
 * nil. */
static int stream_servername(lua_State *L) {
  loom_stream_t *s = lm_stream_check(L, 1);
  const loom_tls_t *t = loom_tls_transport_engine(s);
  const char *name = t ? loom_tls_servername(t) : NULL;
  if (name)
    lua_pushstring(L, name);
  else
    lua_pushnil(L);
  return 1;
}

static const luaL_Reg stream_methods[] = {
  {"alpn", stream_alpn},
  {"servername", stream_servername},
  {NULL, NULL}
};

/* After lm_open_stream: s:alpn() and s:servername() join the stream's
 * methods. */
void lm_open_tls(lua_State *L) {
  lm_new_class(L, LM_TLS_CTX_MT, NULL, ctx_meta);
  lm_new_class(L, LM_TLS_HS_MT, NULL, hs_meta);
  lm_class_add(L, LM_STREAM_MT, stream_methods);
}
