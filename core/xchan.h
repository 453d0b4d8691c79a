/* A channel between threads: a refcounted, bounded FIFO of messages (a
 * malloc'd buffer and its length, opaque to loom) behind one mutex, with
 * waiters that are woken on their own loop's thread.
 *
 * Waiting. A waiter does not receive anything: it is told that the state
 * it waits for may have come (a message to take, room to send into, the
 * channel closed), and its side then tries again. Each send into the
 * channel wakes every waiting receiver, each receive every waiting sender,
 * so no waiter ever sleeps while the channel could serve it, whoever took
 * the message in between and whatever a woken waiter then decides (a
 * select that took another case). A waiter is registered under the
 * channel's mutex after checking the state, so a change between a failed
 * try_ and the registration wakes it at once: no wake-up is lost.
 *
 * Capacity is at least 1. A rendezvous (0) would need each message to be
 * handed to one particular receiver and its sender told that this receiver
 * took it, two cross-thread wake-ups per message and a message stranded in
 * a waiter whose task is cancelled meanwhile; channel(0) semantics belong
 * to the single-thread loom_chan_t.
 *
 * Wake-ups travel through a hub, one per loop that waits on channels: the
 * hub is posted to its loop once (loom_loop_post) however many of its
 * waiters are woken, and delivers them one by one on the loop thread. A
 * wake-up not yet delivered can still be withdrawn, so removing a waiter
 * is synchronous: once loom_xchan_unwait returns, its callback will not
 * run and its memory is the owner's again. While a waiter is registered
 * its loop is kept alive (loom_loop_expect): another thread may wake it.
 *
 * Which thread may call what:
 * - loom_xchan_new, _ref, _unref, _try_send, _try_recv, _close, _len,
 *   _closed: any.
 * - loom_xhub_new, loom_xhub_free, loom_xchan_wait_*, loom_xchan_unwait:
 *   the hub's loop thread only.
 * - A wake callback runs on the hub's loop thread. It may unwait other
 *   waiters (a select dropping its other cases), try_ and register again;
 *   it must not free the hub.
 * - A hub must be freed before its loop closes (loom_xhub_free unwaits
 *   whatever is still registered through it): nothing is ever posted to a
 *   loop that has gone. */
#ifndef LOOM_XCHAN_H
#define LOOM_XCHAN_H

#include "loom.h"

typedef struct loom_xchan loom_xchan_t;
typedef struct loom_xhub loom_xhub_t;
typedef struct loom_xwaiter loom_xwaiter_t;
/* status: 0 (try again) or LOOM_ECLOSED (the channel is closed: a receiver
 * still gets the messages left in it). */
typedef void (*loom_xwake_cb)(loom_xwaiter_t *w, int status);
typedef void (*loom_xmsg_free_cb)(void *msg, size_t len);

/* Embedded by the owner; the fields after data belong to the channel. */
struct loom_xwaiter {
  loom_xwake_cb wake;
  void *data;

  loom_xwaiter_t *next, *prev;         /* in a channel's queue or hub's ready list */
  loom_xwaiter_t *reg_next, *reg_prev; /* in the hub's registered list */
  loom_xchan_t *chan;                  /* non-NULL while registered */
  loom_xhub_t *hub;
  int where;                           /* under the channel's (and hub's) lock */
  int status;
};

void loom_xwaiter_init(loom_xwaiter_t *w, loom_xwake_cb wake, void *data);
static inline int loom_xwaiter_registered(const loom_xwaiter_t *w) {
  return w->chan != NULL;
}

/* LOOM_ENOMEM, UV_EINVAL for capacity 0, or 0 with *out holding the one
 * reference. free_msg (may be NULL) frees messages left in the channel
 * when it is freed. */
int loom_xchan_new(loom_xchan_t **out, size_t cap, loom_xmsg_free_cb free_msg);
void loom_xchan_ref(loom_xchan_t *ch);
/* The last reference frees the channel and what is left in it. */
void loom_xchan_unref(loom_xchan_t *ch);

/* 0: the channel owns msg now. LOOM_EAGAIN: full. LOOM_ECLOSED. On error
 * msg stays the caller's. */
int loom_xchan_try_send(loom_xchan_t *ch, void *msg, size_t len);
/* 0: *msg and *len set, the caller owns msg. LOOM_EAGAIN: empty.
 * LOOM_ECLOSED: closed and drained. */
int loom_xchan_try_recv(loom_xchan_t *ch, void **msg, size_t *len);
/* Wakes every waiter with LOOM_ECLOSED; messages stay receivable. 0, or
 * LOOM_ECLOSED when it was closed already. */
int loom_xchan_close(loom_xchan_t *ch);
size_t loom_xchan_len(loom_xchan_t *ch);
/* Whether close was called (messages may still be in it). */
int loom_xchan_closed(loom_xchan_t *ch);
size_t loom_xchan_cap(const loom_xchan_t *ch);

/* Registers w (not registered now) to be woken once the channel has room
 * (send), a message (recv), or is closed; at once if it has already. The
 * waiter holds a reference to the channel while registered. */
void loom_xchan_wait_send(loom_xchan_t *ch, loom_xhub_t *hub, loom_xwaiter_t *w);
void loom_xchan_wait_recv(loom_xchan_t *ch, loom_xhub_t *hub, loom_xwaiter_t *w);
/* Unregisters w, also when its wake-up is on its way: afterwards its
 * callback will not run. 1 if it was registered, 0 if not (its callback
 * has run). */
int loom_xchan_unwait(loom_xwaiter_t *w);

/* NULL without memory. */
loom_xhub_t *loom_xhub_new(loom_loop_t *loop);
/* Unwaits every waiter still registered through the hub and frees it (once
 * a wake-up already posted to the loop has run, if one is). */
void loom_xhub_free(loom_xhub_t *hub);

#endif
