/* Cross-thread channels and the hubs that carry their wake-ups. Locks are
 * taken channel first, then hub: a wake moves a waiter from the channel's
 * queue to the hub's ready list under both, so a waiter is always in
 * exactly one place and unwait finds it there. */
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include "list.h"
#include "xchan.h"

enum { NOWHERE, SENDING, RECEIVING, READY };

/* The ring starts small and doubles up to the capacity: a channel(1e6)
 * costs its memory only once it holds that much. */
#define RING_MIN 16

typedef struct {
  void *msg;
  size_t len;
} slot_t;

struct loom_xchan {
  uv_mutex_t lock;
  _Atomic int refs;
  loom_xmsg_free_cb free_msg;
  size_t cap;     /* the bound */
  size_t size;    /* slots allocated */
  size_t len;
  size_t head;
  slot_t *ring;
  int closed;
  loom_xwaiter_t *senders, *receivers; /* waiting, under lock */
};

struct loom_xhub {
  uv_mutex_t lock;
  loom_loop_t *loop;
  loom_post_t post;
  loom_xwaiter_t *ready, *ready_tail; /* under lock */
  int posted;                         /* under lock: post is in the loop's stack */
  int dying;                          /* under lock: free once post has run */
  loom_xwaiter_t *registered;         /* loop thread only */
};

void loom_xwaiter_init(loom_xwaiter_t *w, loom_xwake_cb wake, void *data) {
  w->wake = wake;
  w->data = data;
  w->next = w->prev = w->reg_next = w->reg_prev = NULL;
  w->chan = NULL;
  w->hub = NULL;
  w->where = NOWHERE;
  w->status = 0;
}

/* ---- hub -------------------------------------------------------------- */

static void hub_destroy(loom_xhub_t *hub) {
  uv_mutex_destroy(&hub->lock);
  free(hub);
}

/* Channel's lock held: w leaves the channel's queue for the hub. */
static void make_ready(loom_xwaiter_t *w, int status) {
  loom_xhub_t *hub = w->hub;
  w->status = status;
  uv_mutex_lock(&hub->lock);
  w->where = READY;
  LOOM_LIST_APPEND(hub->ready, hub->ready_tail, w);
  if (!hub->posted) {
    hub->posted = 1;
    loom_loop_post(hub->loop, &hub->post);
  }
  uv_mutex_unlock(&hub->lock);
}

static void unregister(loom_xhub_t *hub, loom_xwaiter_t *w) {
  if (w->reg_prev)
    w->reg_prev->reg_next = w->reg_next;
  else
    hub->registered = w->reg_next;
  if (w->reg_next)
    w->reg_next->reg_prev = w->reg_prev;
  w->reg_next = w->reg_prev = NULL;
  w->chan = NULL;
  w->hub = NULL;
  loom_loop_expect(hub->loop, -1);
}

/* Delivers one waiter at a time, taking it under the lock, so a callback
 * can still withdraw any other waiter's wake-up. */
static void hub_posted(loom_post_t *p) {
  loom_xhub_t *hub = (loom_xhub_t *)((char *)p - offsetof(loom_xhub_t, post));
  for (;;) {
    uv_mutex_lock(&hub->lock);
    loom_xwaiter_t *w = hub->ready;
    if (w == NULL) {
      hub->posted = 0;
      int dying = hub->dying;
      uv_mutex_unlock(&hub->lock);
      if (dying)
        hub_destroy(hub);
      return;
    }
    LOOM_LIST_UNLINK(hub->ready, hub->ready_tail, w);
    w->where = NOWHERE;
    uv_mutex_unlock(&hub->lock);
    loom_xchan_t *ch = w->chan;
    unregister(hub, w);
    w->wake(w, w->status);
    loom_xchan_unref(ch);
  }
}

loom_xhub_t *loom_xhub_new(loom_loop_t *loop) {
  loom_xhub_t *hub = calloc(1, sizeof *hub);
  if (hub == NULL)
    return NULL;
  if (uv_mutex_init(&hub->lock) != 0) {
    free(hub);
    return NULL;
  }
  hub->loop = loop;
  hub->post.cb = hub_posted;
  return hub;
}

void loom_xhub_free(loom_xhub_t *hub) {
  while (hub->registered)
    loom_xchan_unwait(hub->registered);
  uv_mutex_lock(&hub->lock);
  int posted = hub->posted;
  hub->dying = posted;
  uv_mutex_unlock(&hub->lock);
  if (!posted)
    hub_destroy(hub);
}

/* ---- channel ---------------------------------------------------------- */

int loom_xchan_new(loom_xchan_t **out, size_t cap, loom_xmsg_free_cb free_msg) {
  if (cap == 0)
    return UV_EINVAL;
  loom_xchan_t *ch = calloc(1, sizeof *ch);
  if (ch == NULL)
    return LOOM_ENOMEM;
  ch->size = cap < RING_MIN ? cap : RING_MIN;
  ch->ring = malloc(ch->size * sizeof *ch->ring);
  if (ch->ring == NULL || uv_mutex_init(&ch->lock) != 0) {
    free(ch->ring);
    free(ch);
    return LOOM_ENOMEM;
  }
  ch->cap = cap;
  ch->free_msg = free_msg;
  atomic_init(&ch->refs, 1);
  *out = ch;
  return 0;
}

void loom_xchan_ref(loom_xchan_t *ch) { atomic_fetch_add(&ch->refs, 1); }

void loom_xchan_unref(loom_xchan_t *ch) {
  if (atomic_fetch_sub(&ch->refs, 1) != 1)
    return;
  /* No waiter is left: each holds a reference while registered. */
  for (size_t i = 0; i < ch->len; i++) {
    slot_t *s = &ch->ring[(ch->head + i) % ch->size];
    if (ch->free_msg)
      ch->free_msg(s->msg, s->len);
  }
  uv_mutex_destroy(&ch->lock);
  free(ch->ring);
  free(ch);
}

static void wake_all(loom_xwaiter_t **queue, int status) {
  loom_xwaiter_t *w;
  while ((w = *queue) != NULL) {
    LOOM_SET_REMOVE(*queue, w);
    make_ready(w, status);
  }
}

/* Lock held, len == size < cap: doubles the ring, unrolling it. */
static int grow(loom_xchan_t *ch) {
  size_t size = ch->size * 2 < ch->cap ? ch->size * 2 : ch->cap;
  slot_t *ring = malloc(size * sizeof *ring);
  if (ring == NULL)
    return LOOM_ENOMEM;
  for (size_t i = 0; i < ch->len; i++)
    ring[i] = ch->ring[(ch->head + i) % ch->size];
  free(ch->ring);
  ch->ring = ring;
  ch->size = size;
  ch->head = 0;
  return 0;
}

int loom_xchan_try_send(loom_xchan_t *ch, void *msg, size_t len) {
  int r = 0;
  uv_mutex_lock(&ch->lock);
  if (ch->closed)
    r = LOOM_ECLOSED;
  else if (ch->len == ch->cap)
    r = LOOM_EAGAIN;
  else if (ch->len == ch->size)
    r = grow(ch);
  if (r == 0) {
    slot_t *s = &ch->ring[(ch->head + ch->len) % ch->size];
    s->msg = msg;
    s->len = len;
    ch->len++;
    wake_all(&ch->receivers, 0);
  }
  uv_mutex_unlock(&ch->lock);
  return r;
}

int loom_xchan_try_recv(loom_xchan_t *ch, void **msg, size_t *len) {
  int r = 0;
  uv_mutex_lock(&ch->lock);
  if (ch->len > 0) {
    slot_t *s = &ch->ring[ch->head];
    *msg = s->msg;
    *len = s->len;
    ch->head = (ch->head + 1) % ch->size;
    ch->len--;
    wake_all(&ch->senders, 0);
  } else {
    r = ch->closed ? LOOM_ECLOSED : LOOM_EAGAIN;
  }
  uv_mutex_unlock(&ch->lock);
  return r;
}

int loom_xchan_close(loom_xchan_t *ch) {
  int r = 0;
  uv_mutex_lock(&ch->lock);
  if (ch->closed) {
    r = LOOM_ECLOSED;
  } else {
    ch->closed = 1;
    wake_all(&ch->receivers, LOOM_ECLOSED);
    wake_all(&ch->senders, LOOM_ECLOSED);
  }
  uv_mutex_unlock(&ch->lock);
  return r;
}

size_t loom_xchan_len(loom_xchan_t *ch) {
  uv_mutex_lock(&ch->lock);
  size_t len = ch->len;
  uv_mutex_unlock(&ch->lock);
  return len;
}

size_t loom_xchan_cap(const loom_xchan_t *ch) { return ch->cap; }

int loom_xchan_closed(loom_xchan_t *ch) {
  uv_mutex_lock(&ch->lock);
  int closed = ch->closed;
  uv_mutex_unlock(&ch->lock);
  return closed;
}

static void wait_for(loom_xchan_t *ch, loom_xhub_t *hub, loom_xwaiter_t *w,
                     int send) {
  loom_xchan_ref(ch);
  w->chan = ch;
  w->hub = hub;
  w->reg_prev = NULL;
  w->reg_next = hub->registered;
  if (hub->registered)
    hub->registered->reg_prev = w;
  hub->registered = w;
  loom_loop_expect(hub->loop, 1);
  uv_mutex_lock(&ch->lock);
  if (ch->closed)
    make_ready(w, LOOM_ECLOSED);
  else if (send ? ch->len < ch->cap : ch->len > 0)
    make_ready(w, 0);
  else {
    w->where = send ? SENDING : RECEIVING;
    /* No order among them: everyone is woken. */
    if (send)
      LOOM_SET_ADD(ch->senders, w);
    else
      LOOM_SET_ADD(ch->receivers, w);
  }
  uv_mutex_unlock(&ch->lock);
}

void loom_xchan_wait_send(loom_xchan_t *ch, loom_xhub_t *hub, loom_xwaiter_t *w) {
  wait_for(ch, hub, w, 1);
}

void loom_xchan_wait_recv(loom_xchan_t *ch, loom_xhub_t *hub, loom_xwaiter_t *w) {
  wait_for(ch, hub, w, 0);
}

int loom_xchan_unwait(loom_xwaiter_t *w) {
  loom_xchan_t *ch = w->chan;
  if (ch == NULL)
    return 0;
  loom_xhub_t *hub = w->hub;
  uv_mutex_lock(&ch->lock);
  if (w->where == SENDING || w->where == RECEIVING) {
    if (w->where == SENDING)
      LOOM_SET_REMOVE(ch->senders, w);
    else
      LOOM_SET_REMOVE(ch->receivers, w);
  } else {
    uv_mutex_lock(&hub->lock);
    if (w->where == READY)
      LOOM_LIST_UNLINK(hub->ready, hub->ready_tail, w);
    uv_mutex_unlock(&hub->lock);
  }
  w->where = NOWHERE;
  uv_mutex_unlock(&ch->lock);
  unregister(hub, w);
  loom_xchan_unref(ch);
  return 1;
}
