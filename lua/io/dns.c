/* core._dns_resolve(name [, timeout]) -> {{address=, family=}, ...}: every
 * address of a name, in the resolver's order (core/resolve.c, on libuv's
 * thread pool). A failed lookup is kind `dns` with getaddrinfo's code
 * ("EAI_NONAME"). */
#include <stdlib.h>
#include <string.h>
#include "lm_io.h"
#include "resolve.h"

#define LM_RESOLVE_MT "loom.dns.lookup"

/* The lookup is allocated apart: a thread of the pool writes into it until
 * its callback, which may come after the userdata was collected. */
typedef struct lresolve {
  lm_request rq;
  loom_resolve_t *r;
  int status;
  double timeout;
} lresolve;

static void on_resolved(loom_resolve_t *r, int status) {
  lresolve *lr = r->data;
  if (lr == NULL) { /* its caller is gone */
    loom_resolve_free(r);
    free(r);
    return;
  }
  lr->status = status;
  lm_request_complete(&lr->rq);
}

static int rq_pending(lm_request *r) {
  return LM_CONTAINER_OF(r, lresolve, rq)->r->active;
}

static void rq_stop(lm_request *r) {
  loom_resolve_cancel(LM_CONTAINER_OF(r, lresolve, rq)->r);
}

static void rq_drained(lua_State *L, lm_request *r) {
  lresolve *lr = LM_CONTAINER_OF(r, lresolve, rq);
  if (r->interrupted == LOOM_ETIMEDOUT)
    lm_error(L, "timeout", "timed out after %f s resolving", lr->timeout);
}

static const lm_request_ops resolve_ops = {rq_pending, rq_stop, rq_drained, NULL, 0};

static int resolve_gc(lua_State *L) {
  lresolve *lr = lua_touserdata(L, 1);
  loom_resolve_t *r = lr->r;
  lr->r = NULL;
  if (r == NULL)
    return 0;
  if (r->active) {
    r->data = NULL;
    loom_resolve_cancel(r);
    return 0;
  }
  loom_resolve_free(r);
  free(r);
  return 0;
}

/* Stack: name, timeout, the lookup. */
static int resolved_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lresolve *lr = LM_CONTAINER_OF((lm_request *)kctx, lresolve, rq);
  lm_request_check(L, &lr->rq);
  if (lr->status) {
    lm_push_error(L, "dns", "resolve %s: %s", lm_io_shown(L, lua_tostring(L, 1)),
                  uv_strerror(lr->status));
    lua_pushstring(L, uv_err_name(lr->status));
    lua_setfield(L, -2, "code");
    return lua_error(L);
  }
  lua_newtable(L);
  char ip[INET6_ADDRSTRLEN];
  struct sockaddr_storage sa;
  for (int i = 1; loom_resolve_next(lr->r, ip, sizeof ip, &sa); i++) {
    lua_createtable(L, 0, 2);
    lua_pushstring(L, ip);
    lua_setfield(L, -2, "address");
    lua_pushstring(L, sa.ss_family == AF_INET6 ? "inet6" : "inet");
    lua_setfield(L, -2, "family");
    lua_rawseti(L, -2, i);
  }
  return 1;
}

int lm_io_dns_resolve(lua_State *L) {
  lm_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
  const char *name = luaL_checkstring(L, 1);
  double timeout = lm_optseconds(L, 2);
  lua_settop(L, 2);
  lresolve *lr = lua_newuserdatauv(L, sizeof *lr, 0);
  memset(lr, 0, sizeof *lr);
  luaL_setmetatable(L, LM_RESOLVE_MT);
  lr->rq.ctx = ctx;
  lr->timeout = timeout;
  lr->r = calloc(1, sizeof *lr->r);
  if (lr->r == NULL)
    return lm_error(L, "memory", "cannot allocate a lookup");
  lr->r->data = lr;
  lm_request_prepare(L, &lr->rq, &resolve_ops, 0);
  int rc = loom_resolve_start(&ctx->loop, lr->r, name, 0, on_resolved);
  if (rc) {
    lm_request_abort(&lr->rq);
    return lm_io_error(L, rc, lua_pushfstring(L, "resolve %s", lm_io_shown(L, name)));
  }
  lm_wait_arm(lr->rq.wait, timeout);
  return lm_request_wait(L, &lr->rq, resolved_k);
}

static const luaL_Reg resolve_metamethods[] = {{"__gc", resolve_gc}, {NULL, NULL}};

void lm_open_dns(lua_State *L) {
  lm_new_class(L, LM_RESOLVE_MT, NULL, resolve_metamethods);
}
