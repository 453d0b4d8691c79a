/* An nginx-style host: its own poll() loop waits on its own fd (a pipe a
 * producer thread writes to) beside loom's backend fd, with loom's next
 * timeout as the poll timeout. Messages from the pipe are handed to Lua
 * tasks through a channel; other tasks run on loom's timers. When the pipe
 * closes, eight queries run on a fresh PostgreSQL pool of four: from then on
 * only loom's fd and timeout wake the host, and the pool's new sockets and
 * its waiting tasks must make one of them do so.
 *
 *   LOOM_PG_URL=postgres://... poll_host
 *                         (prints what happens, exits non-zero on a fault;
 *                          ctest runs it through test/with_pg.sh)
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "embed_state.h"

#define LOOM_STR_(x) #x
#define LOOM_STR(x) LOOM_STR_(x)

#define MESSAGES 6
#define MESSAGE_GAP_US 25000
#define QUERIES 8
#define POOL_MAX 4
/* Far more than the run needs unless the loop spins: a host that is told
 * to wait 0 ms over and over burns iterations, not time. */
#define MAX_ITERATIONS 200
/* The run takes well under a second; this bound is for a loaded machine
 * under sanitizers. The pool's acquire timeout is far beyond it, so a host
 * that sleeps until that timeout fires fails here instead of going on. */
#define DEADLINE_MS 20000

static const char script[] =
  "local loom = require 'loom'\n"
  "state = {handled = 0, sum = 0, sleepers = 0}\n"
  "inbox = loom.channel(16)\n"
  "loom.spawn(function()\n"
  "  for msg in inbox:iter() do\n"
  "    loom.sleep(0.005)\n"
  "    state.handled = state.handled + 1\n"
  "    state.sum = state.sum + tonumber(msg)\n"
  "    print('lua: handled message ' .. msg)\n"
  "  end\n"
  "end)\n"
  "for i = 1, 3 do\n"
  "  loom.spawn(function()\n"
  "    loom.sleep(0.04 * i)\n"
  "    state.sleepers = state.sleepers + 1\n"
  "    print('lua: sleeper ' .. i .. ' woke')\n"
  "  end)\n"
  "end\n"
  "function deliver(msg) assert(inbox:try_send(msg)) end\n"
  "state.queries, state.backends, state.db_errors = 0, 0, 0\n"
  "local url = assert(os.getenv('LOOM_PG_URL'))\n"
  "local db = loom.db.open(url, {pool = {max = " LOOM_STR(POOL_MAX) ", acquire_timeout = 120}})\n"
  "function finish()\n"
  "  inbox:close()\n"
  "  local seen = {}\n"
  "  for i = 1, " LOOM_STR(QUERIES) " do\n"
  "    loom.spawn(function()\n"
  "      local ok, pid = pcall(db.value, db,\n"
  "        'SELECT pg_backend_pid() FROM (SELECT pg_sleep(0.05)) AS s')\n"
  "      if not ok then\n"
  "        state.db_errors = state.db_errors + 1\n"
  "        print('lua: query ' .. i .. ' failed: ' .. tostring(pid))\n"
  "        return\n"
  "      end\n"
  "      state.queries = state.queries + 1\n"
  "      if not seen[pid] then\n"
  "        seen[pid] = true\n"
  "        state.backends = state.backends + 1\n"
  "      end\n"
  "      print('lua: query ' .. i .. ' answered by backend ' .. pid)\n"
  "    end)\n"
  "  end\n"
  "end\n"
  "function shutdown() db:close() end\n";

static void *producer(void *arg) {
  int fd = *(int *)arg;
  for (int i = 1; i <= MESSAGES; i++) {
    usleep(MESSAGE_GAP_US);
    char c = (char)('0' + i);
    if (write(fd, &c, 1) != 1)
      perror("write");
  }
  close(fd);
  return NULL;
}

static void call_lua(lua_State *L, const char *fn, const char *arg) {
  lua_getglobal(L, fn);
  int n = 0;
  if (arg) {
    lua_pushstring(L, arg);
    n = 1;
  }
  if (lua_pcall(L, n, 0, 0) != LUA_OK) {
    fprintf(stderr, "%s: %s\n", fn, lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static lua_Integer state_field(lua_State *L, const char *name) {
  lua_getglobal(L, "state");
  lua_getfield(L, -1, name);
  lua_Integer v = lua_tointeger(L, -1);
  lua_pop(L, 2);
  return v;
}

int main(void) {
  if (getenv("LOOM_PG_URL") == NULL) {
    fprintf(stderr, "FAIL: LOOM_PG_URL is not set (test/with_pg.sh starts "
            "a throwaway server and sets it)\n");
    return 1;
  }
  lua_State *L = luaL_newstate();
  embed_open_loom(L);
  if (luaL_dostring(L, script) != LUA_OK) {
    fprintf(stderr, "script: %s\n", lua_tostring(L, -1));
    return 1;
  }

  if (loom_fd(L) < 0) {
    fprintf(stderr, "FAIL: loom_fd gave no descriptor\n");
    return 1;
  }
  int pipefd[2];
  pthread_t th;
  if (pipe(pipefd) != 0 || pthread_create(&th, NULL, producer, &pipefd[1])) {
    perror("pipe/thread");
    return 1;
  }

  int host_msgs = 0, pipe_open = 1, loom_busy = 1, stalled = 0;
  int iterations = 0, by_fd = 0, by_timeout = 0;
  long long start = now_ms();
  /* The last polls, to show what a spinning or stalled loop was told. */
  struct { int timeout, r, loom_ev, pipe_ev, busy; } trace[16] = {{0}};
  int stalled_timeout = 0;
  while (pipe_open || loom_busy) {
    if (++iterations > MAX_ITERATIONS)
      break;
    struct pollfd fds[2] = {
      {.fd = loom_fd(L), .events = POLLIN},
      {.fd = pipe_open ? pipefd[0] : -1, .events = POLLIN},
    };
    int timeout = loom_next_timeout(L);
    /* The host's own bound, never loom's business: loom must wake it by
     * its fd or its timeout long before. */
    long long left = start + DEADLINE_MS - now_ms();
    if (left <= 0) {
      stalled = 1;
      stalled_timeout = timeout;
      break;
    }
    int r = poll(fds, 2, timeout < 0 || timeout > left ? (int)left : timeout);
    if (r < 0 && errno != EINTR) {
      perror("poll");
      break;
    }
    if (r > 0 && (fds[1].revents & (POLLIN | POLLHUP))) {
      char buf[16];
      ssize_t n = read(pipefd[0], buf, sizeof buf);
      for (ssize_t i = 0; i < n; i++) {
        char msg[2] = {buf[i], 0};
        host_msgs++;
        printf("host: message %s from the pipe\n", msg);
        call_lua(L, "deliver", msg);
      }
      if (n == 0) {
        pipe_open = 0;
        close(pipefd[0]);
        call_lua(L, "finish", NULL);
      }
    }
    if (r == 0)
      by_timeout++;
    else if (fds[0].revents & POLLIN)
      by_fd++;
    loom_busy = loom_step(L, 0);
    trace[iterations % 16].timeout = timeout;
    trace[iterations % 16].r = r;
    trace[iterations % 16].loom_ev = fds[0].revents;
    trace[iterations % 16].pipe_ev = fds[1].revents;
    trace[iterations % 16].busy = loom_busy;
  }
  pthread_join(th, NULL);

  lua_Integer handled = state_field(L, "handled");
  lua_Integer sum = state_field(L, "sum");
  lua_Integer sleepers = state_field(L, "sleepers");
  lua_Integer queries = state_field(L, "queries");
  lua_Integer backends = state_field(L, "backends");
  lua_Integer db_errors = state_field(L, "db_errors");
  printf("%d iterations (%d by timeout, %d by loom's fd) in %.2f s; host "
         "read %d, lua handled %lld (sum %lld), sleepers %lld/3, queries "
         "%lld/%d on %lld backends, %lld failed\n",
         iterations, by_timeout, by_fd, (now_ms() - start) / 1e3, host_msgs,
         (long long)handled, (long long)sum, (long long)sleepers,
         (long long)queries, QUERIES, (long long)backends,
         (long long)db_errors);
  call_lua(L, "shutdown", NULL);
  lua_close(L);

  int ok = 1;
  if (stalled)
    fprintf(stderr, "FAIL: the host stalled: loom still had work after "
            "%d ms; its fd stayed quiet and next_timeout says %d ms\n",
            DEADLINE_MS, stalled_timeout);
  if (iterations > MAX_ITERATIONS)
    fprintf(stderr, "FAIL: the loop spun (over %d iterations)\n",
            MAX_ITERATIONS);
  if (stalled || iterations > MAX_ITERATIONS) {
    for (int i = 0; i < 16; i++) {
      int k = (iterations + 1 + i) % 16;
      fprintf(stderr, "  poll(timeout %d) = %d, loom revents %#x, pipe "
              "revents %#x, step says %d\n", trace[k].timeout, trace[k].r,
              trace[k].loom_ev, trace[k].pipe_ev, trace[k].busy);
    }
    ok = 0;
  }
  if (host_msgs != MESSAGES || handled != MESSAGES ||
      sum != MESSAGES * (MESSAGES + 1) / 2) {
    fprintf(stderr, "FAIL: pipe messages were not all served\n");
    ok = 0;
  }
  if (sleepers != 3 || by_timeout == 0) {
    fprintf(stderr, "FAIL: loom's timers were not served\n");
    ok = 0;
  }
  /* The queries sleep on the server: eight at once fill the pool. */
  if (queries != QUERIES || backends != POOL_MAX) {
    fprintf(stderr, "FAIL: %lld/%d queries answered on %lld/%d backends\n",
            (long long)queries, QUERIES, (long long)backends, POOL_MAX);
    ok = 0;
  }
  return ok ? 0 : 1;
}
