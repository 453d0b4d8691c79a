/* Internal header of loom's files, processes and signals (lua/io/fs*.c,
 * file.c, process.c, signal.c): libuv requests and handles waited
 * for through lua/request.c.
 *
 * Lifetime. What libuv writes into or reads from while a request is out
 * (the uv_fs_t, a buffer, a handle) lives in malloc'd memory, never in a
 * userdata: a userdata collected while its request is out (its coroutine
 * dropped, the state closing) leaves that memory to the request's
 * completion, which frees it. */
#ifndef LM_FSPROC_H
#define LM_FSPROC_H

#include "lm.h"
#include "lm_io.h"

/* ---- errors ------------------------------------------------------------- */

/* Raises {kind = "io", code = "ENOENT", message = "<what> '<path>': no such
 * file or directory", path = path} for the libuv error err (path may be
 * NULL). */
int lm_fs_error(lua_State *L, int err, const char *what, const char *path);

/* ---- a read buffer (rbuf.c); formats.c reads from it ------------------- */

typedef struct lm_rbuf {
  char *p;
  size_t cap, start, end; /* unread bytes: p[start, end) */
  int eof;
} lm_rbuf;

/* Makes room for at least want more bytes after end (compacting first,
 * then growing); returns the free bytes after end, 0 when out of memory. */
size_t lm_rbuf_room(lm_rbuf *b, size_t want);
void lm_rbuf_free(lm_rbuf *b);

/* ---- fs requests ------------------------------------------------------- */

typedef struct lm_fsop lm_fsop;
typedef struct lm_fswait lm_fswait;

/* One uv_fs request and what it carries. Owned by a one-call wait (fs.c)
 * or by a file (file.c), whose `release` frees it once nobody needs it. */
struct lm_fsop {
  uv_fs_t req;
  lm_fswait *waiter;  /* the call waiting for it, NULL if none */
  int out;            /* in libuv's hands */
  int orphan;         /* its owner is gone: the completion releases it */
  /* Undoes a result nobody will see (closes an opened file) and frees the
   * op: called by the completion of an orphan, and after an interrupted
   * call drained. */
  void (*release)(lm_fsop *op);
};

/* The userdata of one call waiting on an op. */
struct lm_fswait {
  lm_request rq;
  lm_fsop *op;
  int owns;           /* the op is this call's (else its file's) */
  int nfmt;           /* file reads: how many formats, from argument 2 on */
  int argi;           /* file writes: the next argument */
  size_t off;         /* ... and how much of it went */
  lua_CFunction again; /* file calls that waited out a read-ahead */
};

/* Pushes a wait on op (prepared as lm_request_prepare does: raises when
 * cancelled). Then start the uv_fs call with lm_fs_cb as its callback and
 * hand its return value to lm_fs_started. */
lm_fswait *lm_fs_wait_new(lua_State *L, lm_ctx *ctx, lm_fsop *op, int owns, int shielded);
void lm_fs_cb(uv_fs_t *req);
/* The uv_fs_* call's return: < 0 raises (nothing was started), else waits
 * for the op and continues in done. */
int lm_fs_started(lua_State *L, lm_fswait *w, int rc, lua_KFunction done,
                  const char *what, const char *path);
/* In done: the wait at kctx; raises the interruption that ended it if the
 * op completed anyway. */
lm_fswait *lm_fs_done(lua_State *L, lua_KContext kctx);
void lm_open_fswait(lua_State *L);
/* Leaves req->result as is; frees what libuv allocated for the request. */
void lm_fs_reset(lm_fsop *op);

/* file.c */
void lm_open_file(lua_State *L);
extern const luaL_Reg lm_file_funcs[];
/* fs.c */
extern const luaL_Reg lm_fs_funcs[];
/* process.c, signal.c */
void lm_open_process(lua_State *L);
extern const luaL_Reg lm_process_funcs[];
void lm_open_signal(lua_State *L);
extern const luaL_Reg lm_signal_funcs[];
/* A signal's number by name ("TERM", "SIGTERM", "RTMIN+2") or number; -1
 * if unknown. */
int lm_signum(lua_State *L, int idx);
/* Pushes its name ("TERM", "RTMIN+2"; the number for one without). */
void lm_push_signame(lua_State *L, int signum);

/* The classes, and the functions into the module table on top: called
 * once by luaopen_loom_core. */
void lm_open_fsproc(lua_State *L);

#endif
