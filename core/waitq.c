/* Intrusive FIFO of waiters: O(1) push, shift and unlink, no allocation.
 * Fairness comes from the order: whoever waited first is served first. */
#include "list.h"
#include "loom.h"

void loom_waiter_init(loom_waiter_t *w, loom_wake_cb wake, void *data) {
  w->next = w->prev = NULL;
  w->queue = NULL;
  w->wake = wake;
  w->item = 0;
  w->data = data;
}

void loom_waitq_init(loom_waitq_t *q) {
  q->head = q->tail = NULL;
  q->len = 0;
}

void loom_waitq_push(loom_waitq_t *q, loom_waiter_t *w) {
  LOOM_LIST_APPEND(q->head, q->tail, w);
  w->queue = q;
  q->len++;
}

void loom_waiter_unlink(loom_waiter_t *w) {
  loom_waitq_t *q = w->queue;
  if (q == NULL)
    return;
  LOOM_LIST_UNLINK(q->head, q->tail, w);
  w->queue = NULL;
  q->len--;
}

loom_waiter_t *loom_waitq_shift(loom_waitq_t *q) {
  loom_waiter_t *w = q->head;
  if (w)
    loom_waiter_unlink(w);
  return w;
}

void loom_waitq_wake_all(loom_waitq_t *q, int status) {
  loom_waiter_t *w;
  /* Shift before waking: a wake callback may unlink other waiters from this
   * very queue (a select waiting on one channel twice). */
  while ((w = loom_waitq_shift(q)) != NULL)
    w->wake(w, status);
}
