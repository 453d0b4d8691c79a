/* loom for hosts that embed Lua: drive loom's loop from your own loop.
 *
 *   luaL_requiref(L, "loom.core", luaopen_loom_core, 0);  (or require "loom")
 *   loom_preload_drivers(L);  (for loom.db)
 *   loom_preload_http(L);     (for loom.http)
 *   each frame:          loom_step(L, 0);
 *   in a poll() loop:    wait on loom_fd(L) for POLLIN with a timeout of
 *                        loom_next_timeout(L), then loom_step(L, 0).
 *
 * Every lua_State has its own loop; states on different threads are
 * independent. Call these from the thread that owns L, never from inside a
 * running task. */
#ifndef LOOM_LUA_H
#define LOOM_LUA_H

#include <lua.h>

int luaopen_loom_core(lua_State *L);

/* Puts the database drivers linked in (those this build has) in
 * package.preload as "loom.driver.<name>", where loom.db finds them. */
void loom_preload_drivers(lua_State *L);

/* Puts loom.http's engine, when this build has it, in package.preload as
 * "loom.curl", where loom.http finds it. */
void loom_preload_http(lua_State *L);

/* Runs ready tasks and polls I/O, blocking at most timeout_ms (0: never,
 * negative: until something happens). Returns 1 while tasks or I/O remain,
 * 0 when idle, -1 if loom is not loaded in L. */
int loom_step(lua_State *L, int timeout_ms);

/* The loop's backend file descriptor (readable when loom has events), or -1. */
int loom_fd(lua_State *L);

/* Milliseconds until loom needs a step, -1 if only an event on loom_fd or
 * from the host can give it work. Ask after every step: 0 (tasks ready, or
 * I/O interest that reaches the fd only in the next step, such as a new
 * connection's socket) means step again before waiting on the fd. */
int loom_next_timeout(lua_State *L);

#endif
