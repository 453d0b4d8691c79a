/* The value codec of loom.thread: Lua values copied from one Lua state to
 * another (a worker's) through a flat byte buffer.
 *
 * What crosses: nil, booleans, integers and floats exactly (an integer stays
 * an integer; -0.0, inf and nan keep their bits), strings binary-safe,
 * loom.null, tables deeply (a table reachable twice arrives as one table
 * reachable twice, cycles included; keys are copied like values), Lua
 * functions as unstripped bytecode (line numbers and names survive for
 * tracebacks) with their upvalues copied by value through the same encoder,
 * and two kinds of value by name rather than by content:
 * - a table that is a module of the sender (package.loaded[name], _G
 *   included) arrives as the receiver's package.loaded[name] (required there
 *   if need be): an upvalue `local loom = require "loom"` becomes the
 *   receiver's loom, not a copy. A function's `_ENV` upvalue always becomes
 *   the receiver's globals (whatever the sender's was: its _G, or a
 *   sandbox such as a test runner's): a function runs in the state that
 *   calls it;
 * - a thread channel (loom.thread.channel) arrives as a handle on the same
 *   channel: the message holds a reference to it until freed;
 * - a C function arrives as the receiver's function of the same name, found
 *   through a name index built lazily over package.loaded on the sender
 *   (string.format -> "string.format"). Its upvalues, if any, are the
 *   receiver's own; a C function that no module names cannot cross.
 * Anything else is an `argument` error naming the path to the value
 * ("cannot copy userdata at args[2].conn"): userdata other than loom.null
 * (its memory may hold pointers into the sender), threads (a coroutine's
 * stack belongs to its state), and tables with a metatable, unless the
 * metatable is a class registered by name with luaL_newmetatable (loom.error:
 * a loom error crosses as a loom error) and the receiver has it. Metatables are
 * refused rather than copied or dropped: a metatable is behaviour (methods,
 * __index chains, __gc) that lives in the sender; a copy per message would
 * break `getmetatable(x) == Class` in the receiver, and dropping it would
 * hand over a different object silently. The caller converts such values
 * to plain data first.
 *
 * Nesting deeper than LM_XCOPY_MAX_DEPTH levels is an `argument` error, so
 * a deep value cannot overflow the C stack.
 *
 * The receiver checks the framing of all it reads; the bytecode inside is
 * trusted as the encoder's own output (lua_load checks its header and
 * length only), as buffers never leave the process.
 *
 * Cost model: one growable malloc'd buffer per message; tags are bytes,
 * numbers are memcpy'd, strings length-prefixed; tables already seen are
 * found in a C hash keyed by lua_topointer and sent again as a back
 * reference, which the receiver resolves only for the tables the sender
 * marked shared; short strings met before go as a one-byte reference. The
 * receiver allocates, besides the copy, a table of the shared objects and
 * one of the repeated strings, each only if the message has any. A large
 * copy to or from a worker goes as a stream instead (xstream.h), decoded
 * while it is encoded. */
#ifndef LM_THREAD_CODEC_H
#define LM_THREAD_CODEC_H

#include <stddef.h>
#include <lua.h>
#include <lauxlib.h>

#define LM_XCOPY_MAX_DEPTH 200

/* Values copied between Lua states (worker threads): the sender encodes,
 * the receiver decodes; no state is touched by two threads. */
typedef struct lm_xbuf { char *p; size_t len, cap; } lm_xbuf;
/* Encodes the n values at idx..idx+n-1 of L. The buffer is owned by a userdata pushed on L's
 * stack (so an error halfway leaks nothing); lm_xbuf_take moves the bytes out of it (the caller
 * then owns them and frees them with free()). `what` names the values in error paths: "args"
 * gives "args[2].users[3].cb". A value that cannot cross raises an `argument` error (a loom
 * error table, lm_error) naming its path and type. */
lm_xbuf *lm_xcopy_encode(lua_State *L, int idx, int n, const char *what);
char *lm_xbuf_take(lm_xbuf *b, size_t *len);
/* Frees a message taken with lm_xbuf_take, and the references to thread
 * channels it holds: never free() one. */
void lm_xbuf_free(char *p, size_t len);
/* A copy of a whole message, with references of its own (NULL without
 * memory). */
char *lm_xbuf_dup(const char *p, size_t len);
/* Pushes the values encoded in p[0..len) onto L; returns how many. Malformed input is a
 * `protocol` error, never a crash. */
int lm_xcopy_decode(lua_State *L, const char *p, size_t len);

/* Streaming (xstream.h): the receiver decodes while the sender encodes. */
typedef struct lm_xstream lm_xstream;
/* Whether the n values at idx are worth a stream: a table among them with
 * LM_XSTREAM_ITEMS array items or more. */
int lm_xstream_wanted(lua_State *L, int idx, int n);
/* Encodes the n values at idx into s, a new stream, publishing as it
 * goes, and marks s done. A value that cannot cross raises as
 * lm_xcopy_encode does, and leaves s open: the caller must then end it
 * with lm_xstream_fail (passing the error on if it can), or its receiver
 * waits for good. Tables are not marked SHARED (the receiver may have read
 * their tag), so the receiver keeps every table. */
void lm_xcopy_encode_stream(lua_State *L, int idx, int n, const char *what, lm_xstream *s);
/* The same, protected: LUA_OK, or the status with the error on top (and s
 * still open). */
int lm_xcopy_pencode_stream(lua_State *L, int idx, int n, const char *what, lm_xstream *s);
/* Pushes the values of s as they come; returns how many. A stream that
 * fails raises a `thread` error; cancel, when set, raises `cancelled`
 * (checked every thousand tables or so). */
int lm_xcopy_decode_stream(lua_State *L, lm_xstream *s, const _Atomic int *cancel);
/* Lets go of the references to thread channels that the whole message
 * p[0..len) holds, without freeing p (a stream's pages). */
void lm_xbuf_release_chans(const char *p, size_t len);

/* Test hooks of the core module (core._xcopy, core._xcall,
 * core._xcopy_decode_raw): copies through a second Lua state. */
extern const luaL_Reg lm_xcopy_funcs[];

#endif
