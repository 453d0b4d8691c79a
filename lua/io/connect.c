/* core._connect(kind, host(s)_or_path, port, attempt_timeout [, timeout]) ->
 * stream: the wait for core/connect.c, one lm_request. The overall
 * timeout (or a cancel, or loom.timeout) stops the attempt under way and
 * waits for its callback before raising. */
#include <math.h>
#include <string.h>
#include "lm_io.h"
#include "connect.h"

#define LM_CONNECT_MT "loom.connect"

typedef struct lconnect {
  lm_request rq;
  loom_connect_t *c;  /* NULL once its callback ran */
  loom_stream_t *s;   /* connected and not handed out yet */
  int status;
  double timeout;
} lconnect;

static void on_done(loom_connect_t *c, int status, loom_stream_t *s) {
  lconnect *lc = c->data;
  if (lc == NULL) { /* its caller is gone */
    if (s)
      loom_stream_close(s, NULL);
    return;
  }
  lc->c = NULL;
  lc->status = status;
  lc->s = s;
  lm_request_complete(&lc->rq);
}

static int rq_pending(lm_request *r) {
  return LM_CONTAINER_OF(r, lconnect, rq)->c != NULL;
}

static void rq_stop(lm_request *r) {
  loom_connect_cancel(LM_CONTAINER_OF(r, lconnect, rq)->c);
}

static void rq_drained(lua_State *L, lm_request *r) {
  lconnect *lc = LM_CONTAINER_OF(r, lconnect, rq);
  if (r->interrupted == LOOM_ETIMEDOUT) {
    lm_push_error(L, "timeout", "timed out after %f s connecting", lc->timeout);
    lua_pushliteral(L, "ETIMEDOUT");
    lua_setfield(L, -2, "code");
    lua_error(L);
  }
}

static const lm_request_ops connect_ops = {rq_pending, rq_stop, rq_drained, NULL, 0};

static int connect_gc(lua_State *L) {
  lconnect *lc = lua_touserdata(L, 1);
  if (lc->c) {
    lc->c->data = NULL;
    loom_connect_cancel(lc->c);
    lc->c = NULL;
  }
  if (lc->s) {
    loom_stream_close(lc->s, NULL);
    lc->s = NULL;
  }
  return 0;
}

/* Stack: kind, target, port, attempt timeout, timeout, the lconnect. */
static int connected_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lconnect *lc = LM_CONTAINER_OF((lm_request *)kctx, lconnect, rq);
  lm_request_check(L, &lc->rq);
  if (lc->status) {
    const char *target =
        lua_type(L, 2) == LUA_TSTRING ? lm_io_shown(L, lua_tostring(L, 2)) : "every host";
    const char *what = lua_isinteger(L, 3) ? lua_pushfstring(L, "connect to %s port %d", target,
                                                             (int)lua_tointeger(L, 3))
                                           : lua_pushfstring(L, "connect to %s", target);
    return lm_io_error(L, lc->status, what);
  }
  loom_stream_t *s = lc->s;
  lc->s = NULL;
  lm_stream_push(L, lc->rq.ctx, s);
  return 1;
}

/* The hosts at idx (a string, or a list of them) into hosts[0..n). */
static int check_hosts(lua_State *L, int idx, const char **hosts, int max) {
  if (lua_type(L, idx) == LUA_TSTRING) {
    hosts[0] = lua_tostring(L, idx);
    return 1;
  }
  luaL_checktype(L, idx, LUA_TTABLE);
  int n = (int)luaL_len(L, idx);
  if (n < 1 || n > max)
    lm_argerror(L, idx, lua_pushfstring(L, "a list of 1 to %d hosts expected", max));
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, idx, i + 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      lm_argerror(L, idx, "every host must be a string");
    hosts[i] = lua_tostring(L, -1);
    lua_pop(L, 1); /* still referenced by the table */
  }
  return n;
}

#define MAX_HOSTS 16

int lm_io_connect(lua_State *L) {
  lm_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
  const char *kind = luaL_checkstring(L, 1);
  const char *hosts[MAX_HOSTS];
  int nhosts = check_hosts(L, 2, hosts, MAX_HOSTS);
  int port = (int)luaL_optinteger(L, 3, 0);
  double attempt = lm_optseconds(L, 4);
  double timeout = lm_optseconds(L, 5);
  lua_settop(L, 5);
  lconnect *lc = lua_newuserdatauv(L, sizeof *lc, 0);
  memset(lc, 0, sizeof *lc);
  luaL_setmetatable(L, LM_CONNECT_MT);
  lc->rq.ctx = ctx;
  lc->timeout = timeout;
  if (timeout == 0) { /* as the timeout of a connect under way says it */
    lm_push_error(L, "timeout", "timed out after 0 s connecting");
    lua_pushliteral(L, "ETIMEDOUT");
    lua_setfield(L, -2, "code");
    return lua_error(L);
  }
  lm_request_prepare(L, &lc->rq, &connect_ops, 0);
  uint64_t attempt_ns = attempt > 0 ? (uint64_t)fmin(attempt * 1e9, 9e18) : attempt == 0 ? 1 : 0;
  int err = 0;
  lc->c = strcmp(kind, "unix") == 0
              ? loom_connect_pipe(&ctx->loop, hosts[0], attempt_ns, on_done, lc, &err)
              : loom_connect_tcp(&ctx->loop, hosts, nhosts, port, attempt_ns, on_done, lc, &err);
  if (lc->c == NULL) {
    lm_request_abort(&lc->rq);
    return lm_io_error(L, err, lua_pushfstring(L, "connect to %s", lm_io_shown(L, hosts[0])));
  }
  lm_wait_arm(lc->rq.wait, timeout);
  return lm_request_wait(L, &lc->rq, connected_k);
}

static const luaL_Reg connect_metamethods[] = {{"__gc", connect_gc}, {NULL, NULL}};

void lm_open_connect(lua_State *L) {
  lm_new_class(L, LM_CONNECT_MT, NULL, connect_metamethods);
}
