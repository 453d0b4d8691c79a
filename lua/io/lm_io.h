/* Internal header of loom's I/O binding (lua/io/): streams and what makes
 * them (connect, listen), and the errors they raise. */
#ifndef LM_IO_H
#define LM_IO_H

#include "lm.h"
#include "stream.h"

#define LM_STREAM_MT "loom.stream"

/* Pushes a Lua stream that owns s from now on (s->data is the binding's):
 * a connected socket, an accepted one, a pipe to a child (after uv_spawn
 * took it as stdio). */
void lm_stream_push(lua_State *L, lm_ctx *ctx, loom_stream_t *s);

/* The core stream of the open Lua stream at idx (to put a transport under
 * it: TLS over a connected socket). Raises `argument` for another value,
 * `closed` for a closed stream. */
loom_stream_t *lm_stream_check(lua_State *L, int idx);

/* Raises a libuv error as loom's: kind `connection` for what a peer or the
 * network did (refused, reset, unreachable, timed out), `io` otherwise,
 * code the errno name ("ECONNRESET"), message libuv's text and what. */
int lm_io_error(lua_State *L, int err, const char *what);
/* name as an error message shows it: cut short past 256 bytes (it may
 * push strings). */
const char *lm_io_shown(lua_State *L, const char *name);
void lm_io_push_error(lua_State *L, int err, const char *what);

/* {address=, port=, family=} of a socket address (family "inet",
 * "inet6"); false when it is none of these. */
void lm_io_push_sockaddr(lua_State *L, const struct sockaddr *sa);

/* Lua io's read formats (formats.c), for everything read like a file.
 * _check raises `argument` for a bad one at first..last. _answer answers
 * the n formats from first on out of p[0, len) all together (done: no
 * more bytes will come; max: the longest line, else an `io` error
 * EMSGSIZE; SIZE_MAX for none): pushes their values (a nil ends them
 * early, as Lua's io) and returns how many, *used the bytes they took;
 * or pushes nothing, returns -1 and sets *want to how many bytes must be
 * buffered first (SIZE_MAX: all there is). */
void lm_formats_check(lua_State *L, int first, int last);
int lm_formats_answer(lua_State *L, int first, int n, const char *p, size_t len, int done,
                      size_t max, size_t *used, size_t *want);

/* io.c opens the classes of the files below and lists their constructors
 * (upvalue 1: the context), which lua/loom/tcp.lua, unix.lua and dns.lua
 * wrap. */
void lm_open_io(lua_State *L);
extern const luaL_Reg lm_io_funcs[];
void lm_open_stream(lua_State *L);
void lm_open_connect(lua_State *L);
void lm_open_listener(lua_State *L);
void lm_open_dns(lua_State *L);
int lm_io_connect(lua_State *L);
int lm_io_listen(lua_State *L);
int lm_io_dns_resolve(lua_State *L);

#endif
