#include "loom.h"

void loom_sem_init(loom_sem_t *s, int64_t count) {
  s->count = s->max = count;
  loom_waitq_init(&s->waiters);
}

int loom_sem_try_acquire(loom_sem_t *s) {
  /* Waiters first: a free permit with waiters queued is about to be
   * handed over, not up for grabs. */
  if (s->count > 0 && s->waiters.len == 0) {
    s->count--;
    return LOOM_OK;
  }
  return LOOM_EAGAIN;
}

void loom_sem_wait(loom_sem_t *s, loom_waiter_t *w) {
  loom_waitq_push(&s->waiters, w);
}

int loom_sem_release(loom_sem_t *s) {
  loom_waiter_t *w = loom_waitq_shift(&s->waiters);
  if (w) {
    w->wake(w, LOOM_OK);
    return LOOM_OK;
  }
  if (s->count >= s->max)
    return LOOM_EOVERFLOW;
  s->count++;
  return LOOM_OK;
}

void loom_sem_destroy(loom_sem_t *s) {
  while (loom_waitq_shift(&s->waiters) != NULL) {}
}
