/* A small test harness in the manner of libuv's: tests are listed once in
 * test_list.h, and each run of the binary executes exactly one of them by
 * name, so a crash, a hang or a leak is pinned on that test alone. */
#ifndef LOOM_TEST_RUNNER_H
#define LOOM_TEST_RUNNER_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "loom.h"

#define TEST_IMPL(name) void test_##name(void)

void loom_test_fail(const char *file, int line, const char *expr,
                    const char *detail);

#define ASSERT(expr)                                                        \
  do {                                                                      \
    if (!(expr))                                                            \
      loom_test_fail(__FILE__, __LINE__, #expr, NULL);                      \
  } while (0)

/* Integers of any width compare as int64_t so both values can be shown. */
#define ASSERT_EQ(a, b)                                                     \
  do {                                                                      \
    int64_t a_ = (int64_t)(a), b_ = (int64_t)(b);                           \
    if (a_ != b_) {                                                         \
      char d_[96];                                                          \
      snprintf(d_, sizeof d_, "%lld != %lld", (long long)a_, (long long)b_); \
      loom_test_fail(__FILE__, __LINE__, #a " == " #b, d_);                 \
    }                                                                       \
  } while (0)

#define ASSERT_PTR_EQ(a, b) ASSERT((const void *)(a) == (const void *)(b))

/* A loop that must close with no handle or request left behind. */
void loom_test_loop_init(loom_loop_t *loop);
void loom_test_loop_close(loom_loop_t *loop);

/* Records the order in which waiters were woken and with what status. */
typedef struct {
  int order[64];
  int status[64];
  int n;
} loom_test_log_t;

typedef struct {
  loom_waiter_t w;
  loom_test_log_t *log;
  int id;
} loom_test_waiter_t;

void loom_test_waiter_init(loom_test_waiter_t *tw, loom_test_log_t *log,
                           int id);

#endif
