#include "loom.h"

void loom_event_init(loom_event_t *e) {
  e->is_set = 0;
  loom_waitq_init(&e->waiters);
}

void loom_event_set(loom_event_t *e) {
  e->is_set = 1;
  loom_waitq_wake_all(&e->waiters, LOOM_OK);
}

void loom_event_clear(loom_event_t *e) { e->is_set = 0; }

void loom_event_wait(loom_event_t *e, loom_waiter_t *w) {
  loom_waitq_push(&e->waiters, w);
}

void loom_event_destroy(loom_event_t *e) {
  while (loom_waitq_shift(&e->waiters) != NULL) {}
}
