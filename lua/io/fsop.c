/* Waiting for one uv_fs request (on libuv's thread pool) through
 * lua/request.c: an interrupted call takes its request off the pool's
 * queue if it is still queued (uv_cancel), else waits until the thread
 * running it is done, then raises. */
#include <stdlib.h>
#include <string.h>
#include "lm_fsproc.h"

#define LM_FSWAIT_MT "loom.fs.wait"

int lm_fs_error(lua_State *L, int err, const char *what, const char *path) {
  if (path)
    lm_push_error(L, "io", "%s '%s': %s", what, path, uv_strerror(err));
  else
    lm_push_error(L, "io", "%s: %s", what, uv_strerror(err));
  lua_pushstring(L, uv_err_name(err));
  lua_setfield(L, -2, "code");
  if (path) {
    lua_pushstring(L, path);
    lua_setfield(L, -2, "path");
  }
  return lua_error(L);
}

void lm_fs_reset(lm_fsop *op) {
  ssize_t result = op->req.result;
  uv_fs_req_cleanup(&op->req);
  op->req.result = result;
}

void lm_fs_cb(uv_fs_t *req) {
  lm_fsop *op = req->data;
  op->out = 0;
  if (op->waiter)
    lm_request_complete(&op->waiter->rq);
  else if (op->orphan)
    op->release(op);
}

static int req_pending(lm_request *r) {
  lm_fswait *w = LM_CONTAINER_OF(r, lm_fswait, rq);
  return w->op && w->op->out;
}

static void req_stop(lm_request *r) {
  lm_fswait *w = LM_CONTAINER_OF(r, lm_fswait, rq);
  /* Fails (EBUSY) once a thread runs it: then it is waited out. */
  uv_cancel((uv_req_t *)&w->op->req);
}

/* The op ended after all, its caller gone: what it made is undone. */
static void req_drained(lua_State *L, lm_request *r) {
  (void)L;
  lm_fswait *w = LM_CONTAINER_OF(r, lm_fswait, rq);
  lm_fsop *op = w->op;
  if (op == NULL)
    return;
  op->waiter = NULL;
  if (w->owns) {
    w->op = NULL;
    op->release(op);
  }
}

static const lm_request_ops fs_ops = {req_pending, req_stop, req_drained, NULL, 0};

static int wait_gc(lua_State *L) {
  lm_fswait *w = lua_touserdata(L, 1);
  lm_fsop *op = w->op;
  if (op == NULL)
    return 0;
  w->op = NULL;
  if (op->waiter == w)
    op->waiter = NULL;
  if (!w->owns)
    return 0;
  if (op->out) {
    op->orphan = 1;
    uv_cancel((uv_req_t *)&op->req);
  } else {
    op->release(op);
  }
  return 0;
}

lm_fswait *lm_fs_wait_new(lua_State *L, lm_ctx *ctx, lm_fsop *op, int owns, int shielded) {
  lm_fswait *w = lua_newuserdatauv(L, sizeof *w, 0);
  memset(w, 0, sizeof *w);
  luaL_setmetatable(L, LM_FSWAIT_MT);
  w->rq.ctx = ctx;
  w->owns = owns;
  /* Owned from here: a raise below leaves the op to the wait's __gc. */
  w->op = op;
  lm_request_prepare(L, &w->rq, &fs_ops, shielded);
  op->req.data = op;
  return w;
}

int lm_fs_started(lua_State *L, lm_fswait *w, int rc, lua_KFunction done,
                  const char *what, const char *path) {
  if (rc < 0) {
    lm_request_abort(&w->rq);
    return lm_fs_error(L, rc, what, path);
  }
  w->op->out = 1;
  w->op->waiter = w;
  return lm_request_wait(L, &w->rq, done);
}

lm_fswait *lm_fs_done(lua_State *L, lua_KContext kctx) {
  lm_fswait *w = LM_CONTAINER_OF((lm_request *)kctx, lm_fswait, rq);
  w->op->waiter = NULL;
  /* Done, but the wait was interrupted meanwhile: what the op made is
   * undone now (an opened file closed), not when the wait is collected. */
  int st = w->rq.ended ? w->rq.ended->status : 0;
  if (w->owns && (st == LOOM_ECANCELED || st == LM_EDEADLINE || st == LM_EDEADLOCK)) {
    lm_fsop *op = w->op;
    w->op = NULL;
    op->release(op);
  }
  lm_request_check(L, &w->rq);
  return w;
}

static const luaL_Reg wait_meta[] = {{"__gc", wait_gc}, {NULL, NULL}};

void lm_open_fswait(lua_State *L) {
  lm_new_class(L, LM_FSWAIT_MT, NULL, wait_meta);
}
