/* loom_tests NAME runs the one test NAME in this process; ctest invokes it
 * once per test. Without arguments it runs every test, each in a forked
 * child, for a quick look by hand. */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "runner.h"
#include "test_list.h"

#define DECLARE(group, name) void test_##group##_##name(void);
TEST_LIST(DECLARE)

typedef struct {
  const char *name;
  void (*fn)(void);
} test_entry;

#define ENTRY(group, name) {#group "_" #name, test_##group##_##name},
static const test_entry tests[] = {TEST_LIST(ENTRY){NULL, NULL}};

/* Long enough for the slowest test under sanitizers; a hang fails fast
 * instead of waiting for ctest's own timeout. */
#define TEST_TIMEOUT_S 20

void loom_test_fail(const char *file, int line, const char *expr,
                    const char *detail) {
  fprintf(stderr, "%s:%d: assertion failed: %s%s%s\n", file, line, expr,
          detail ? ": " : "", detail ? detail : "");
  fflush(stderr);
  abort();
}

void loom_test_loop_init(loom_loop_t *loop) {
  ASSERT_EQ(loom_loop_init(loop), 0);
}

void loom_test_loop_close(loom_loop_t *loop) {
  ASSERT_EQ(loom_loop_close(loop), 0);
}

static void log_wake(loom_waiter_t *w, int status) {
  loom_test_waiter_t *tw = w->data;
  loom_test_log_t *log = tw->log;
  ASSERT(log->n < 64);
  /* The core promises a waiter is off its queue before it is woken. */
  ASSERT(!loom_waiter_queued(w));
  log->order[log->n] = tw->id;
  log->status[log->n] = status;
  log->n++;
}

void loom_test_waiter_init(loom_test_waiter_t *tw, loom_test_log_t *log,
                           int id) {
  loom_waiter_init(&tw->w, log_wake, tw);
  tw->log = log;
  tw->id = id;
}

static const test_entry *find(const char *name) {
  for (const test_entry *t = tests; t->name; t++)
    if (strcmp(t->name, name) == 0)
      return t;
  return NULL;
}

static int run_one(const test_entry *t) {
  alarm(TEST_TIMEOUT_S);
  t->fn();
  alarm(0);
  return 0;
}

static int run_all(void) {
  int failed = 0, n = 0;
  for (const test_entry *t = tests; t->name; t++, n++) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
      perror("fork");
      return 1;
    }
    if (pid == 0)
      _exit(run_one(t));
    int status;
    waitpid(pid, &status, 0);
    int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    printf("%s %d - %s\n", ok ? "ok" : "not ok", n + 1, t->name);
    failed += !ok;
  }
  printf("1..%d\n# %d failed\n", n, failed);
  return failed != 0;
}

int main(int argc, char **argv) {
  if (argc < 2)
    return run_all();
  if (strcmp(argv[1], "--list") == 0) {
    for (const test_entry *t = tests; t->name; t++)
      puts(t->name);
    return 0;
  }
  const test_entry *t = find(argv[1]);
  if (t == NULL) {
    fprintf(stderr, "no test named %s\n", argv[1]);
    return 2;
  }
  return run_one(t);
}
