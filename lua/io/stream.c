/* A stream in Lua, shaped like Lua's files: s:read("l" | "L" | "a" | n,
 * ...), s:lines(fmt), s:write(...), s:shutdown(), s:close(), <close>.
 *
 * A read takes bytes from the buffer only once every format of the call
 * can be answered: a call that waits, times out or is cancelled leaves
 * every byte where it was, for the next read (nothing lost, nothing
 * sticky). A line longer than the high-water mark is an error (kind `io`,
 * code EMSGSIZE), never split; its bytes stay buffered. At EOF the bytes
 * buffered come first, as from a file. A write returns once the bytes were
 * handed to the kernel or queued, and waits while more than the high-water
 * mark is queued (backpressure); a write bigger than the mark goes out in
 * pieces of the mark, so what a stream holds stays bounded.
 *
 * One reader and one writer at a time: a second task reading (or writing)
 * while one waits gets a `usage` error, as two readers of one socket would
 * each get some of the bytes.
 *
 * Every wait is an lm_request (lua/request.c). A read or a write waits on
 * nothing that must be stopped: its stop only stops the waiting. A
 * coroutine outside any task that waits is anchored in the stream's user
 * values (a task is pinned anyway), so the two go to the collector
 * together; the collector only closes the handle (core/stream.c frees it
 * after libuv's close callback). While no reader waits, the stream is no
 * work for the loop (loom_stream_keep_alive). */
#include <string.h>
#include "lm_io.h"
#include "lm_tls.h"

#define ANCHOR_READER 1
#define ANCHOR_WRITER 2
#define ANCHOR_CLOSER 3
#define STREAM_SLOTS 3

typedef struct lstream {
  loom_stream_t *s; /* NULL once the handle is closed (or closing, by the collector) */
  lm_ctx *ctx;
  lm_request rd, wr, cl;
  double rtimeout, wtimeout; /* s:settimeouts(), -1: none */
  double call_rtimeout, call_wtimeout; /* the call's under way... */
  uint64_t rstart_ns, wstart_ns;       /* ...and when it began */
  int closed;       /* s:close() was called */
  int rd_waiting, wr_waiting, cl_waiting;
  int reading, writing; /* a read, a write or a shutdown call is under way */
  int shutting;     /* the writer waits for the shutdown */
  int flushing;     /* the closer waits for queued writes */
  int nfmt;         /* formats of the read under way: stack slots 2.. */
  int wr_last;      /* the write's last argument */
  int wr_arg;       /* how far the write got: the argument... */
  size_t wr_off;    /* ...and the byte in it */
} lstream;

static lstream *check_stream(lua_State *L) {
  return lm_check_self(L, LM_STREAM_MT, "loom.stream");
}

static lstream *check_open(lua_State *L) {
  lstream *ls = check_stream(L);
  if (ls->closed || ls->s == NULL)
    lm_error(L, "closed", "the stream is closed");
  return ls;
}

/* Only a coroutine outside any task needs it: a task is pinned until it
 * ends. */
static void anchor(lua_State *L, lstream *ls, int slot) {
  if (ls->ctx->current)
    return;
  lua_pushthread(L);
  lua_setiuservalue(L, 1, slot);
}

static void unanchor(lua_State *L, lstream *ls, int slot) {
  if (ls->ctx->current)
    return;
  lua_pushnil(L);
  lua_setiuservalue(L, 1, slot);
}

static int timed_out(lua_State *L, double seconds, const char *what) {
  lm_push_error(L, "timeout", "timed out after %f s waiting to %s", seconds, what);
  return lua_error(L);
}

/* A timeout for one call: the table at idx ({timeout = s}), or the
 * stream's own. */
static double call_timeout(lua_State *L, int idx, double fallback) {
  if (lua_getfield(L, idx, "timeout") == LUA_TNIL) {
    lua_pop(L, 1);
    return fallback;
  }
  double s = lm_checknumber(L, -1);
  if (!(s >= 0))
    lm_argerror(L, idx, "timeout must be a non-negative number");
  lua_pop(L, 1);
  return s;
}

/* Seconds a call may still wait, -1 for no bound. A timeout bounds the
 * whole call, not each wait in it: a peer sending one byte at a time,
 * each in time, would otherwise hold a read (or a write) for ever. */
static double time_left(double timeout, uint64_t start_ns) {
  if (timeout < 0)
    return -1;
  double left = timeout - (double)(uv_hrtime() - start_ns) / 1e9;
  return left > 0 ? left : 0;
}

/* ---- callbacks from the core ---------------------------------------------- */

static void on_read(loom_stream_t *s) {
  lstream *ls = s->data;
  if (ls->rd_waiting) {
    ls->rd_waiting = 0;
    lm_request_complete(&ls->rd);
  }
}

static void on_write(loom_stream_t *s) {
  lstream *ls = s->data;
  if (ls->wr_waiting && !ls->shutting && (s->queued <= s->high_water || s->write_error)) {
    ls->wr_waiting = 0;
    lm_request_complete(&ls->wr);
  }
  if (ls->cl_waiting && ls->flushing && (s->queued == 0 || s->write_error)) {
    ls->cl_waiting = 0;
    lm_request_complete(&ls->cl);
  }
}

static void on_shutdown(loom_stream_t *s) {
  lstream *ls = s->data;
  if (ls->wr_waiting && ls->shutting) {
    ls->wr_waiting = 0;
    lm_request_complete(&ls->wr);
  }
}

static void on_closed(loom_stream_t *s) {
  lstream *ls = s->data;
  ls->s = NULL;
  if (ls->cl_waiting) {
    ls->cl_waiting = 0;
    lm_request_complete(&ls->cl);
  }
}

void lm_stream_push(lua_State *L, lm_ctx *ctx, loom_stream_t *s) {
  lstream *ls = lua_newuserdatauv(L, sizeof *ls, STREAM_SLOTS);
  memset(ls, 0, sizeof *ls);
  ls->ctx = ctx;
  ls->s = s;
  ls->rd.ctx = ls->wr.ctx = ls->cl.ctx = ctx;
  ls->rtimeout = ls->wtimeout = -1;
  s->data = ls;
  s->on_read = on_read;
  s->on_write = on_write;
  loom_stream_keep_alive(s, 0);
  luaL_setmetatable(L, LM_STREAM_MT);
}

loom_stream_t *lm_stream_check(lua_State *L, int idx) {
  lstream *ls = lm_checkudata(L, idx, LM_STREAM_MT, "loom.stream");
  if (ls->closed || ls->s == NULL)
    lm_error(L, "closed", "the stream is closed");
  return ls->s;
}

/* A wait inside a task needs a place to yield; checked before a call
 * marks itself the stream's reader or writer. */
static void check_can_wait(lua_State *L, lstream *ls) {
  if (ls->ctx->current && !lua_isyieldable(L))
    lm_error(L, "usage", "cannot wait here: a C function without continuation is on the stack");
}

/* ---- reading ------------------------------------------------------------- */

static int read_k(lua_State *L, int status, lua_KContext kctx);

static int rd_pending(lm_request *r) {
  return LM_CONTAINER_OF(r, lstream, rd)->rd_waiting;
}

static void rd_stop(lm_request *r) {
  LM_CONTAINER_OF(r, lstream, rd)->rd_waiting = 0;
}

/* The reader stopped waiting: the stream is no work for the loop. */
static void read_ended(lstream *ls) {
  ls->reading = 0;
  if (ls->s && !ls->closed)
    loom_stream_keep_alive(ls->s, 0);
}

static void rd_drained(lua_State *L, lm_request *r) {
  lstream *ls = LM_CONTAINER_OF(r, lstream, rd);
  read_ended(ls);
  unanchor(L, ls, ANCHOR_READER);
  if (r->interrupted == LOOM_ETIMEDOUT)
    timed_out(L, ls->call_rtimeout, "read");
}

static const lm_request_ops read_ops = {rd_pending, rd_stop, rd_drained, NULL, 0};

/* Answers every format from the buffer, taking the bytes, and returns how
 * many values it pushed; or pushes nothing and returns -1 with *want set. */
static int try_formats(lua_State *L, lstream *ls, size_t *want) {
  loom_stream_t *s = ls->s;
  size_t used;
  int n = lm_formats_answer(L, 2, ls->nfmt, loom_stream_peek(s), loom_stream_buffered(s), s->eof,
                            s->high_water, &used, want);
  if (n >= 0)
    loom_stream_consume(s, used);
  return n;
}

static int read_step(lua_State *L, lstream *ls) {
  if (ls->closed || ls->s == NULL)
    return lm_error(L, "closed", "the stream is closed");
  size_t want = 0;
  int n = try_formats(L, ls, &want);
  if (n >= 0)
    return n;
  loom_stream_t *s = ls->s;
  if (s->read_error)
    return lm_stream_error(L, s, s->read_error, "read");
  double left = time_left(ls->call_rtimeout, ls->rstart_ns);
  if (left == 0)
    return timed_out(L, ls->call_rtimeout, "read");
  check_can_wait(L, ls);
  lm_request_prepare(L, &ls->rd, &read_ops, 0);
  int rc = loom_stream_want(s, want);
  if (rc) {
    lm_request_abort(&ls->rd);
    return lm_io_error(L, rc, "read");
  }
  lm_wait_arm(ls->rd.wait, left);
  loom_stream_keep_alive(s, 1);
  ls->rd_waiting = 1;
  ls->reading = 1;
  anchor(L, ls, ANCHOR_READER);
  return lm_request_wait(L, &ls->rd, read_k);
}

static int read_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lstream *ls = LM_CONTAINER_OF((lm_request *)kctx, lstream, rd);
  read_ended(ls);
  unanchor(L, ls, ANCHOR_READER);
  lm_request_check(L, &ls->rd);
  /* Outside a task each wait left its userdata on the stack: a read that
   * waits many times must not pile them up. */
  lua_settop(L, 1 + ls->nfmt);
  return read_step(L, ls);
}

/* Stack from 2 on: formats, then an optional options table. */
static int start_read(lua_State *L, lstream *ls) {
  int top = lua_gettop(L);
  double timeout = ls->rtimeout;
  if (top >= 2 && lua_type(L, top) == LUA_TTABLE) {
    timeout = call_timeout(L, top, ls->rtimeout);
    lua_settop(L, --top);
  }
  if (top == 1) {
    lua_pushliteral(L, "l");
    top = 2;
  }
  lm_formats_check(L, 2, top);
  /* Refused before it touches the read under way: its timeout is its own. */
  if (ls->reading)
    return lm_error(L, "usage", "another task is reading this stream");
  ls->call_rtimeout = timeout;
  /* The clock only for a call it bounds: an echo reads a few hundred
   * thousand times a second. */
  ls->rstart_ns = timeout >= 0 ? uv_hrtime() : 0;
  ls->nfmt = top - 1;
  return read_step(L, ls);
}

/* s:read(fmt, ... [, {timeout = s}]) */
static int stream_read(lua_State *L) {
  return start_read(L, check_open(L));
}

/* The iterator of s:lines(fmt, ...): the stream and the formats are its
 * upvalues. */
static int lines_next(lua_State *L) {
  lua_settop(L, 0);
  int n = (int)lua_tointeger(L, lua_upvalueindex(1));
  for (int i = 0; i <= n; i++)
    lua_pushvalue(L, lua_upvalueindex(2 + i));
  lstream *ls = lua_touserdata(L, 1);
  if (ls->closed || ls->s == NULL)
    return lm_error(L, "closed", "the stream is closed");
  return start_read(L, ls);
}

/* As Lua's io.lines: the formats are the iterator's upvalues, of which a C
 * closure has at most 255. */
#define MAXARGLINE 250

/* s:lines(fmt, ...): for line in s:lines() do ... end */
static int stream_lines(lua_State *L) {
  check_stream(L);
  int n = lua_gettop(L) - 1;
  if (n > MAXARGLINE)
    return lm_argerror(L, MAXARGLINE + 2, "too many formats");
  for (int i = 2; i <= n + 1; i++)
    if (lua_type(L, i) != LUA_TTABLE)
      lm_formats_check(L, i, i);
  luaL_checkstack(L, 2, "too many formats");
  lua_pushinteger(L, n);
  lua_insert(L, 1);
  lua_pushcclosure(L, lines_next, n + 2);
  return 1;
}

/* ---- writing ------------------------------------------------------------- */

static int write_k(lua_State *L, int status, lua_KContext kctx);

static int wr_pending(lm_request *r) {
  return LM_CONTAINER_OF(r, lstream, wr)->wr_waiting;
}

static void wr_stop(lm_request *r) {
  LM_CONTAINER_OF(r, lstream, wr)->wr_waiting = 0;
}

static void wr_drained(lua_State *L, lm_request *r) {
  lstream *ls = LM_CONTAINER_OF(r, lstream, wr);
  ls->writing = 0;
  ls->shutting = 0;
  unanchor(L, ls, ANCHOR_WRITER);
  if (r->interrupted == LOOM_ETIMEDOUT)
    timed_out(L, ls->call_wtimeout, "write");
}

static const lm_request_ops write_ops = {wr_pending, wr_stop, wr_drained, NULL, 0};

static int write_wait(lua_State *L, lstream *ls, lua_KFunction k) {
  double left = time_left(ls->call_wtimeout, ls->wstart_ns);
  if (left == 0) {
    ls->writing = 0;
    return timed_out(L, ls->call_wtimeout, "write");
  }
  ls->writing = 0; /* while prepare may raise (a cancel, an expired timeout) */
  lm_request_prepare(L, &ls->wr, &write_ops, 0);
  ls->writing = 1;
  lm_wait_arm(ls->wr.wait, left);
  ls->wr_waiting = 1;
  anchor(L, ls, ANCHOR_WRITER);
  return lm_request_wait(L, &ls->wr, k);
}

static int write_fail(lua_State *L, lstream *ls, int err) {
  ls->writing = 0;
  if (err == 0 || ls->closed || ls->s == NULL)
    return lm_error(L, "closed", "the stream is closed");
  if (ls->s->shut && err == UV_EPIPE)
    return lm_error(L, "closed", "the stream's write side is shut down");
  return lm_stream_error(L, ls->s, err, "write");
}

static int write_step(lua_State *L, lstream *ls) {
  for (;;) {
    loom_stream_t *s = ls->s;
    if (ls->closed || s == NULL)
      return write_fail(L, ls, 0);
    if (s->write_error)
      return write_fail(L, ls, s->write_error);
    if (loom_stream_queued(s) > s->high_water)
      return write_wait(L, ls, write_k);
    if (ls->wr_arg > ls->wr_last)
      break;
    size_t len;
    const char *p = lua_tolstring(L, ls->wr_arg, &len);
    size_t chunk = len - ls->wr_off;
    if (s->high_water > 0 && chunk > s->high_water)
      chunk = s->high_water;
    int rc = loom_stream_write(s, p + ls->wr_off, chunk);
    if (rc)
      return write_fail(L, ls, rc);
    ls->wr_off += chunk;
    if (ls->wr_off >= len) {
      ls->wr_arg++;
      ls->wr_off = 0;
    }
  }
  ls->writing = 0;
  lua_pushvalue(L, 1);
  return 1;
}

static int write_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lstream *ls = LM_CONTAINER_OF((lm_request *)kctx, lstream, wr);
  unanchor(L, ls, ANCHOR_WRITER);
  ls->writing = 0; /* while the check may raise */
  lm_request_check(L, &ls->wr);
  ls->writing = 1;
  lua_settop(L, ls->wr_last); /* as in read_k */
  return write_step(L, ls);
}

/* Refused before it touches the write under way: its timeout is its own. */
static void start_writing(lua_State *L, lstream *ls, double timeout) {
  check_can_wait(L, ls);
  if (ls->writing)
    lm_error(L, "usage", "another task is writing to this stream");
  ls->writing = 1;
  ls->call_wtimeout = timeout;
  ls->wstart_ns = timeout >= 0 ? uv_hrtime() : 0;
}

/* s:write(data, ... [, {timeout = s}]) -> s */
static int stream_write(lua_State *L) {
  lstream *ls = check_open(L);
  int top = lua_gettop(L);
  double timeout = ls->wtimeout;
  if (top >= 2 && lua_type(L, top) == LUA_TTABLE) {
    timeout = call_timeout(L, top, ls->wtimeout);
    lua_settop(L, --top);
  }
  for (int i = 2; i <= top; i++) {
    int t = lua_type(L, i);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
      lm_typeerror(L, i, "string");
    (void)lua_tolstring(L, i, NULL); /* numbers as strings, in place, as file:write does */
  }
  start_writing(L, ls, timeout);
  ls->wr_last = top;
  ls->wr_arg = 2;
  ls->wr_off = 0;
  return write_step(L, ls);
}

static int shutdown_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lstream *ls = LM_CONTAINER_OF((lm_request *)kctx, lstream, wr);
  ls->writing = 0;
  ls->shutting = 0;
  unanchor(L, ls, ANCHOR_WRITER);
  lm_request_check(L, &ls->wr);
  if (ls->s == NULL || ls->closed)
    return lm_error(L, "closed", "the stream is closed");
  int st = ls->s->shutdown_status;
  if (st < 0 && st != UV_ECANCELED)
    return lm_io_error(L, st, "shutdown");
  return 0;
}

/* s:shutdown([{timeout = s}]): the peer reads EOF once every byte written
 * before has gone; reading goes on. */
static int stream_shutdown(lua_State *L) {
  lstream *ls = check_open(L);
  double timeout = lua_type(L, 2) == LUA_TTABLE ? call_timeout(L, 2, ls->wtimeout) : ls->wtimeout;
  lua_settop(L, 1);
  if (ls->s->shut)
    return 0;
  start_writing(L, ls, timeout);
  int rc = loom_stream_shutdown(ls->s, on_shutdown);
  if (rc)
    return write_fail(L, ls, rc);
  ls->shutting = 1;
  return write_wait(L, ls, shutdown_k);
}

/* ---- closing ------------------------------------------------------------- */

static int cl_pending(lm_request *r) {
  return LM_CONTAINER_OF(r, lstream, cl)->cl_waiting;
}

/* Flushing stops at once; a close callback is always waited for. */
static void cl_stop(lm_request *r) {
  lstream *ls = LM_CONTAINER_OF(r, lstream, cl);
  if (ls->flushing)
    ls->cl_waiting = 0;
}

static void close_handle(lstream *ls, loom_stream_cb cb) {
  loom_stream_t *s = ls->s;
  if (cb == NULL)
    ls->s = NULL;
  loom_stream_close(s, cb);
}

static void cl_drained(lua_State *L, lm_request *r) {
  lstream *ls = LM_CONTAINER_OF(r, lstream, cl);
  unanchor(L, ls, ANCHOR_CLOSER);
  if (ls->flushing) {
    ls->flushing = 0;
    if (ls->s)
      close_handle(ls, NULL);
  }
  if (r->interrupted == LOOM_ETIMEDOUT)
    timed_out(L, ls->call_wtimeout, "flush before closing");
}

static const lm_request_ops close_ops = {cl_pending, cl_stop, cl_drained, NULL, 0};

static int closed_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  unanchor(L, LM_CONTAINER_OF((lm_request *)kctx, lstream, cl), ANCHOR_CLOSER);
  return 0;
}

static int close_now(lua_State *L, lstream *ls) {
  if (ls->s == NULL)
    return 0;
  if (ls->ctx->current && !lua_isyieldable(L)) {
    close_handle(ls, NULL); /* closes on its own; nothing can wait here */
    return 0;
  }
  close_handle(ls, on_closed);
  lm_request_prepare(L, &ls->cl, &close_ops, 1);
  ls->cl_waiting = 1;
  anchor(L, ls, ANCHOR_CLOSER);
  return lm_request_wait(L, &ls->cl, closed_k);
}

static int flushed_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lstream *ls = LM_CONTAINER_OF((lm_request *)kctx, lstream, cl);
  ls->flushing = 0;
  unanchor(L, ls, ANCHOR_CLOSER);
  lm_request_check(L, &ls->cl);
  lua_settop(L, 1);
  return close_now(L, ls);
}

static void wake(lm_request *r, int *waiting) {
  if (*waiting) {
    *waiting = 0;
    lm_request_complete(r);
  }
}

/* s:close([{timeout = s}]): bytes written and queued go out first (within
 * the write timeout), then the handle closes; waits for both. A waiting
 * reader or writer gets a `closed` error. Closing twice is harmless. */
static int stream_close(lua_State *L) {
  lstream *ls = check_stream(L);
  if (ls->closed)
    return 0;
  ls->call_wtimeout = lua_type(L, 2) == LUA_TTABLE ? call_timeout(L, 2, ls->wtimeout) : ls->wtimeout;
  lua_settop(L, 1);
  ls->closed = 1;
  wake(&ls->rd, &ls->rd_waiting);
  wake(&ls->wr, &ls->wr_waiting);
  loom_stream_t *s = ls->s;
  if (s == NULL)
    return 0;
  /* The transport's last bytes (TLS's close_notify) go with the flush. */
  if (s->transport && s->transport->shutdown && !s->shut && !s->write_error)
    (void)s->transport->shutdown(s);
  if (s->queued == 0 || s->write_error || ls->call_wtimeout == 0 || lm_wait_would_raise(ls->ctx) ||
      (ls->ctx->current && !lua_isyieldable(L)))
    return close_now(L, ls);
  lm_request_prepare(L, &ls->cl, &close_ops, 0);
  lm_wait_arm(ls->cl.wait, ls->call_wtimeout);
  ls->flushing = 1;
  ls->cl_waiting = 1;
  anchor(L, ls, ANCHOR_CLOSER);
  return lm_request_wait(L, &ls->cl, flushed_k);
}

/* <close>: its second argument is the error leaving the block, if any. */
static int stream_close_tbc(lua_State *L) {
  lua_settop(L, 1);
  return stream_close(L);
}

/* Never waits, never raises: queued writes are dropped with the handle. */
static int stream_gc(lua_State *L) {
  lstream *ls = lua_touserdata(L, 1);
  ls->closed = 1;
  if (ls->s && !ls->ctx->closed)
    close_handle(ls, NULL);
  return 0;
}

/* ---- the rest ------------------------------------------------------------ */

/* s:settimeouts(read, write): seconds each read and each write (and the
 * flush of close) may wait; nil: no bound but loom.timeout's. */
static int stream_settimeouts(lua_State *L) {
  lstream *ls = check_stream(L);
  ls->rtimeout = lm_optseconds(L, 2);
  ls->wtimeout = lm_optseconds(L, 3);
  lua_settop(L, 1);
  return 1;
}

/* s:sethighwater(bytes): how much is read ahead and queued for writing at
 * most, and the longest line read("l") takes. */
static int stream_sethighwater(lua_State *L) {
  lstream *ls = check_open(L);
  lua_Integer n = lm_checkinteger(L, 2);
  if (n < 1 || n > (lua_Integer)1 << 40)
    return lm_argerror(L, 2, "the high-water mark must be a positive number of bytes");
  loom_stream_set_high_water(ls->s, (size_t)n);
  lua_settop(L, 1);
  return 1;
}

/* The longest idle time before keepalive probes Linux takes (TCP_KEEPIDLE);
 * lua/loom/server.lua checks connect's option against it too. */
#define KEEPALIVE_MAX 32767

/* s:setoption("nodelay", bool) | s:setoption("keepalive", bool | seconds)
 * A value of another type is an error, not its truth: "no" is no "off". */
static int stream_setoption(lua_State *L) {
  lstream *ls = check_open(L);
  if (lua_type(L, 2) != LUA_TSTRING)
    return lm_typeerror(L, 2, "string");
  const char *name = lua_tostring(L, 2);
  if (ls->s->kind != LOOM_STREAM_TCP)
    return lm_argerror(L, 2, "options are for TCP streams");
  int rc;
  if (strcmp(name, "nodelay") == 0) {
    if (lua_type(L, 3) != LUA_TBOOLEAN)
      return lm_argerror(L, 3, "nodelay takes a boolean");
    rc = uv_tcp_nodelay(&ls->s->h.tcp, lua_toboolean(L, 3));
  } else if (strcmp(name, "keepalive") == 0) {
    int t = lua_type(L, 3);
    double secs = t == LUA_TNUMBER ? lua_tonumber(L, 3) : 60;
    if ((t != LUA_TBOOLEAN && t != LUA_TNUMBER) || !(secs >= 0 && secs <= KEEPALIVE_MAX))
      return lm_argerror(L, 3, "keepalive takes a boolean or seconds up to 32767");
    unsigned delay = (unsigned)secs;
    rc = uv_tcp_keepalive(&ls->s->h.tcp, lua_toboolean(L, 3), delay ? delay : 1);
  } else {
    return lm_argerror(L, 2, "unknown option (\"nodelay\" or \"keepalive\")");
  }
  if (rc)
    return lm_io_error(L, rc, name);
  lua_settop(L, 1);
  return 1;
}

static int push_name(lua_State *L, int peer) {
  lstream *ls = check_open(L);
  loom_stream_t *s = ls->s;
  int rc;
  if (s->kind == LOOM_STREAM_TCP) {
    struct sockaddr_storage ss;
    int len = sizeof ss;
    rc = peer ? uv_tcp_getpeername(&s->h.tcp, (struct sockaddr *)&ss, &len)
              : uv_tcp_getsockname(&s->h.tcp, (struct sockaddr *)&ss, &len);
    if (rc == 0)
      lm_io_push_sockaddr(L, (struct sockaddr *)&ss);
  } else {
    char path[1024];
    size_t len = sizeof path;
    rc = peer ? uv_pipe_getpeername(&s->h.pipe, path, &len)
              : uv_pipe_getsockname(&s->h.pipe, path, &len);
    if (rc == 0) {
      lua_createtable(L, 0, 2);
      lua_pushlstring(L, path, len);
      lua_setfield(L, -2, "path");
      lua_pushliteral(L, "unix");
      lua_setfield(L, -2, "family");
    }
  }
  if (rc)
    return lm_io_error(L, rc, peer ? "peername" : "sockname");
  return 1;
}

/* s:peername() / s:sockname(): {address=, port=, family=} ({path=,
 * family="unix"} for a Unix domain socket). */
static int stream_peername(lua_State *L) { return push_name(L, 1); }
static int stream_sockname(lua_State *L) { return push_name(L, 0); }

/* s:stats() -> {buffered=, queued=, high_water=}: bytes read ahead and
 * not taken, bytes written and not yet sent. */
static int stream_stats(lua_State *L) {
  lstream *ls = check_stream(L);
  lua_createtable(L, 0, 3);
  loom_stream_t *s = ls->closed ? NULL : ls->s;
  lua_pushinteger(L, s ? (lua_Integer)loom_stream_buffered(s) : 0);
  lua_setfield(L, -2, "buffered");
  lua_pushinteger(L, s ? (lua_Integer)loom_stream_queued(s) : 0);
  lua_setfield(L, -2, "queued");
  lua_pushinteger(L, s ? (lua_Integer)s->high_water : 0);
  lua_setfield(L, -2, "high_water");
  return 1;
}

static int stream_tostring(lua_State *L) {
  lstream *ls = check_stream(L);
  if (ls->closed || ls->s == NULL)
    lua_pushliteral(L, "loom.stream (closed)");
  else
    lua_pushfstring(L, "loom.stream (%p)", (void *)ls);
  return 1;
}

static const luaL_Reg stream_methods[] = {
  {"read", stream_read},
  {"lines", stream_lines},
  {"write", stream_write},
  {"shutdown", stream_shutdown},
  {"close", stream_close},
  {"settimeouts", stream_settimeouts},
  {"sethighwater", stream_sethighwater},
  {"setoption", stream_setoption},
  {"peername", stream_peername},
  {"sockname", stream_sockname},
  {"stats", stream_stats},
  {NULL, NULL}
};

static const luaL_Reg stream_metamethods[] = {
  {"__gc", stream_gc},
  {"__close", stream_close_tbc},
  {"__tostring", stream_tostring},
  {NULL, NULL}
};

void lm_open_stream(lua_State *L) {
  lm_new_class(L, LM_STREAM_MT, stream_methods, stream_metamethods);
}
