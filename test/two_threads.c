/* Two lua_States, each with loom, on two OS threads at the same time. Each
 * runs workers, channels, timers and a select timeout with its own factor,
 * so any state leaking between them (a C global, a shared loop) shows up
 * as a wrong sum, a crash, or a sanitizer report. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include "embed_state.h"

#define ROUNDS 3
#define ITEMS 200

static const char script[] =
  "local loom = require 'loom'\n"
  "local id, n = ...\n"
  "return loom.run(function()\n"
  "  local jobs, out = loom.channel(4), loom.channel(0)\n"
  "  local wg = loom.waitgroup()\n"
  "  for w = 1, 3 do\n"
  "    wg:add(1)\n"
  "    loom.spawn(function()\n"
  "      for v in jobs:iter() do\n"
  "        loom.sleep(0.001 * (v % 3))\n"
  "        out:send(v * id)\n"
  "      end\n"
  "      wg:done()\n"
  "    end)\n"
  "  end\n"
  "  loom.spawn(function()\n"
  "    for i = 1, n do jobs:send(i) end\n"
  "    jobs:close()\n"
  "  end)\n"
  "  loom.spawn(function() wg:wait(); out:close() end)\n"
  "  local sum, count = 0, 0\n"
  "  for v in out:iter() do sum = sum + v; count = count + 1 end\n"
  "  local i = loom.select{ {loom.channel(0), 'recv'}, timeout = 0.01 }\n"
  "  assert(i == nil, 'select should have timed out')\n"
  "  return sum, count\n"
  "end)\n";

typedef struct {
  int id;
  int ok;
  int fds[ROUNDS];
  char err[256];
} worker;

/* Crossed by both threads in every round while both states are open. */
static pthread_barrier_t both_open;

static int run_round(worker *w, int round) {
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    snprintf(w->err, sizeof w->err, "no memory for a lua_State");
    return 0;
  }
  embed_open_loom(L);

  int ok = 0;
  int loaded = luaL_dostring(L, "require 'loom'") == LUA_OK;
  w->fds[round] = loaded ? loom_fd(L) : -1;
  pthread_barrier_wait(&both_open);
  if (!loaded) {
    snprintf(w->err, sizeof w->err, "%s", lua_tostring(L, -1));
  } else if (luaL_loadstring(L, script) != LUA_OK) {
    snprintf(w->err, sizeof w->err, "%s", lua_tostring(L, -1));
  } else {
    lua_pushinteger(L, w->id);
    lua_pushinteger(L, ITEMS);
    if (lua_pcall(L, 2, 2, 0) != LUA_OK) {
      snprintf(w->err, sizeof w->err, "%s", luaL_tolstring(L, -1, NULL));
    } else {
      lua_Integer sum = lua_tointeger(L, -2), count = lua_tointeger(L, -1);
      lua_Integer want = (lua_Integer)w->id * ITEMS * (ITEMS + 1) / 2;
      if (sum != want || count != ITEMS)
        snprintf(w->err, sizeof w->err, "sum %lld (want %lld), count %lld",
                 (long long)sum, (long long)want, (long long)count);
      else
        ok = 1;
    }
  }
  lua_close(L);
  return ok;
}

static void *thread_main(void *arg) {
  worker *w = arg;
  w->ok = 1;
  /* Every round even after a failure: the other thread waits at the
   * barrier for this one. */
  for (int round = 0; round < ROUNDS; round++)
    if (!run_round(w, round))
      w->ok = 0;
  return NULL;
}

int main(void) {
  worker ws[2] = {{.id = 3}, {.id = 7}};
  pthread_t th[2];
  pthread_barrier_init(&both_open, NULL, 2);
  for (int i = 0; i < 2; i++)
    if (pthread_create(&th[i], NULL, thread_main, &ws[i]) != 0) {
      perror("pthread_create");
      return 1;
    }
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  pthread_barrier_destroy(&both_open);

  int failed = 0;
  for (int i = 0; i < 2; i++) {
    printf("state %d: %s%s\n", ws[i].id, ws[i].ok ? "ok" : "FAILED: ",
           ws[i].ok ? "" : ws[i].err);
    failed |= !ws[i].ok;
  }
  /* Open at the same time, each must have had a loop of its own. */
  for (int r = 0; r < ROUNDS; r++)
    if (ws[0].fds[r] < 0 || ws[0].fds[r] == ws[1].fds[r]) {
      printf("round %d: backend fds %d and %d\n", r, ws[0].fds[r],
             ws[1].fds[r]);
      failed = 1;
    }
  return failed;
}
