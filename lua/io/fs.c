/* loom.fs's one-call requests: stat, a directory's entries, rename,
 * unlink, rmdir, mkdir, chmod, each one uv_fs request on the thread pool.
 * lua/loom/fs.lua builds the API on them (remove, mkdir with parents,
 * the atomic write). */
#include <stdlib.h>
#include <string.h>
#include "lm_fsproc.h"

static void release_plain(lm_fsop *op) {
  uv_fs_req_cleanup(&op->req);
  free(op);
}

static lm_fsop *new_op(lua_State *L) {
  lm_fsop *op = calloc(1, sizeof *op);
  if (op == NULL)
    lm_error(L, "memory", "cannot allocate a file system request");
  op->release = release_plain;
  return op;
}

static lm_ctx *upctx(lua_State *L) { return lua_touserdata(L, lua_upvalueindex(1)); }

/* Pushes a new wait on a new op: the caller starts its request. */
static lm_fswait *begin(lua_State *L) {
  lm_fsop *op = new_op(L);
  return lm_fs_wait_new(L, upctx(L), op, 1, 0);
}

static const char *type_name(uint64_t mode) {
  switch (mode & S_IFMT) {
  case S_IFREG: return "file";
  case S_IFDIR: return "directory";
  case S_IFLNK: return "link";
  case S_IFIFO: return "fifo";
  case S_IFSOCK: return "socket";
  case S_IFCHR: return "char";
  case S_IFBLK: return "block";
  default: return "unknown";
  }
}

static double seconds(uv_timespec_t t) { return (double)t.tv_sec + (double)t.tv_nsec / 1e9; }

static void set_int(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

static void set_num(lua_State *L, const char *k, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}

static void push_stat(lua_State *L, const uv_stat_t *s) {
  lua_createtable(L, 0, 12);
  lua_pushstring(L, type_name(s->st_mode));
  lua_setfield(L, -2, "type");
  set_int(L, "size", (lua_Integer)s->st_size);
  set_int(L, "mode", (lua_Integer)(s->st_mode & 07777));
  set_num(L, "mtime", seconds(s->st_mtim));
  set_num(L, "atime", seconds(s->st_atim));
  set_num(L, "ctime", seconds(s->st_ctim));
  set_int(L, "nlink", (lua_Integer)s->st_nlink);
  set_int(L, "uid", (lua_Integer)s->st_uid);
  set_int(L, "gid", (lua_Integer)s->st_gid);
  set_int(L, "ino", (lua_Integer)s->st_ino);
  set_int(L, "dev", (lua_Integer)s->st_dev);
  set_int(L, "blocks", (lua_Integer)s->st_blocks);
}

static const char *dirent_type(uv_dirent_type_t t) {
  switch (t) {
  case UV_DIRENT_FILE: return "file";
  case UV_DIRENT_DIR: return "directory";
  case UV_DIRENT_LINK: return "link";
  case UV_DIRENT_FIFO: return "fifo";
  case UV_DIRENT_SOCKET: return "socket";
  case UV_DIRENT_CHAR: return "char";
  case UV_DIRENT_BLOCK: return "block";
  default: return "unknown";
  }
}

static const char *verb(uv_fs_type t) {
  switch (t) {
  case UV_FS_STAT: case UV_FS_LSTAT: return "stat";
  case UV_FS_SCANDIR: return "list";
  case UV_FS_RENAME: return "rename";
  case UV_FS_UNLINK: return "remove";
  case UV_FS_RMDIR: return "remove";
  case UV_FS_MKDIR: return "mkdir";
  case UV_FS_CHMOD: return "chmod";
  default: return "fs";
  }
}

/* Every one-call request ends here: its result pushed, or raised. */
static int call_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lm_fswait *w = lm_fs_done(L, kctx);
  lm_fsop *op = w->op;
  uv_fs_t *req = &op->req;
  if (req->result < 0)
    return lm_fs_error(L, (int)req->result, verb(req->fs_type), req->path);
  int n = 0;
  switch (req->fs_type) {
  case UV_FS_STAT:
  case UV_FS_LSTAT:
    push_stat(L, &req->statbuf);
    n = 1;
    break;
  case UV_FS_SCANDIR: {
    uv_dirent_t ent;
    lua_createtable(L, (int)req->result, 0);
    for (lua_Integer i = 1; uv_fs_scandir_next(req, &ent) != UV_EOF; i++) {
      lua_createtable(L, 0, 2);
      lua_pushstring(L, ent.name);
      lua_setfield(L, -2, "name");
      lua_pushstring(L, dirent_type(ent.type));
      lua_setfield(L, -2, "type");
      lua_rawseti(L, -2, i);
    }
    n = 1;
    break;
  }
  default:
    break;
  }
  w->op = NULL;
  op->release(op);
  return n;
}

static const char *check_path(lua_State *L, int arg) {
  if (lua_type(L, arg) != LUA_TSTRING)
    lm_typeerror(L, arg, "path string");
  size_t len;
  const char *p = lua_tolstring(L, arg, &len);
  if (strlen(p) != len)
    lm_argerror(L, arg, "a path cannot hold a zero byte");
  return p;
}

/* core._fs_stat(path, follow) */
static int l_stat(lua_State *L) {
  const char *path = check_path(L, 1);
  int follow = lua_isnoneornil(L, 2) || lua_toboolean(L, 2);
  lm_fswait *w = begin(L);
  uv_loop_t *loop = &w->rq.ctx->loop.uv;
  int rc = follow ? uv_fs_stat(loop, &w->op->req, path, lm_fs_cb)
                  : uv_fs_lstat(loop, &w->op->req, path, lm_fs_cb);
  return lm_fs_started(L, w, rc, call_k, "stat", path);
}

/* core._fs_scandir(path) */
static int l_scandir(lua_State *L) {
  const char *path = check_path(L, 1);
  lm_fswait *w = begin(L);
  int rc = uv_fs_scandir(&w->rq.ctx->loop.uv, &w->op->req, path, 0, lm_fs_cb);
  return lm_fs_started(L, w, rc, call_k, "list", path);
}

/* core._fs_rename(from, to) */
static int l_rename(lua_State *L) {
  const char *from = check_path(L, 1);
  const char *to = check_path(L, 2);
  lm_fswait *w = begin(L);
  int rc = uv_fs_rename(&w->rq.ctx->loop.uv, &w->op->req, from, to, lm_fs_cb);
  return lm_fs_started(L, w, rc, call_k, "rename", from);
}

/* core._fs_unlink(path, shielded): shielded for cleanup a cancel must not
 * stop (an atomic write's temporary file). */
static int l_unlink(lua_State *L) {
  const char *path = check_path(L, 1);
  lm_fswait *w = lm_fs_wait_new(L, upctx(L), new_op(L), 1, lua_toboolean(L, 2));
  int rc = uv_fs_unlink(&w->rq.ctx->loop.uv, &w->op->req, path, lm_fs_cb);
  return lm_fs_started(L, w, rc, call_k, "remove", path);
}

/* core._fs_rmdir(path) */
static int l_rmdir(lua_State *L) {
  const char *path = check_path(L, 1);
  lm_fswait *w = begin(L);
  int rc = uv_fs_rmdir(&w->rq.ctx->loop.uv, &w->op->req, path, lm_fs_cb);
  return lm_fs_started(L, w, rc, call_k, "remove", path);
}

static int check_mode(lua_State *L, int arg, int dflt) {
  if (lua_isnoneornil(L, arg))
    return dflt;
  lua_Integer m = lm_checkinteger(L, arg);
  if (m < 0 || m > 07777)
    lm_argerror(L, arg, "mode must be between 0 and 07777 (8#7777)");
  return (int)m;
}

/* core._fs_mkdir(path, mode) */
static int l_mkdir(lua_State *L) {
  const char *path = check_path(L, 1);
  int mode = check_mode(L, 2, 0777);
  lm_fswait *w = begin(L);
  int rc = uv_fs_mkdir(&w->rq.ctx->loop.uv, &w->op->req, path, mode, lm_fs_cb);
  return lm_fs_started(L, w, rc, call_k, "mkdir", path);
}

/* core._fs_chmod(path, mode) */
static int l_chmod(lua_State *L) {
  const char *path = check_path(L, 1);
  int mode = check_mode(L, 2, 0);
  lm_fswait *w = begin(L);
  int rc = uv_fs_chmod(&w->rq.ctx->loop.uv, &w->op->req, path, mode, lm_fs_cb);
  return lm_fs_started(L, w, rc, call_k, "chmod", path);
}

const luaL_Reg lm_fs_funcs[] = {
  {"_fs_stat", l_stat},
  {"_fs_scandir", l_scandir},
  {"_fs_rename", l_rename},
  {"_fs_unlink", l_unlink},
  {"_fs_rmdir", l_rmdir},
  {"_fs_mkdir", l_mkdir},
  {"_fs_chmod", l_chmod},
  {NULL, NULL}
};
