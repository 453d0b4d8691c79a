/* Channels: a ring buffer plus two waiter queues. A waiting peer is always
 * served before the buffer is touched, so the buffer is never non-empty
 * while receivers wait, nor non-full while senders wait. */
#include <stdlib.h>
#include "loom.h"

int loom_chan_init(loom_chan_t *ch, size_t cap) {
  ch->buf = NULL;
  if (cap > 0) {
    ch->buf = malloc(cap * sizeof *ch->buf);
    if (ch->buf == NULL)
      return LOOM_ENOMEM;
  }
  ch->cap = cap;
  ch->len = ch->head = 0;
  ch->closed = 0;
  loom_waitq_init(&ch->senders);
  loom_waitq_init(&ch->receivers);
  loom_waitq_init(&ch->enders);
  return 0;
}

void loom_chan_destroy(loom_chan_t *ch) {
  while (loom_waitq_shift(&ch->senders) != NULL) {}
  while (loom_waitq_shift(&ch->receivers) != NULL) {}
  loom_waitq_wake_all(&ch->enders, LOOM_ECLOSED);
  free(ch->buf);
  ch->buf = NULL;
  ch->cap = ch->len = 0;
}

static void push_item(loom_chan_t *ch, int64_t item) {
  ch->buf[(ch->head + ch->len) % ch->cap] = item;
  ch->len++;
}

static int64_t pop_item(loom_chan_t *ch) {
  int64_t item = ch->buf[ch->head];
  ch->head = (ch->head + 1) % ch->cap;
  ch->len--;
  return item;
}

int loom_chan_try_send(loom_chan_t *ch, int64_t item) {
  if (ch->closed)
    return LOOM_ECLOSED;
  loom_waiter_t *r = loom_waitq_shift(&ch->receivers);
  if (r) {
    r->item = item;
    r->wake(r, LOOM_OK);
    return LOOM_OK;
  }
  if (ch->len < ch->cap) {
    push_item(ch, item);
    return LOOM_OK;
  }
  return LOOM_EAGAIN;
}

int loom_chan_try_recv(loom_chan_t *ch, int64_t *item) {
  if (ch->len > 0) {
    *item = pop_item(ch);
    /* The slot just freed goes to the longest-waiting sender. */
    loom_waiter_t *s = loom_waitq_shift(&ch->senders);
    if (s) {
      push_item(ch, s->item);
      s->wake(s, LOOM_OK);
    }
    return LOOM_OK;
  }
  loom_waiter_t *s = loom_waitq_shift(&ch->senders);
  if (s) {
    *item = s->item;
    s->wake(s, LOOM_OK);
    return LOOM_OK;
  }
  return ch->closed ? LOOM_ECLOSED : LOOM_EAGAIN;
}

void loom_chan_wait_send(loom_chan_t *ch, loom_waiter_t *w) {
  loom_waitq_push(&ch->senders, w);
}

void loom_chan_wait_recv(loom_chan_t *ch, loom_waiter_t *w) {
  loom_waitq_push(&ch->receivers, w);
}

int loom_chan_close(loom_chan_t *ch) {
  if (ch->closed)
    return LOOM_ECLOSED;
  ch->closed = 1;
  loom_waitq_wake_all(&ch->receivers, LOOM_ECLOSED);
  loom_waitq_wake_all(&ch->senders, LOOM_ECLOSED);
  loom_waitq_wake_all(&ch->enders, LOOM_ECLOSED);
  return LOOM_OK;
}

void loom_chan_watch_end(loom_chan_t *ch, loom_waiter_t *w) {
  loom_waitq_push(&ch->enders, w);
}

int loom_chan_drain_one(loom_chan_t *ch, int64_t *item) {
  if (ch->len == 0)
    return LOOM_EAGAIN;
  *item = pop_item(ch);
  return LOOM_OK;
}
