/* coroutine.resume and coroutine.wrap that let loom waits through.
 *
 * A loom call made inside a user's own coroutine (an iterator built with
 * coroutine.wrap, say) yields loom's wait marker. These resumers recognise
 * it: inside a task they yield it on towards the scheduler and, once the
 * task is resumed, resume the inner coroutine again; outside any task they
 * drive the loop until the wait ends. Either way the user's coroutine only
 * ever sees its own yields. Everything else behaves as in lcorolib.c. */
#include "lm.h"

extern const char lm_wait_marker;

enum { COS_OK, COS_DEAD, COS_NORMAL };

static int co_state(const lua_State *L, lua_State *co) {
  if (L == co)
    return COS_NORMAL;
  switch (lua_status(co)) {
  case LUA_YIELD:
    return COS_OK;
  case LUA_OK: {
    lua_Debug ar;
    if (lua_getstack(co, 0, &ar))
      return COS_NORMAL;
    return lua_gettop(co) == 0 ? COS_DEAD : COS_OK;
  }
  default:
    return COS_DEAD;
  }
}

/* Mode bits passed through the continuation context. */
#define AS_WRAP 1

static lua_State *the_co(lua_State *L, int mode) {
  return lua_tothread(L, mode & AS_WRAP ? lua_upvalueindex(2) : 1);
}

static int resume_k(lua_State *L, int status, lua_KContext kctx);

/* A coroutine parked in a loom wait keeps the marker on its stack until its
 * resumer takes it back in: the wait belongs to that resumer (its task, or
 * its drive of the loop), and a resume from anyone else (a second task
 * calling the same coroutine.wrap generator) would run the wait's
 * continuation before the wait ended, leave its waiter queued, and hand the
 * value meant for it to nobody. */
static int parked(lua_State *co) {
  return lua_status(co) == LUA_YIELD && lua_gettop(co) > 0 &&
         lua_touserdata(co, -1) == &lm_wait_marker;
}

static void park(lua_State *co, int nres) {
  lua_pop(co, nres);
  lua_pushlightuserdata(co, (void *)&lm_wait_marker);
}

/* Resumes co with narg values already on its stack, until it finishes or
 * yields something of its own. Returns what the Lua-facing function
 * returns. */
static int resume_through(lua_State *L, lua_State *co, int narg, int mode) {
  lm_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
  for (;;) {
    int nres;
    if (narg == 0 && parked(co))
      lua_pop(co, 1);
    int st = lua_resume(co, L, narg, &nres);
    narg = 0;
    if (st == LUA_YIELD && nres >= 1 && lua_touserdata(co, -nres) == &lm_wait_marker) {
      lm_wait *outside = nres >= 2 ? lua_touserdata(co, -nres + 1) : NULL;
      park(co, nres);
      if (outside) {
        lm_drive(ctx, L, outside);
        continue;
      }
      if (!lua_isyieldable(L)) {
        lua_pop(co, 1); /* its wait is dropped: a later resume raises */
        if (ctx->current)
          lm_wait_abort(&ctx->current->wait);
        return lm_error(L, "usage",
                        "cannot wait here: a coroutine waiting on loom was resumed "
                        "from a C function without continuation");
      }
      lua_settop(L, mode & AS_WRAP ? 0 : 1);
      lua_pushlightuserdata(L, (void *)&lm_wait_marker);
      return lua_yieldk(L, 1, (lua_KContext)mode, resume_k);
    }
    if (st == LUA_OK || st == LUA_YIELD) {
      if (!lua_checkstack(L, nres + 1)) {
        lua_pop(co, nres);
        return luaL_error(L, "too many results to resume");
      }
      if (mode & AS_WRAP) {
        lua_xmove(co, L, nres);
        return nres;
      }
      lua_pushboolean(L, 1);
      lua_xmove(co, L, nres);
      return nres + 1;
    }
    if (mode & AS_WRAP) {
      lua_resetthread(co); /* runs its pending <close> handlers */
      lua_xmove(co, L, 1);
      if (st != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
        luaL_where(L, 1);
        lua_insert(L, -2);
        lua_concat(L, 2);
      }
      return lua_error(L);
    }
    lua_pushboolean(L, 0);
    lua_xmove(co, L, 1);
    return 2;
  }
}

static int resume_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  int mode = (int)kctx;
  return resume_through(L, the_co(L, mode), 0, mode);
}

static int start(lua_State *L, lua_State *co, int first, int mode) {
  int narg = lua_gettop(L) - first + 1;
  int state = co_state(L, co);
  const char *why = NULL;
  if (!lua_checkstack(co, narg))
    why = "too many arguments to resume";
  else if (state == COS_DEAD)
    why = "cannot resume dead coroutine";
  else if (state == COS_NORMAL)
    why = "cannot resume non-suspended coroutine";
  else if (parked(co))
    why = "cannot resume a coroutine that waits in loom for its own resumer";
  if (why) {
    if (mode & AS_WRAP)
      return luaL_error(L, "%s", why);
    lua_pushboolean(L, 0);
    lua_pushstring(L, why);
    return 2;
  }
  lua_xmove(L, co, narg);
  return resume_through(L, co, narg, mode);
}

static int co_resume(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argexpected(L, co, 1, "coroutine");
  return start(L, co, 2, 0);
}

static int co_wrapped(lua_State *L) {
  return start(L, lua_tothread(L, lua_upvalueindex(2)), 1, AS_WRAP);
}

static int co_wrap(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_State *co = lua_newthread(L);
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  lua_pushcclosure(L, co_wrapped, 2);
  return 1;
}

/* Installs the resumers in the global coroutine table and as loom.resume
 * and loom.wrap (the module table is on top of the stack). */
void lm_open_coro(lua_State *L) {
  static const luaL_Reg funcs[] = {{"resume", co_resume}, {"wrap", co_wrap}, {NULL, NULL}};
  lm_push_ctx(L);
  luaL_setfuncs(L, funcs, 1);
  if (lua_getglobal(L, "coroutine") == LUA_TTABLE) {
    lua_getfield(L, -2, "resume");
    lua_setfield(L, -2, "resume");
    lua_getfield(L, -2, "wrap");
    lua_setfield(L, -2, "wrap");
  }
  lua_pop(L, 1);
}
