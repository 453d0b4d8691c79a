/* The least a Lua coroutine library can do for bench/io.lua's one-process
 * echo: streams whose read yields the calling coroutine until epoll says
 * its socket is readable, one edge-triggered epoll set, a table from socket
 * to waiting coroutine, and a run loop that resumes it. No timeouts, no
 * cancellation, no errors worth the name, no other kind of event: what a
 * library with those must pay on top of the Lua calls, the task switches
 * and the system calls. A Lua module:
 *   local least = require "echo_least"
 *   local a, b = least.pair()        -- the two ends of a loopback connection
 *   a:write(s); local m = a:read(n)  -- inside coroutines given to least.run
 *   least.run(co1, co2, ...)         -- until nothing can wake any of them
 *   least.now()                      -- seconds, monotonic
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define STREAM "echo_least.stream"
#define BUF 4096

typedef struct {
  int fd;
  int readable;      /* the last edge has not been read to EAGAIN yet */
  lua_State *waiter; /* the coroutine waiting to read, if any */
  size_t want;       /* how many bytes it waits for */
  size_t have;
  char buf[BUF];
} stream;

static int epfd = -1;

static stream *new_stream(lua_State *L, int fd) {
  stream *s = lua_newuserdatauv(L, sizeof *s, 0);
  s->fd = fd;
  s->readable = 0;
  s->waiter = NULL;
  s->have = 0;
  luaL_setmetatable(L, STREAM);
  struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.ptr = s};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev))
    luaL_error(L, "epoll_ctl: %s", strerror(errno));
  return s;
}

static int least_pair(lua_State *L) {
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof a;
  int one = 1;
  /* A benchmark's helper: a failure here ends the process, so the
   * descriptors of a failed attempt are not worth closing one by one. */
  int lst = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lst < 0 || bind(lst, (struct sockaddr *)&a, sizeof a) || listen(lst, 1) ||
      getsockname(lst, (struct sockaddr *)&a, &alen))
    return luaL_error(L, "listen: %s", strerror(errno));
  int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int s = -1;
  if (c >= 0 && (connect(c, (struct sockaddr *)&a, sizeof a) == 0 ||
                 errno == EINPROGRESS))
    s = accept4(lst, NULL, NULL, SOCK_NONBLOCK);
  int err = errno;
  close(lst);
  if (s < 0)
    return luaL_error(L, "connect: %s", strerror(err));
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (epfd < 0 && (epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
    return luaL_error(L, "epoll_create1: %s", strerror(errno));
  new_stream(L, c);
  new_stream(L, s);
  return 2;
}

/* The check every method needs, at its cheapest: the metatable, held as
 * the method's upvalue, compared by identity (luaL_checkudata would look
 * it up by name in the registry on every call). */
static stream *check_stream(lua_State *L) {
  stream *s = lua_touserdata(L, 1);
  if (s == NULL || !lua_getmetatable(L, 1) ||
      !lua_rawequal(L, -1, lua_upvalueindex(1)))
    luaL_typeerror(L, 1, STREAM);
  lua_pop(L, 1);
  return s;
}

static int stream_write(lua_State *L) {
  stream *s = check_stream(L);
  size_t n;
  const char *p = luaL_checklstring(L, 2, &n);
  /* The echo's messages are far below the socket buffer: a write that
   * would wait is a failure of the benchmark, not a case to handle. */
  if (write(s->fd, p, n) != (ssize_t)n)
    return luaL_error(L, "write: short or failed");
  return 0;
}

static int stream_read_k(lua_State *L, int status, lua_KContext k);

/* Answers a read of want bytes from the buffer, reading the socket only
 * when an edge says it has something; yields while nothing is there. */
static int read_from(lua_State *L, stream *s, size_t want) {
  for (;;) {
    if (s->have >= want) {
      lua_pushlstring(L, s->buf, want);
      s->have -= want;
      memmove(s->buf, s->buf + want, s->have);
      return 1;
    }
    if (!s->readable)
      break;
    ssize_t r = read(s->fd, s->buf + s->have, BUF - s->have);
    if (r == 0)
      return 0;
    if (r < 0) {
      if (errno != EAGAIN)
        return luaL_error(L, "read: %s", strerror(errno));
      s->readable = 0;
      break;
    }
    /* Short of the room: the socket was emptied, the edge is spent. */
    if ((size_t)r < BUF - s->have)
      s->readable = 0;
    s->have += (size_t)r;
  }
  s->waiter = L;
  s->want = want;
  return lua_yieldk(L, 0, (lua_KContext)s, stream_read_k);
}

/* s:read(n): exactly n bytes, or what is left at EOF. */
static int stream_read(lua_State *L) {
  stream *s = check_stream(L);
  lua_Integer want = luaL_checkinteger(L, 2);
  luaL_argcheck(L, want > 0 && want <= BUF, 2, "1 to 4096 bytes");
  return read_from(L, s, (size_t)want);
}

static int stream_read_k(lua_State *L, int status, lua_KContext k) {
  (void)status;
  stream *s = (stream *)k;
  return read_from(L, s, s->want);
}

/* Closing takes the socket out of the epoll set before its memory goes. */
static int stream_gc(lua_State *L) {
  stream *s = luaL_checkudata(L, 1, STREAM);
  if (s->fd >= 0)
    close(s->fd);
  s->fd = -1;
  return 0;
}

static void resume(lua_State *L, lua_State *co) {
  int nres;
  int status = lua_resume(co, L, 0, &nres);
  if (status == LUA_YIELD)
    lua_pop(co, nres);
  else if (status != LUA_OK) {
    lua_xmove(co, L, 1);
    lua_error(L);
  }
}

static int least_run(lua_State *L) {
  int n = lua_gettop(L);
  for (int i = 1; i <= n; i++)
    resume(L, lua_tothread(L, i));
  for (;;) {
    struct epoll_event evs[16];
    /* A second of nothing ends the run: every coroutine is done, or
     * waits on what nothing will send. */
    int k = epoll_wait(epfd, evs, 16, 1000);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      return 0;
    for (int i = 0; i < k; i++) {
      stream *s = evs[i].data.ptr;
      s->readable = 1;
      lua_State *co = s->waiter;
      if (co) {
        s->waiter = NULL;
        resume(L, co);
      }
    }
  }
}

/* Seconds on the monotonic clock, for the benchmark's own timing. */
static int least_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
  return 1;
}

int luaopen_echo_least(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"read", stream_read}, {"write", stream_write}, {NULL, NULL}};
  static const luaL_Reg fns[] = {{"pair", least_pair},
                                 {"run", least_run},
                                 {"now", least_now},
                                 {NULL, NULL}};
  luaL_newmetatable(L, STREAM);
  lua_pushcfunction(L, stream_gc);
  lua_setfield(L, -2, "__gc");
  luaL_newlibtable(L, methods);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, methods, 1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, fns);
  return 1;
}
