/* loom.fs.open's file: Lua io's methods (read, lines, write, seek, flush,
 * sync, close, <close>) with every call that may wait for the disk a
 * uv_fs request on the thread pool, so a file never blocks the loop.
 *
 * Reads fill a buffer (256 KiB to start) and answer the formats from it.
 * What the page cache holds is read in place (preadv2 with RWF_NOWAIT,
 * which never waits for the disk), up to 1 MiB between two turns of the
 * loop: a cached file costs no thread hop. What is not cached is read by
 * the thread pool, and a file read on from there reads ahead: the next
 * 256 KiB go into a second buffer while the caller works on the first,
 * so the disk and the caller overlap. Writes gather in a buffer of the
 * same size and go out when it is full, on flush, seek, sync and close. As in C's stdio, a read after writes needs a flush or a seek in
 * between; a write after reads drops what was read ahead.
 *
 * One call at a time: a second task calling a file whose request is out
 * gets a `busy` error. The file's state (fd, buffers, the uv_fs_t) is
 * malloc'd; a file collected with a request out leaves it to the
 * request's completion, which closes the fd. */
#define _GNU_SOURCE /* preadv2, RWF_NOWAIT */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/uio.h>
#include <stdlib.h>
#include <string.h>
#include "lm_fsproc.h"

#define LM_FILE_MT "loom.file"
#define WBUF_CAP 262144
/* Bytes read from the page cache in place (no thread, no wait) before a
 * refill goes through the thread pool anyway, so the loop gets a turn:
 * a fraction of a millisecond of copying. */
#define INLINE_BUDGET (1u << 20)
/* One uv_fs_read/write asks for at most this much (uv_buf_t holds an
 * unsigned int). */
#define IO_MAX (1u << 30)

typedef struct fstate {
  lm_fsop op; /* first: an op is its file's state */
  uv_file fd;
  int readable, writable, append;
  int excl;      /* opened with O_EXCL: the file is this open's own */
  int64_t rpos;  /* file offset of rb's end */
  lm_rbuf rb;
  lm_rbuf ahead;  /* the read-ahead's buffer: file offset rpos on */
  int prefetch;   /* a read-ahead is out (op.out) or done, unabsorbed */
  int streaming;  /* disk-bound refills fill their room: read ahead */
  int no_nowait;  /* RWF_NOWAIT reads fail here: always the pool */
  size_t inline_left; /* bytes read in place before the loop gets a turn */
  size_t asked;   /* the room the refill out asked to fill */
  char *wb;
  size_t wlen;
  int64_t wpos;  /* file offset of wb[0] */
  int closing;   /* close's own flush: shielded, as the close is */
  char *path;
} fstate;

typedef struct lm_file {
  lm_ctx *ctx;
  fstate *st;
  int closed;
} lm_file;

static void free_state(fstate *st) {
  uv_fs_req_cleanup(&st->op.req);
  lm_rbuf_free(&st->rb);
  lm_rbuf_free(&st->ahead);
  free(st->wb);
  free(st->path);
  free(st);
}

/* Written out as the file is dropped unclosed, as Lua's io does: this
 * once, the loop waits for the disk. */
static void flush_sync(fstate *st) {
  size_t done = 0;
  while (done < st->wlen) {
    uv_fs_t req;
    size_t n = st->wlen - done;
    uv_buf_t buf = uv_buf_init(st->wb + done, n > IO_MAX ? IO_MAX : (unsigned)n);
    int r = uv_fs_write(NULL, &req, st->fd, &buf, 1, st->append ? -1 : st->wpos + (int64_t)done, NULL);
    uv_fs_req_cleanup(&req);
    if (r <= 0)
      break;
    done += (size_t)r;
  }
  st->wlen = 0;
}

static void close_sync(fstate *st) {
  if (st->fd < 0)
    return;
  flush_sync(st);
  uv_fs_t req;
  uv_fs_close(NULL, &req, st->fd, NULL);
  uv_fs_req_cleanup(&req);
  st->fd = -1;
}

/* The file's release: its owner (the file userdata) is gone. An open
 * that succeeded for nobody (its caller was cancelled) is closed, and a
 * file it created ("wx") is removed: nobody will ever write it. */
static void release_state(lm_fsop *op) {
  fstate *st = (fstate *)op;
  int made = 0;
  if (op->req.fs_type == UV_FS_OPEN && op->req.result >= 0 && st->fd < 0) {
    st->fd = (uv_file)op->req.result;
    made = st->excl;
  }
  close_sync(st);
  if (made) {
    uv_fs_t req;
    uv_fs_unlink(NULL, &req, st->path, NULL);
    uv_fs_req_cleanup(&req);
  }
  free_state(st);
}

static lm_file *check_file(lua_State *L) {
  return lm_check_self(L, LM_FILE_MT, "loom.file");
}

/* A call is under way while someone waits on the op, or the op out is
 * not a read-ahead. */
static fstate *usable(lua_State *L, lm_file *f) {
  if (f->closed)
    lm_error(L, "closed", "the file is closed");
  if (f->st->op.waiter || (f->st->op.out && !f->st->prefetch))
    lm_error(L, "busy", "another task is using this file: one call at a time");
  return f->st;
}

static uv_loop_t *uvloop(lm_file *f) { return &f->ctx->loop.uv; }

/* The call's own values (arguments, results so far) sit below the waits
 * of the request that ended, which are done with: drops those. */
static void drop_wait(lua_State *L, const void *w) {
  int base = lua_gettop(L);
  while (base > 0 && lua_touserdata(L, base) != w)
    base--;
  lua_settop(L, base - 1);
}

/* ---- read-ahead ---------------------------------------------------------- */

/* Reads on from rpos into the second buffer, nobody waiting. */
static void start_prefetch(lm_file *f) {
  fstate *st = f->st;
  if (st->prefetch || st->op.out || st->rb.eof || !st->streaming || st->wlen)
    return;
  st->ahead.start = st->ahead.end = 0;
  size_t room = lm_rbuf_room(&st->ahead, st->rb.cap);
  if (room == 0)
    return;
  st->op.req.data = &st->op;
  uv_buf_t buf = uv_buf_init(st->ahead.p, room > IO_MAX ? IO_MAX : (unsigned)room);
  if (uv_fs_read(uvloop(f), &st->op.req, st->fd, &buf, 1, st->rpos, lm_fs_cb) < 0)
    return;
  st->op.out = 1;
  st->prefetch = 1;
}

/* A read-ahead that is done joins the buffer; one that failed is dropped
 * (the refill that replaces it meets its error). */
static void absorb_prefetch(fstate *st) {
  ssize_t n = st->op.req.result;
  lm_fs_reset(&st->op);
  st->prefetch = 0;
  if (n < 0)
    return;
  if (n == 0) {
    st->rb.eof = 1;
    return;
  }
  if (st->rb.start == st->rb.end) {
    lm_rbuf t = st->rb;
    st->rb = st->ahead;
    st->ahead = t;
    st->rb.start = 0;
    st->rb.end = (size_t)n;
    st->rb.eof = 0;
  } else {
    if (lm_rbuf_room(&st->rb, (size_t)n) < (size_t)n)
      return;
    memcpy(st->rb.p + st->rb.end, st->ahead.p, (size_t)n);
    st->rb.end += (size_t)n;
  }
  st->rpos += n;
}

static void drop_prefetch(fstate *st) {
  if (st->prefetch && !st->op.out) {
    lm_fs_reset(&st->op);
    st->prefetch = 0;
  }
  st->streaming = 0;
}

static int await_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lm_fswait *w = lm_fs_done(L, kctx);
  fstate *st = (fstate *)w->op;
  lua_CFunction again = w->again;
  drop_prefetch(st);
  drop_wait(L, w);
  return again(L);
}

/* A call that moves the file or reuses its op waits for a read-ahead
 * still out, drops it, and runs again (again(L), the stack as it was). */
static int await_prefetch(lua_State *L, lm_file *f, lua_CFunction again, int shielded) {
  fstate *st = f->st;
  lm_fswait *w = lm_fs_wait_new(L, f->ctx, &st->op, 0, shielded);
  w->again = again;
  st->op.waiter = w;
  return lm_request_wait(L, &w->rq, await_k);
}

#define SETTLE_PREFETCH(L, f, fn, shielded)                                    \
  do {                                                                         \
    if ((f)->st->prefetch && (f)->st->op.out)                                  \
      return await_prefetch((L), (f), (fn), (shielded));                       \
    drop_prefetch((f)->st);                                                    \
  } while (0)

/* ---- open ----------------------------------------------------------------- */

static int parse_mode(const char *m, int *flags, fstate *st) {
  int plus = strchr(m, '+') != NULL;
  int excl = strchr(m, 'x') != NULL;
  switch (m[0]) {
  case 'r': *flags = plus ? O_RDWR : O_RDONLY; break;
  case 'w': *flags = (plus ? O_RDWR : O_WRONLY) | O_CREAT | O_TRUNC; break;
  case 'a': *flags = (plus ? O_RDWR : O_WRONLY) | O_CREAT | O_APPEND; break;
  default: return -1;
  }
  for (const char *p = m + 1; *p; p++)
    if (*p != '+' && *p != 'b' && *p != 'x')
      return -1;
  if (excl) {
    if (m[0] != 'w')
      return -1;
    *flags |= O_EXCL;
    st->excl = 1;
  }
  /* Opening a FIFO without a peer, or a device waiting for a carrier,
   * blocks in open(2): on a pool thread no cancel or timeout can end it.
   * Non-blocking, a FIFO opens at once (for writing without a reader:
   * ENXIO); open_k clears the flag, which regular files ignore anyway. */
  *flags |= O_CLOEXEC | O_NONBLOCK;
  st->readable = m[0] == 'r' || plus;
  st->writable = m[0] != 'r' || plus;
  st->append = m[0] == 'a';
  return 0;
}

static int open_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lm_fswait *w = lm_fs_done(L, kctx);
  fstate *st = (fstate *)w->op;
  if (st->op.req.result < 0)
    return lm_fs_error(L, (int)st->op.req.result, "open", st->path);
  st->fd = (uv_file)st->op.req.result;
  int fl = fcntl(st->fd, F_GETFL);
  if (fl >= 0 && (fl & O_NONBLOCK))
    fcntl(st->fd, F_SETFL, fl & ~O_NONBLOCK);
  st->inline_left = INLINE_BUDGET;
  lm_fs_reset(&st->op);
  /* The state is the file's now. */
  w->op = NULL;
  lm_file *f = lua_newuserdatauv(L, sizeof *f, 0);
  f->ctx = w->rq.ctx;
  f->st = st;
  f->closed = 0;
  luaL_setmetatable(L, LM_FILE_MT);
  return 1;
}

/* core._fs_open(path, mode, perm) */
static int l_open(lua_State *L) {
  lm_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  const char *mode = luaL_optstring(L, 2, "r");
  lua_Integer perm = luaL_optinteger(L, 3, 0666);
  int flags;
  fstate *st = calloc(1, sizeof *st);
  if (st == NULL)
    return lm_error(L, "memory", "cannot allocate a file");
  st->fd = -1;
  st->op.release = release_state;
  st->path = malloc(len + 1);
  if (st->path)
    memcpy(st->path, path, len + 1);
  if (st->path == NULL || parse_mode(mode, &flags, st) != 0) {
    int oom = st->path == NULL;
    free_state(st);
    if (oom)
      return lm_error(L, "memory", "cannot allocate a file");
    return lm_argerror(L, 2, "invalid mode (expected r, w, a, r+, w+, a+, wx, with b allowed)");
  }
  lm_fswait *w = lm_fs_wait_new(L, ctx, &st->op, 1, 0);
  int rc = uv_fs_open(&ctx->loop.uv, &st->op.req, path, flags, (int)perm, lm_fs_cb);
  return lm_fs_started(L, w, rc, open_k, "open", path);
}

/* ---- read ------------------------------------------------------------------ */

static int read_k(lua_State *L, int status, lua_KContext kctx);
static int prefetch_k(lua_State *L, int status, lua_KContext kctx);

/* Fills the buffer through the thread pool: the caller waits. */
static int refill(lua_State *L, lm_file *f, int nfmt, size_t ask) {
  fstate *st = f->st;
  lm_fswait *w = lm_fs_wait_new(L, f->ctx, &st->op, 0, 0);
  w->nfmt = nfmt;
  st->asked = ask;
  uv_buf_t buf = uv_buf_init(st->rb.p + st->rb.end, (unsigned)ask);
  int rc = uv_fs_read(uvloop(f), &st->op.req, st->fd, &buf, 1, st->rpos, lm_fs_cb);
  return lm_fs_started(L, w, rc, read_k, "read", st->path);
}

/* Reads what the page cache holds right here, without waiting for the
 * disk (RWF_NOWAIT): -1 when the bytes are not cached (or the file
 * system cannot say), then the thread pool reads them. */
static ssize_t read_cached(fstate *st, size_t len) {
#ifdef __linux__
  if (st->no_nowait)
    return -1;
  struct iovec iov = {st->rb.p + st->rb.end, len};
  ssize_t n;
  do
    n = preadv2(st->fd, &iov, 1, st->rpos, RWF_NOWAIT);
  while (n < 0 && errno == EINTR);
  /* Not EAGAIN (not cached): unsupported here, or an error the thread
   * pool's read will meet and report. */
  if (n < 0 && errno != EAGAIN)
    st->no_nowait = 1;
  return n;
#else
  (void)st; (void)len;
  return -1;
#endif
}

/* Answers the nfmt formats (from argument 2 on) from the buffer, refilling
 * it as often as needed: from a read-ahead, from the page cache in place,
 * or through the pool. */
static int read_more(lua_State *L, lm_file *f, int nfmt) {
  fstate *st = f->st;
  lm_rbuf *b = &st->rb;
  size_t used, want;
  int n;
  while ((n = lm_formats_answer(L, 2, nfmt, b->p + b->start, b->end - b->start, b->eof, SIZE_MAX,
                                &used, &want)) < 0) {
    if (st->prefetch) {
      if (st->op.out) {
        lm_fswait *w = lm_fs_wait_new(L, f->ctx, &st->op, 0, 0);
        w->nfmt = nfmt;
        st->op.waiter = w;
        return lm_request_wait(L, &w->rq, prefetch_k);
      }
      absorb_prefetch(st);
      continue;
    }
    size_t have = b->end - b->start;
    size_t need = want == SIZE_MAX || want <= have ? 1 : want - have;
    /* A count is an upper bound, not a size: the buffer grows as bytes
     * come (at most doubling), so read(math.maxinteger) reads the rest. */
    size_t grow = b->cap > WBUF_CAP ? b->cap : WBUF_CAP;
    size_t room = lm_rbuf_room(b, need < grow ? need : grow);
    if (room == 0)
      return lm_error(L, "memory", "cannot grow the read buffer of '%s'", st->path);
    size_t ask = room > IO_MAX ? IO_MAX : room;
    ssize_t got = st->inline_left > 0 ? read_cached(st, ask < st->inline_left ? ask : st->inline_left) : -1;
    if (got < 0) {
      /* Not cached: the disk is slow, read ahead from now on. Out of
       * budget: the refill through the pool lets the loop run. */
      st->streaming = st->inline_left > 0 && !st->no_nowait;
      return refill(L, f, nfmt, ask);
    }
    if (got == 0)
      b->eof = 1;
    b->end += (size_t)got;
    st->rpos += got;
    st->inline_left -= (size_t)got < st->inline_left ? (size_t)got : st->inline_left;
  }
  b->start += used;
  start_prefetch(f);
  return n;
}

/* In a file call's continuation: the wait that ended (*wp) and its op's
 * result, raised when the op failed. */
static ssize_t op_result(lua_State *L, lua_KContext kctx, const char *what, lm_fswait **wp) {
  lm_fswait *w = lm_fs_done(L, kctx);
  fstate *st = (fstate *)w->op;
  ssize_t n = st->op.req.result;
  lm_fs_reset(&st->op);
  if (n < 0)
    lm_fs_error(L, (int)n, what, st->path);
  *wp = w;
  return n;
}

static int read_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lm_fswait *w;
  ssize_t n = op_result(L, kctx, "read", &w);
  lm_file *f = lua_touserdata(L, 1);
  fstate *st = f->st;
  if (n == 0)
    st->rb.eof = 1;
  /* Read ahead while a disk-bound refill fills what it asked for. */
  st->streaming = st->streaming && (size_t)n == st->asked;
  st->inline_left = INLINE_BUDGET;
  st->rb.end += (size_t)n;
  st->rpos += n;
  int nfmt = w->nfmt;
  drop_wait(L, w);
  return read_more(L, f, nfmt);
}

static int prefetch_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lm_fswait *w = lm_fs_done(L, kctx);
  lm_file *f = lua_touserdata(L, 1);
  absorb_prefetch(f->st);
  f->st->inline_left = INLINE_BUDGET;
  int nfmt = w->nfmt;
  drop_wait(L, w);
  return read_more(L, f, nfmt);
}

/* f:read(...): Lua io's formats; nil at the end of the file. */
static int file_read(lua_State *L) {
  lm_file *f = check_file(L);
  fstate *st = usable(L, f);
  if (!st->readable)
    return lm_error(L, "usage", "'%s' was not opened for reading", st->path);
  if (st->wlen)
    return lm_error(L, "usage", "a read after writes needs f:flush() or f:seek() first ('%s')", st->path);
  if (lua_gettop(L) == 1)
    lua_pushliteral(L, "l");
  lm_formats_check(L, 2, lua_gettop(L));
  st->rb.eof = 0;
  return read_more(L, f, lua_gettop(L) - 1);
}

/* ---- write ----------------------------------------------------------------- */

static int write_k(lua_State *L, int status, lua_KContext kctx);

/* Writes wb out, then copies the arguments from argi on into it, and so
 * on; ends with the file returned (or flushed, when flush_all). */
static int write_more(lua_State *L, lm_file *f, int argi, size_t off, int flush_all) {
  fstate *st = f->st;
  int top = flush_all ? 1 : lua_gettop(L);
  while (argi <= top) {
    size_t len;
    const char *s = lua_tolstring(L, argi, &len);
    if (st->wlen == WBUF_CAP)
      break;
    size_t n = len - off;
    if (n > WBUF_CAP - st->wlen)
      n = WBUF_CAP - st->wlen;
    memcpy(st->wb + st->wlen, s + off, n);
    st->wlen += n;
    off += n;
    if (off == len) {
      argi++;
      off = 0;
    }
  }
  if (argi > top && (!flush_all || st->wlen == 0) && st->wlen < WBUF_CAP) {
    lua_settop(L, 1);
    return 1;
  }
  lm_fswait *w = lm_fs_wait_new(L, f->ctx, &st->op, 0, st->closing);
  w->argi = flush_all ? -1 : argi;
  w->off = off;
  uv_buf_t buf = uv_buf_init(st->wb, (unsigned)st->wlen);
  int rc = uv_fs_write(uvloop(f), &st->op.req, st->fd, &buf, 1, st->append ? -1 : st->wpos, lm_fs_cb);
  return lm_fs_started(L, w, rc, write_k, "write", st->path);
}

static int write_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lm_fswait *w;
  ssize_t n = op_result(L, kctx, "write", &w);
  lm_file *f = lua_touserdata(L, 1);
  fstate *st = f->st;
  memmove(st->wb, st->wb + n, st->wlen - (size_t)n);
  st->wlen -= (size_t)n;
  st->wpos += n;
  st->rpos = st->wpos; /* nothing is read ahead while writing */
  int flush_all = w->argi < 0;
  int argi = w->argi;
  size_t off = w->off;
  drop_wait(L, w);
  return write_more(L, f, flush_all ? 2 : argi, off, flush_all);
}

/* Drops what was read ahead: the next write goes where the reader is. */
static void end_reading(fstate *st) {
  st->wpos = st->rpos - (int64_t)(st->rb.end - st->rb.start);
  st->rpos = st->wpos;
  st->rb.start = st->rb.end = 0;
}

/* f:write(...): strings and numbers; returns f. */
static int file_write(lua_State *L) {
  lm_file *f = check_file(L);
  fstate *st = usable(L, f);
  if (!st->writable)
    return lm_error(L, "usage", "'%s' was not opened for writing", st->path);
  int top = lua_gettop(L);
  for (int i = 2; i <= top; i++) {
    int t = lua_type(L, i);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
      return lm_typeerror(L, i, "string or number");
    if (t == LUA_TNUMBER) {
      /* Kept as a string on the stack, where write_more finds it. */
      lua_pushvalue(L, i);
      lua_tolstring(L, -1, NULL);
      lua_replace(L, i);
    }
  }
  if (st->wb == NULL && (st->wb = malloc(WBUF_CAP)) == NULL)
    return lm_error(L, "memory", "cannot allocate a write buffer");
  SETTLE_PREFETCH(L, f, file_write, 0);
  if (st->wlen == 0)
    end_reading(st);
  return write_more(L, f, 2, 0, 0);
}

/* f:flush(): what was written reaches the kernel. */
static int file_flush(lua_State *L) {
  lm_file *f = check_file(L);
  usable(L, f);
  lua_settop(L, 1);
  return write_more(L, f, 2, 0, 1);
}

/* ---- sync, seek, close --------------------------------------------------------- */

static int sync_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lm_fswait *w;
  op_result(L, kctx, "sync", &w);
  lua_settop(L, 1);
  return 1;
}

static int again_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  return ((lua_CFunction)kctx)(L);
}

/* Buffered writes go out first (f:flush()), then again(L) runs with the
 * call's stack as it was, as C's stdio flushes before a seek. */
static int flush_then(lua_State *L, lua_CFunction again) {
  lua_pushcfunction(L, file_flush);
  lua_pushvalue(L, 1);
  lua_callk(L, 1, 0, (lua_KContext)again, again_k);
  return again(L);
}

/* f:sync(): flushes, then fsync: the data is on the disk. */
static int file_sync(lua_State *L) {
  lm_file *f = check_file(L);
  fstate *st = usable(L, f);
  if (st->wlen)
    return flush_then(L, file_sync);
  SETTLE_PREFETCH(L, f, file_sync, 0);
  lm_fswait *w = lm_fs_wait_new(L, f->ctx, &st->op, 0, 0);
  int rc = uv_fs_fsync(uvloop(f), &st->op.req, st->fd, lm_fs_cb);
  return lm_fs_started(L, w, rc, sync_k, "sync", st->path);
}

/* base + off as a file offset, or -1 when it overflows or is negative. */
static int64_t offset_from(int64_t base, lua_Integer off) {
  if ((off > 0 && base > INT64_MAX - off) || (off < 0 && base < INT64_MIN - off))
    return -1;
  return base + off;
}

static int64_t position(const fstate *st) {
  if (st->wlen)
    return st->wpos + (int64_t)st->wlen;
  return st->rpos - (int64_t)(st->rb.end - st->rb.start);
}

static void set_position(fstate *st, int64_t pos) {
  st->rb.start = st->rb.end = 0;
  st->rb.eof = 0;
  st->rpos = st->wpos = pos;
}

static int seek_end_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lm_fswait *w = lm_fs_done(L, kctx);
  fstate *st = (fstate *)w->op;
  ssize_t r = st->op.req.result;
  int64_t size = (int64_t)st->op.req.statbuf.st_size;
  lm_fs_reset(&st->op);
  if (r < 0)
    return lm_fs_error(L, (int)r, "seek", st->path);
  int64_t pos = offset_from(size, (lua_Integer)(int64_t)w->off);
  if (pos < 0)
    return lm_fs_error(L, UV_EINVAL, "seek", st->path);
  set_position(st, pos);
  lua_pushinteger(L, pos);
  return 1;
}

/* luaL_checkoption's error is a bare string: a loom error names it. */
static int check_whence(lua_State *L, int arg) {
  static const char *const names[] = {"set", "cur", "end"};
  if (lua_isnoneornil(L, arg))
    return 1;
  const char *w = lua_type(L, arg) == LUA_TSTRING ? lua_tostring(L, arg) : NULL;
  for (int i = 0; w && i < 3; i++)
    if (strcmp(w, names[i]) == 0)
      return i;
  return lm_argerror(L, arg, "\"set\", \"cur\" or \"end\" expected");
}

/* f:seek([whence [, offset]]): "set", "cur" (default) or "end"; returns
 * the new position. Buffered writes go out first. */
static int file_seek(lua_State *L) {
  lm_file *f = check_file(L);
  fstate *st = usable(L, f);
  int whence = check_whence(L, 2);
  lua_Integer off = lua_isnoneornil(L, 3) ? 0 : lm_checkinteger(L, 3);
  if (st->wlen)
    return flush_then(L, file_seek);
  if (whence == 1 && off == 0) {
    lua_pushinteger(L, position(st));
    return 1;
  }
  SETTLE_PREFETCH(L, f, file_seek, 0);
  if (whence == 2) {
    lm_fswait *w = lm_fs_wait_new(L, f->ctx, &st->op, 0, 0);
    w->off = (size_t)off;
    int rc = uv_fs_fstat(uvloop(f), &st->op.req, st->fd, lm_fs_cb);
    return lm_fs_started(L, w, rc, seek_end_k, "seek", st->path);
  }
  int64_t pos = offset_from(whence == 0 ? 0 : position(st), off);
  if (pos < 0)
    return lm_fs_error(L, UV_EINVAL, "seek", st->path);
  set_position(st, pos);
  lua_pushinteger(L, pos);
  return 1;
}

static int close_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lm_fswait *w = lm_fs_done(L, kctx);
  fstate *st = (fstate *)w->op;
  ssize_t r = st->op.req.result;
  lm_fs_reset(&st->op);
  st->fd = -1;
  /* The flush's failure comes first: it is what lost the data. */
  if (w->argi) {
    lua_pushvalue(L, 2);
    return lua_error(L);
  }
  if (r < 0)
    return lm_fs_error(L, (int)r, "close", st->path);
  return 0;
}

static int close_flushed_k(lua_State *L, int status, lua_KContext kctx);

/* f:close(): writes out what is buffered and closes; a second close does
 * nothing. The close (its flush too) runs even when the task is
 * cancelled, and a flush that fails (a full disk) still closes the file,
 * then raises, as C's fclose does: a file whose buffer can never go out
 * would otherwise stay open, every close failing again. */
static int file_close(lua_State *L) {
  lm_file *f = check_file(L);
  if (f->closed)
    return 0;
  fstate *st = usable(L, f);
  lua_settop(L, 1);
  SETTLE_PREFETCH(L, f, file_close, 1);
  if (st->wlen) {
    st->closing = 1;
    lua_pushcfunction(L, file_flush);
    lua_pushvalue(L, 1);
    return close_flushed_k(L, lua_pcallk(L, 1, 0, 0, 0, close_flushed_k), 0);
  }
  return close_flushed_k(L, LUA_OK, 0);
}

static int close_flushed_k(lua_State *L, int status, lua_KContext kctx) {
  (void)kctx;
  lm_file *f = lua_touserdata(L, 1);
  fstate *st = f->st;
  int failed = status != LUA_OK && status != LUA_YIELD;
  if (failed) {
    lua_copy(L, -1, 2); /* the flush's error, raised once closed */
    st->wlen = 0;
  }
  lua_settop(L, failed ? 2 : 1);
  f->closed = 1;
  lm_fswait *w = lm_fs_wait_new(L, f->ctx, &st->op, 0, 1);
  w->argi = failed;
  int rc = uv_fs_close(uvloop(f), &st->op.req, st->fd, lm_fs_cb);
  return lm_fs_started(L, w, rc, close_k, "close", st->path);
}

/* f:_discard(): forgets buffered writes (an atomic write given up). */
static int file_discard(lua_State *L) {
  lm_file *f = check_file(L);
  if (f->st && !f->st->op.out)
    f->st->wlen = 0;
  return 0;
}

static int file_gc(lua_State *L) {
  lm_file *f = lua_touserdata(L, 1);
  fstate *st = f->st;
  if (st == NULL)
    return 0;
  f->st = NULL;
  if (st->op.out)
    st->op.orphan = 1; /* its completion closes and frees */
  else
    release_state(&st->op);
  return 0;
}

/* Upvalues: the metatable (as every method has), the file, the format. */
static int lines_iter(lua_State *L) {
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_pushvalue(L, lua_upvalueindex(3));
  return file_read(L);
}

/* f:lines([fmt]): for line in f:lines() do ... end */
static int file_lines(lua_State *L) {
  check_file(L);
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

static int file_tostring(lua_State *L) {
  lm_file *f = lua_touserdata(L, 1);
  if (f->closed || f->st == NULL)
    lua_pushliteral(L, "loom.file (closed)");
  else
    lua_pushfstring(L, "loom.file (%s)", f->st->path);
  return 1;
}

static int file_path(lua_State *L) {
  lm_file *f = check_file(L);
  if (f->st == NULL)
    return 0;
  lua_pushstring(L, f->st->path);
  return 1;
}

static const luaL_Reg file_methods[] = {
  {"read", file_read},
  {"lines", file_lines},
  {"write", file_write},
  {"flush", file_flush},
  {"sync", file_sync},
  {"seek", file_seek},
  {"close", file_close},
  {"path", file_path},
  {"_discard", file_discard},
  {NULL, NULL}
};

static const luaL_Reg file_meta[] = {
  {"__gc", file_gc},
  {"__close", file_close},
  {"__tostring", file_tostring},
  {NULL, NULL}
};

const luaL_Reg lm_file_funcs[] = {{"_fs_open", l_open}, {NULL, NULL}};

void lm_open_file(lua_State *L) {
  lm_new_class(L, LM_FILE_MT, file_methods, file_meta);
}
