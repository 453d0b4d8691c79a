/* One request to something that completes later (a database statement, a
 * pool acquire, and next a socket read or a job on a thread): the one place
 * that parks the caller, wakes it on completion, and on a cancel or an
 * expired timeout stops the work and waits it out before raising, so no
 * request keeps running behind its caller's back. luv's luv_setup_req and
 * luv_cleanup_req are the model. A new kind of request brings a start
 * function, its lm_request_ops and a continuation for the result. */
#include "lm.h"

static int request_k(lua_State *L, int status, lua_KContext kctx);
static int drained_k(lua_State *L, int status, lua_KContext kctx);

void lm_request_prepare(lua_State *L, lm_request *r, const lm_request_ops *ops, int shielded) {
  lm_wait *w = shielded ? lm_wait_prepare_shielded(L, r->ctx) : lm_wait_prepare(L, r->ctx);
  r->ops = ops;
  r->wait = w;
}

void lm_request_abort(lm_request *r) {
  lm_wait *w = r->wait;
  r->wait = NULL;
  if (w)
    lm_wait_abort(w);
}

int lm_request_complete(lm_request *r) {
  if (r->wait == NULL)
    return 0;
  lm_wait_finish(r->wait, 0, -1);
  return 1;
}

void lm_request_anchor(lua_State *L, int owner, int slot, int idx) {
  lua_pushvalue(L, idx);
  lua_setiuservalue(L, owner, slot);
}

int lm_request_wait(lua_State *L, lm_request *r, lua_KFunction done) {
  r->done = done;
  /* Work that completed as it started wakes nobody: it is done now. */
  if (!r->ops->pending(r))
    lm_wait_finish(r->wait, 0, -1);
  return lm_wait_begin_ctx(L, r->wait, request_k, (lua_KContext)r);
}

/* Completed, or interrupted: then stop the work and wait, shielded, until
 * it has drained (or, for work that may never stop, until its grace is
 * over). */
static int request_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lm_request *r = (lm_request *)kctx;
  lm_wait *w = r->wait;
  r->wait = NULL;
  r->ended = w;
  if (w->status == 0 || !r->ops->pending(r))
    return r->done(L, LUA_OK, kctx);
  r->interrupted = w->status;
  r->ops->stop(r);
  r->wait = lm_wait_prepare_shielded(L, r->ctx);
  if (!r->ops->pending(r))
    lm_wait_finish(r->wait, 0, -1);
  else if (r->ops->abandon)
    lm_wait_arm(r->wait, r->ops->grace);
  return lm_wait_begin_ctx(L, r->wait, drained_k, kctx);
}

int lm_request_check(lua_State *L, lm_request *r) {
  return lm_wait_check(L, r->ended);
}

static int drained_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lm_request *r = (lm_request *)kctx;
  lm_wait *w = r->wait;
  r->wait = NULL;
  /* The grace ran out: the work goes on alone, the caller is answered. */
  if (w->status == LOOM_ETIMEDOUT && r->ops->abandon && r->ops->pending(r))
    r->ops->abandon(r);
  if (r->ops->drained)
    r->ops->drained(L, r);
  /* Whatever the work managed, the caller asked for it to stop. */
  w->status = r->interrupted;
  w->shielded = 0;
  lm_wait_check(L, w);
  return lm_error(L, "cancelled", "request interrupted");
}
