/* A game-style host: a fixed 60 fps frame loop that gives loom one
 * non-blocking step per frame, while a Lua script's tasks sleep and ping
 * each other through channels. The frame loop owns the clock; loom must
 * never make a frame late.
 *
 *   frame_loop            (prints what happens, exits non-zero on a fault)
 */
#include <stdio.h>
#include <time.h>
#include "embed_state.h"

#define FPS 60
#define FRAME_NS (1000000000L / FPS)
#define MAX_FRAMES (3 * FPS)
/* A step that takes half a frame has stalled the game. One or two may be
 * the OS scheduling something else on a busy machine; a step that blocks
 * on loom's timers would stall nearly every frame. */
#define MAX_STEP_NS (FRAME_NS / 2)
#define MAX_STALLS 2

static const char script[] =
  "local loom = require 'loom'\n"
  "state = {finished = 0, pings = 0, ticks = 0}\n"
  "local ping, pong = loom.channel(0), loom.channel(0)\n"
  "loom.spawn(function()\n"
  "  for i = 1, 5 do\n"
  "    ping:send(i)\n"
  "    assert(pong:recv() == i * 10)\n"
  "    state.pings = state.pings + 1\n"
  "    print(('frame %3d: ping %d answered'):format(frame, i))\n"
  "    loom.sleep(0.03)\n"
  "  end\n"
  "  ping:close()\n"
  "  state.finished = state.finished + 1\n"
  "end)\n"
  "loom.spawn(function()\n"
  "  for v in ping:iter() do pong:send(v * 10) end\n"
  "  state.finished = state.finished + 1\n"
  "end)\n"
  "loom.spawn(function()\n"
  "  for i = 1, 4 do\n"
  "    loom.sleep(0.05)\n"
  "    state.ticks = i\n"
  "    print(('frame %3d: tick %d'):format(frame, i))\n"
  "  end\n"
  "  state.finished = state.finished + 1\n"
  "end)\n";

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static lua_Integer state_field(lua_State *L, const char *name) {
  lua_getglobal(L, "state");
  lua_getfield(L, -1, name);
  lua_Integer v = lua_tointeger(L, -1);
  lua_pop(L, 2);
  return v;
}

static lua_State *new_state(void) {
  lua_State *L = luaL_newstate();
  embed_open_loom(L);
  return L;
}

int main(void) {
  lua_State *L = new_state();
  lua_pushinteger(L, 0);
  lua_setglobal(L, "frame");
  if (luaL_dostring(L, script) != LUA_OK) {
    fprintf(stderr, "script: %s\n", lua_tostring(L, -1));
    lua_close(L);
    return 1;
  }

  long long start = now_ns(), next = start, worst_step = 0;
  int frame = 0, busy = 1, stalls = 0;
  while (busy && frame < MAX_FRAMES) {
    frame++;
    lua_pushinteger(L, frame);
    lua_setglobal(L, "frame");
    long long t0 = now_ns();
    busy = loom_step(L, 0);
    long long took = now_ns() - t0;
    if (took > worst_step)
      worst_step = took;
    stalls += took > MAX_STEP_NS;
    if (busy < 0) {
      fprintf(stderr, "loom is not loaded in this state\n");
      return 1;
    }
    /* The rest of the frame belongs to the game: sleep to the next tick. */
    next += FRAME_NS;
    struct timespec until = {next / 1000000000LL, next % 1000000000LL};
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL);
  }
  double secs = (now_ns() - start) / 1e9;

  lua_Integer finished = state_field(L, "finished");
  lua_Integer pings = state_field(L, "pings");
  lua_Integer ticks = state_field(L, "ticks");
  printf("%d frames in %.2f s; worst step %.3f ms, %d stalled; tasks "
         "finished %lld/3, pings %lld/5, ticks %lld/4\n",
         frame, secs, worst_step / 1e6, stalls, (long long)finished,
         (long long)pings, (long long)ticks);
  lua_close(L);

  int ok = 1;
  if (busy || finished != 3 || pings != 5 || ticks != 4) {
    fprintf(stderr, "FAIL: tasks did not finish within %d frames\n", frame);
    ok = 0;
  }
  /* The tasks need about 0.2 s; many more frames means steps lost time. */
  if (frame < FPS / 10 || frame > FPS) {
    fprintf(stderr, "FAIL: %d frames for 0.2 s of sleeping\n", frame);
    ok = 0;
  }
  if (stalls > MAX_STALLS) {
    fprintf(stderr, "FAIL: %d steps took over half a frame (worst %.3f ms)\n",
            stalls, worst_step / 1e6);
    ok = 0;
  }
  return ok ? 0 : 1;
}
