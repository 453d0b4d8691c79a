/* A pipe to or from a child process (p.stdin, p.stdout, p.stderr of
 * loom.process.spawn), with the file's methods: read("l" | "L" | "a" | n,
 * ...), lines, write(...), close, <close>. A read waits until the formats
 * can be answered (a partial line is never handed out); a write waits
 * until the child took every byte, which is the backpressure: a child
 * that does not read holds its writer, not the memory.
 *
 * The uv_pipe_t, its buffers and its write request are malloc'd: a pipe
 * collected with a read or a write out is closed, and libuv's close
 * callback frees them. */
#include <stdlib.h>
#include <string.h>
#include "lm_fsproc.h"

#define LM_PIPE_WAIT_MT "loom.pipe.wait"
/* What one read asks libuv for at least, so a line read does not go a
 * few bytes at a time. */
#define READ_MIN 16384

typedef struct pwait pwait;

typedef struct pstate {
  uv_pipe_t h;
  uv_write_t wreq;
  lm_rbuf rb;
  size_t want;     /* what the read out needs */
  int reading;     /* uv_read_start in effect */
  int read_error;
  char *wbuf;      /* the bytes of the write out */
  int writing;
  int write_status;
  int closing;
  int closed;      /* close_cb ran */
  int orphan;      /* the userdata is gone: close_cb frees */
  pwait *waiter;
} pstate;

struct lm_pipe {
  lm_ctx *ctx;
  pstate *ps;
  int readable;
};

struct pwait {
  lm_request rq;
  pstate *ps;
  lm_reading reading;
};

static void free_pipe(pstate *ps) {
  lm_rbuf_free(&ps->rb);
  free(ps->wbuf);
  free(ps);
}

/* The memory goes with the last of the handle and the userdata. */
static void close_cb(uv_handle_t *h) {
  pstate *ps = h->data;
  ps->closed = 1;
  if (ps->orphan)
    free_pipe(ps);
}

/* Closing ends a read and a write out (their callbacks run first, with
 * the waiter told); the memory goes in close_cb. */
static void close_pipe(pstate *ps) {
  if (ps->closing)
    return;
  ps->closing = 1;
  uv_close((uv_handle_t *)&ps->h, close_cb);
}

static void wake(pstate *ps) {
  if (ps->waiter)
    lm_request_complete(&ps->waiter->rq);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  pstate *ps = h->data;
  size_t room = lm_rbuf_room(&ps->rb, ps->want > READ_MIN ? ps->want : READ_MIN);
  *buf = uv_buf_init(room ? ps->rb.p + ps->rb.end : NULL, room > (1u << 30) ? (1u << 30) : (unsigned)room);
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  (void)buf;
  pstate *ps = s->data;
  if (n == 0)
    return;
  if (n > 0)
    ps->rb.end += (size_t)n;
  else if (n == UV_EOF)
    ps->rb.eof = 1;
  else
    ps->read_error = (int)n;
  uv_read_stop(s);
  ps->reading = 0;
  wake(ps);
}

static void write_cb(uv_write_t *req, int status) {
  pstate *ps = req->data;
  free(ps->wbuf);
  ps->wbuf = NULL;
  ps->writing = 0;
  ps->write_status = status;
  wake(ps);
}

static int req_pending(lm_request *r) {
  pwait *w = LM_CONTAINER_OF(r, pwait, rq);
  return w->ps && (w->ps->reading || w->ps->writing);
}

/* A read stops at once; a write cannot be taken back: the pipe closes. */
static void req_stop(lm_request *r) {
  pwait *w = LM_CONTAINER_OF(r, pwait, rq);
  pstate *ps = w->ps;
  if (ps->reading) {
    uv_read_stop((uv_stream_t *)&ps->h);
    ps->reading = 0;
  }
  if (ps->writing)
    close_pipe(ps);
}

static void req_drained(lua_State *L, lm_request *r) {
  (void)L;
  pwait *w = LM_CONTAINER_OF(r, pwait, rq);
  if (w->ps && w->ps->waiter == w)
    w->ps->waiter = NULL;
}

static const lm_request_ops pipe_ops = {req_pending, req_stop, req_drained, NULL, 0};

static int pwait_gc(lua_State *L) {
  pwait *w = lua_touserdata(L, 1);
  if (w->ps && w->ps->waiter == w)
    w->ps->waiter = NULL;
  return 0;
}

static pwait *new_wait(lua_State *L, lm_pipe *p) {
  pwait *w = lua_newuserdatauv(L, sizeof *w, 0);
  memset(w, 0, sizeof *w);
  luaL_setmetatable(L, LM_PIPE_WAIT_MT);
  w->rq.ctx = p->ctx;
  lm_request_prepare(L, &w->rq, &pipe_ops, 0);
  w->ps = p->ps;
  return w;
}

static lm_pipe *check_pipe(lua_State *L) {
  return lm_check_self(L, LM_PIPE_MT, "loom.pipe");
}

static pstate *usable(lua_State *L, lm_pipe *p) {
  if (p->ps == NULL || p->ps->closing)
    lm_error(L, "closed", "the pipe is closed");
  if (p->ps->waiter || p->ps->reading || p->ps->writing)
    lm_error(L, "busy", "another task is using this pipe: one call at a time");
  return p->ps;
}

static int pipe_error(lua_State *L, int err, const char *what) {
  return lm_fs_error(L, err, what, NULL);
}

/* ---- read ---------------------------------------------------------------- */

static int read_k(lua_State *L, int status, lua_KContext kctx);

static int read_more(lua_State *L, lm_pipe *p, const lm_reading *progress) {
  pstate *ps = p->ps;
  lm_reading r = *progress;
  size_t want;
  if (lm_reading_step(L, &r, &ps->rb, &want))
    return r.nres;
  if (ps->read_error) {
    int err = ps->read_error;
    ps->read_error = 0;
    return pipe_error(L, err, "read from a pipe");
  }
  pwait *w = new_wait(L, p);
  w->reading = r;
  ps->want = ps->rb.end - ps->rb.start + want;
  int rc = uv_read_start((uv_stream_t *)&ps->h, alloc_cb, read_cb);
  if (rc < 0) {
    lm_request_abort(&w->rq);
    return pipe_error(L, rc, "read from a pipe");
  }
  ps->reading = 1;
  ps->waiter = w;
  return lm_request_wait(L, &w->rq, read_k);
}

static int read_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  pwait *w = LM_CONTAINER_OF((lm_request *)kctx, pwait, rq);
  lm_pipe *p = lua_touserdata(L, 1);
  if (w->ps->waiter == w)
    w->ps->waiter = NULL;
  lm_request_check(L, &w->rq);
  lm_reading r = w->reading;
  int base = lua_gettop(L);
  while (base > 0 && lua_touserdata(L, base) != (void *)w)
    base--;
  lua_settop(L, base - 1);
  if (p->ps == NULL || p->ps->closing)
    return lm_error(L, "closed", "the pipe closed while it was read");
  return read_more(L, p, &r);
}

static int pipe_read(lua_State *L) {
  lm_pipe *p = check_pipe(L);
  usable(L, p);
  if (!p->readable)
    return lm_error(L, "usage", "this pipe is for writing");
  lm_reading r;
  lm_reading_start(L, &r, 2, lua_gettop(L));
  return read_more(L, p, &r);
}

static int lines_iter(lua_State *L) {
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_pushvalue(L, lua_upvalueindex(3));
  return pipe_read(L);
}

static int pipe_lines(lua_State *L) {
  check_pipe(L);
  lua_settop(L, 2);
  if (lua_isnil(L, 2)) {
    lua_pushliteral(L, "l");
    lua_replace(L, 2);
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_pushcclosure(L, lines_iter, 3);
  return 1;
}

/* ---- write --------------------------------------------------------------- */

static int write_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  pwait *w = LM_CONTAINER_OF((lm_request *)kctx, pwait, rq);
  pstate *ps = w->ps;
  if (ps->waiter == w)
    ps->waiter = NULL;
  lm_request_check(L, &w->rq);
  if (ps->write_status < 0)
    return pipe_error(L, ps->write_status, "write to a pipe");
  lua_settop(L, 1);
  return 1;
}

/* p:write(...): strings and numbers; returns p once the child has them
 * all. */
static int pipe_write(lua_State *L) {
  lm_pipe *p = check_pipe(L);
  pstate *ps = usable(L, p);
  if (p->readable)
    return lm_error(L, "usage", "this pipe is for reading");
  int top = lua_gettop(L);
  size_t total = 0;
  for (int i = 2; i <= top; i++) {
    int t = lua_type(L, i);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
      return lm_typeerror(L, i, "string or number");
    size_t len;
    lua_tolstring(L, i, &len);
    total += len;
  }
  if (total == 0) {
    lua_settop(L, 1);
    return 1;
  }
  pwait *w = new_wait(L, p);
  char *buf = malloc(total);
  if (buf == NULL) {
    lm_request_abort(&w->rq);
    return lm_error(L, "memory", "cannot copy %d bytes for a pipe", (int)total);
  }
  size_t at = 0;
  for (int i = 2; i <= top; i++) {
    size_t len;
    const char *s = lua_tolstring(L, i, &len);
    memcpy(buf + at, s, len);
    at += len;
  }
  ps->wbuf = buf;
  uv_buf_t b = uv_buf_init(buf, (unsigned)total);
  ps->wreq.data = ps;
  int rc = uv_write(&ps->wreq, (uv_stream_t *)&ps->h, &b, 1, write_cb);
  if (rc < 0) {
    free(buf);
    ps->wbuf = NULL;
    lm_request_abort(&w->rq);
    return pipe_error(L, rc, "write to a pipe");
  }
  ps->writing = 1;
  ps->waiter = w;
  return lm_request_wait(L, &w->rq, write_k);
}

/* ---- close ------------------------------------------------------------- */

/* p:close(): for p.stdin, the child sees the end of its input. */
static int pipe_close(lua_State *L) {
  lm_pipe *p = check_pipe(L);
  if (p->ps && !p->ps->closing)
    close_pipe(p->ps);
  return 0;
}

static int pipe_gc(lua_State *L) {
  lm_pipe *p = lua_touserdata(L, 1);
  pstate *ps = p->ps;
  if (ps == NULL)
    return 0;
  p->ps = NULL;
  ps->waiter = NULL;
  if (ps->closed) {
    free_pipe(ps);
    return 0;
  }
  ps->orphan = 1;
  close_pipe(ps);
  return 0;
}

static int pipe_tostring(lua_State *L) {
  lm_pipe *p = lua_touserdata(L, 1);
  lua_pushfstring(L, "loom.pipe (%s%s)", p->readable ? "read" : "write",
                  p->ps == NULL || p->ps->closing ? ", closed" : "");
  return 1;
}

lm_pipe *lm_pipe_push(lua_State *L, lm_ctx *ctx, uv_pipe_t *handle, int readable) {
  lm_pipe *p = lua_newuserdatauv(L, sizeof *p, 0);
  p->ctx = ctx;
  p->ps = LM_CONTAINER_OF(handle, pstate, h);
  p->readable = readable;
  luaL_setmetatable(L, LM_PIPE_MT);
  return p;
}

/* A pipe not yet handed to uv_spawn: NULL when out of memory. */
uv_pipe_t *lm_pipe_new(lm_ctx *ctx) {
  pstate *ps = calloc(1, sizeof *ps);
  if (ps == NULL)
    return NULL;
  ps->rb.first = 65536;
  uv_pipe_init(&ctx->loop.uv, &ps->h, 0);
  ps->h.data = ps;
  return &ps->h;
}

/* Closes a pipe that never got a userdata (uv_spawn failed). */
void lm_pipe_discard(uv_pipe_t *handle) {
  pstate *ps = LM_CONTAINER_OF(handle, pstate, h);
  ps->orphan = 1;
  close_pipe(ps);
}

static const luaL_Reg pipe_methods[] = {
  {"read", pipe_read},
  {"lines", pipe_lines},
  {"write", pipe_write},
  {"close", pipe_close},
  {NULL, NULL}
};

static const luaL_Reg pipe_meta[] = {
  {"__gc", pipe_gc},
  {"__close", pipe_close},
  {"__tostring", pipe_tostring},
  {NULL, NULL}
};

static const luaL_Reg pwait_meta[] = {{"__gc", pwait_gc}, {NULL, NULL}};

void lm_open_pipe(lua_State *L) {
  lm_new_class(L, LM_PIPE_MT, pipe_methods, pipe_meta);
  lm_new_class(L, LM_PIPE_WAIT_MT, NULL, pwait_meta);
}
