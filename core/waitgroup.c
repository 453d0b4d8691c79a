#include "loom.h"

void loom_waitgroup_init(loom_waitgroup_t *wg) {
  wg->count = 0;
  loom_waitq_init(&wg->waiters);
}

int loom_waitgroup_add(loom_waitgroup_t *wg, int64_t delta) {
  /* Compared without computing count + delta, which could overflow. */
  if (delta < 0 ? delta < -wg->count : delta > INT64_MAX - wg->count)
    return LOOM_EOVERFLOW;
  wg->count += delta;
  if (wg->count == 0)
    loom_waitq_wake_all(&wg->waiters, LOOM_OK);
  return LOOM_OK;
}

void loom_waitgroup_wait(loom_waitgroup_t *wg, loom_waiter_t *w) {
  loom_waitq_push(&wg->waiters, w);
}

void loom_waitgroup_destroy(loom_waitgroup_t *wg) {
  while (loom_waitq_shift(&wg->waiters) != NULL) {}
}
