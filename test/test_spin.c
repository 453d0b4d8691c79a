/* The spin budget of threads that wait for each other (core/spin.h). */
#include "runner.h"
#include "spin.h"

TEST_IMPL(spin_budget_bounds) {
  loom_spin_t s;
  loom_spin_init(&s);
  ASSERT_EQ(s.budget_ns, LOOM_SPIN_MAX_NS);
  loom_spin_found(&s);
  ASSERT_EQ(s.budget_ns, LOOM_SPIN_MAX_NS);
  for (int i = 0; i < 40; i++)
    loom_spin_shrink(&s);
  ASSERT_EQ(s.budget_ns, LOOM_SPIN_MIN_NS);
  loom_spin_found(&s);
  ASSERT_EQ(s.budget_ns, 2 * LOOM_SPIN_MIN_NS);
}

/* After a sleep the budget grows only when the answer came from another
 * core soon enough for a full spin to have seen it. The times are given,
 * not read: a test preempted between two calls must not see a late answer. */
#define T0 ((uint64_t)1000000000)

TEST_IMPL(spin_after_a_sleep) {
  loom_spin_t s;
  loom_spin_init(&s);
  s.budget_ns = 1000;
  /* From another core, at once: a longer spin would have caught it. */
  loom_spin_missed(&s, T0);
  s.cpu = 0;
  loom_spin_woken_at(&s, 1, T0 + 10);
  ASSERT_EQ(s.budget_ns, 2000);
  ASSERT_EQ(s.slept_at, 0);
  /* From the waiter's own core: the spin kept that thread off it. */
  loom_spin_missed(&s, T0);
  s.cpu = 1;
  loom_spin_woken_at(&s, 1, T0 + 10);
  ASSERT_EQ(s.budget_ns, 1000);
  /* Late: no spin would have helped. */
  loom_spin_missed(&s, T0);
  s.cpu = 0;
  loom_spin_woken_at(&s, 1, T0 + 10 * (uint64_t)LOOM_SPIN_MAX_NS);
  ASSERT_EQ(s.budget_ns, 500);
  /* Cores unknown: time alone decides. */
  loom_spin_missed(&s, T0);
  s.cpu = -1;
  loom_spin_woken_at(&s, -1, T0 + 10);
  ASSERT_EQ(s.budget_ns, 1000);
  /* Woken with no sleep begun: nothing changes. */
  loom_spin_woken_at(&s, 3, T0 + 10);
  ASSERT_EQ(s.budget_ns, 1000);
  /* A sleep that ended some other way counts as a miss. */
  loom_spin_missed(&s, T0);
  loom_spin_forget(&s);
  ASSERT_EQ(s.budget_ns, 500);
  loom_spin_forget(&s);
  ASSERT_EQ(s.budget_ns, 500);
  ASSERT(loom_spin_cpu() >= -1);
}
