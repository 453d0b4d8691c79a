/* loom core: event loop, timers, waiter queues and channels.
 *
 * Plain C on libuv. Nothing here knows about Lua: values carried by channels
 * are opaque 64-bit items that the binding gives meaning to, and every
 * operation that can wait takes a waiter whose callback the core invokes when
 * the wait ends. Callbacks only record the outcome; they never run user code,
 * so the core's own data structures are consistent whenever one fires.
 */
#ifndef LOOM_H
#define LOOM_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include "spin.h"

/* Status codes: 0 is success, errors are negative, as in libuv. */
enum {
  LOOM_OK = 0,
  LOOM_EAGAIN = UV_EAGAIN,       /* would have to wait */
  LOOM_ETIMEDOUT = UV_ETIMEDOUT, /* a deadline passed */
  LOOM_ECANCELED = UV_ECANCELED, /* the waiter was cancelled */
  LOOM_ECLOSED = UV_EPIPE,       /* the object was closed */
  LOOM_ENOMEM = UV_ENOMEM,
  LOOM_EOVERFLOW = UV_EOVERFLOW  /* a count left its range */
};

const char *loom_strerror(int status);

/* ---- waiter queues ---------------------------------------------------- */

typedef struct loom_waiter loom_waiter_t;
typedef struct loom_waitq loom_waitq_t;
typedef void (*loom_wake_cb)(loom_waiter_t *w, int status);

struct loom_waiter {
  loom_waiter_t *next;
  loom_waiter_t *prev;
  loom_waitq_t *queue; /* NULL while not queued */
  loom_wake_cb wake;
  int64_t item;        /* what a channel hands over, in either direction */
  void *data;          /* the owner's */
};

struct loom_waitq {
  loom_waiter_t *head;
  loom_waiter_t *tail;
  size_t len;
};

void loom_waiter_init(loom_waiter_t *w, loom_wake_cb wake, void *data);
void loom_waitq_init(loom_waitq_t *q);
void loom_waitq_push(loom_waitq_t *q, loom_waiter_t *w);
loom_waiter_t *loom_waitq_shift(loom_waitq_t *q);
/* Unlinks w from whatever queue holds it; a no-op when it is not queued. */
void loom_waiter_unlink(loom_waiter_t *w);
/* Unlinks every waiter and calls its wake callback with status. */
void loom_waitq_wake_all(loom_waitq_t *q, int status);

static inline int loom_waiter_queued(const loom_waiter_t *w) {
  return w->queue != NULL;
}

/* ---- loop and timers ---------------------------------------------------- */

typedef struct loom_loop loom_loop_t;
typedef struct loom_timer loom_timer_t;
typedef void (*loom_timer_cb)(loom_timer_t *t);
typedef void (*loom_loop_wake_cb)(loom_loop_t *loop);

/* A timer is a heap entry, not a libuv handle: arming and stopping cost no
 * allocation and no close callback, so a waiter can embed one and drop it
 * synchronously. One libuv timer per loop is armed at the earliest deadline. */
struct loom_timer {
  uint64_t due_ns;
  uint64_t seq; /* arming order: equal deadlines fire first-armed first */
  unsigned pos; /* index in the heap + 1; 0 while not armed */
  loom_timer_cb cb;
  void *data;
};

struct loom_loop {
  uv_loop_t uv;
  uv_timer_t heap_timer;  /* fires at the earliest heap deadline */
  uv_timer_t poll_timer;  /* bounds one loom_loop_poll */
  uv_async_t wakeup;      /* other threads poke the loop through it */
  loom_timer_t **heap;
  unsigned heap_len;
  unsigned heap_cap;
  uint64_t armed_due_ns;  /* deadline heap_timer is set for, 0 if stopped */
  uint64_t timer_seq;     /* next loom_timer.seq */
  loom_loop_wake_cb on_wake;
  void *data;
  int initialized;
  /* Work handed back by other threads (loom_loop_post): a lock-free stack
   * they push on, and the async handle that wakes the loop for it. */
  uv_async_t posted;
  struct loom_post *_Atomic post_stack;
  _Atomic int spinning;   /* the loop is watching post_stack: no wake needed */
  _Atomic int poster_cpu; /* the core of the thread that posted last */
  int64_t expecting;      /* posts announced by loom_loop_expect, not yet run */
  uint64_t last_run_ns;   /* when libuv last polled, to keep I/O and timers fair */
  uint64_t poll_end_ns;   /* when loom_loop_poll last returned */
  loom_spin_t spin;       /* how long a poll watches post_stack before it sleeps */
  int64_t posts_run;      /* how many posts ran, ever */
  int draining;           /* objects closed but still finishing I/O (a pool's
                           * connects): loom_loop_close lets them end */
};

/* Work another thread finished, to be completed on the loop thread. */
typedef struct loom_post loom_post_t;
struct loom_post {
  loom_post_t *next;
  void (*cb)(loom_post_t *p); /* runs on the loop thread */
};

int loom_loop_init(loom_loop_t *loop);
/* Closes every handle on the loop (also ones other layers left open), runs
 * their close callbacks and releases the loop. Safe to call twice. Returns
 * uv_loop_close's verdict, so tests can prove nothing was left behind. */
int loom_loop_close(loom_loop_t *loop);
/* One libuv iteration that waits at most timeout_ms for I/O or timers
 * (0: never wait, negative: until something happens). Returns nonzero while
 * anything is pending on the loop. */
int loom_loop_poll(loom_loop_t *loop, int64_t timeout_ms);
/* When loom_loop_poll last returned (uv_hrtime's clock): read there once,
 * for whoever times the work that follows a poll. */
uint64_t loom_loop_poll_end_ns(const loom_loop_t *loop);
/* Nonzero while a timer is armed or a handle or request is active. */
int loom_loop_alive(const loom_loop_t *loop);
/* The backend file descriptor, for a host that polls it itself. */
int loom_loop_fd(const loom_loop_t *loop);
/* How long a host may wait on the backend fd before it must poll the loop:
 * 0 when work is due or libuv holds work the fd does not announce (interest
 * not yet handed to the kernel, pending or close callbacks), else the
 * milliseconds to the next timer, -1 if none. */
int64_t loom_loop_next_timeout(loom_loop_t *loop);
/* Thread-safe: makes a blocked loom_loop_poll return and, on the loop
 * thread, calls loop->on_wake. */
int loom_loop_wake(loom_loop_t *loop);
/* Thread-safe: p->cb runs on the loop thread soon, in posting order per
 * thread. */
void loom_loop_post(loom_loop_t *loop, loom_post_t *p);
/* Loop thread: n more (or, negative, fewer) posts are on their way. While
 * any are expected the loop stays alive, and a poll that would block first
 * spins briefly for them: a worker thread's answer in microseconds then
 * costs no wake-up through the kernel on either side. */
void loom_loop_expect(loom_loop_t *loop, int64_t n);
/* Loop thread: runs what other threads posted, now, without polling
 * libuv; returns how many ran. */
int loom_loop_run_posts(loom_loop_t *loop);
uint64_t loom_now_ns(void);

void loom_timer_init(loom_timer_t *t, loom_timer_cb cb, void *data);
int loom_timer_start(loom_loop_t *loop, loom_timer_t *t, uint64_t delay_ns);
void loom_timer_stop(loom_loop_t *loop, loom_timer_t *t);
size_t loom_timer_count(const loom_loop_t *loop);

static inline int loom_timer_active(const loom_timer_t *t) {
  return t->pos != 0;
}

/* ---- channels ----------------------------------------------------------- */

/* A bounded FIFO of opaque items with FIFO-fair waiting senders and
 * receivers. Capacity 0 is a rendezvous: a send completes only when a
 * receiver takes the item. */
typedef struct loom_chan {
  int64_t *buf;
  size_t cap;
  size_t len;
  size_t head;
  int closed;
  loom_waitq_t senders;   /* waiter->item holds the item offered */
  loom_waitq_t receivers; /* waiter->item receives the item */
  loom_waitq_t enders;    /* told when it closes or is destroyed */
} loom_chan_t;

int loom_chan_init(loom_chan_t *ch, size_t cap);
/* Frees the buffer. Waiters still queued are unlinked without being woken
 * (those of loom_chan_watch_end are woken); items left in the buffer are
 * the owner's to release before this. */
void loom_chan_destroy(loom_chan_t *ch);
/* Queues w to be woken with LOOM_ECLOSED when the channel closes or is
 * destroyed, whichever comes first: for what feeds a channel and must
 * stop once nobody can read it, without holding it alive. Unlink w to
 * stop watching. Look at ch->closed first: a closed channel wakes nobody
 * again. */
void loom_chan_watch_end(loom_chan_t *ch, loom_waiter_t *w);
/* 0: delivered or buffered. LOOM_EAGAIN: would wait. LOOM_ECLOSED. */
int loom_chan_try_send(loom_chan_t *ch, int64_t item);
/* 0: *item set. LOOM_EAGAIN: empty. LOOM_ECLOSED: closed and drained. */
int loom_chan_try_recv(loom_chan_t *ch, int64_t *item);
/* Queue a waiter after the try_ call said LOOM_EAGAIN. It is woken with 0
 * once the item was taken (send) or handed over in w->item (recv), or with
 * LOOM_ECLOSED when the channel closes. */
void loom_chan_wait_send(loom_chan_t *ch, loom_waiter_t *w);
void loom_chan_wait_recv(loom_chan_t *ch, loom_waiter_t *w);
/* Closes the channel: waiting receivers and senders are woken with
 * LOOM_ECLOSED; buffered items stay receivable. LOOM_ECLOSED if it was. */
int loom_chan_close(loom_chan_t *ch);
/* Pops one buffered item regardless of closing, for draining on destroy. */
int loom_chan_drain_one(loom_chan_t *ch, int64_t *item);

static inline size_t loom_chan_len(const loom_chan_t *ch) { return ch->len; }

/* ---- sync primitives ---------------------------------------------------- */

/* Counting semaphore with FIFO waiters. A release hands its permit straight
 * to the longest waiter, so a late arrival can never barge ahead. */
typedef struct loom_sem {
  int64_t count;
  int64_t max; /* releasing beyond this is a bug in the caller */
  loom_waitq_t waiters;
} loom_sem_t;

void loom_sem_init(loom_sem_t *s, int64_t count);
/* 0: acquired. LOOM_EAGAIN: would wait (then loom_sem_wait). */
int loom_sem_try_acquire(loom_sem_t *s);
/* Queue w; it is woken with 0 once it holds a permit. */
void loom_sem_wait(loom_sem_t *s, loom_waiter_t *w);
/* 0, or LOOM_EOVERFLOW when every permit is already back. */
int loom_sem_release(loom_sem_t *s);
/* Unlinks waiters without waking them, for destroying a semaphore. */
void loom_sem_destroy(loom_sem_t *s);

/* A flag that tasks wait to see set; setting wakes every waiter. */
typedef struct loom_event {
  int is_set;
  loom_waitq_t waiters;
} loom_event_t;

void loom_event_init(loom_event_t *e);
void loom_event_set(loom_event_t *e);
void loom_event_clear(loom_event_t *e);
/* Queue w after finding the flag clear; woken with 0 when it is set. */
void loom_event_wait(loom_event_t *e, loom_waiter_t *w);
void loom_event_destroy(loom_event_t *e);

/* A counter of outstanding work; waiters wake when it drops to zero. */
typedef struct loom_waitgroup {
  int64_t count;
  loom_waitq_t waiters;
} loom_waitgroup_t;

void loom_waitgroup_init(loom_waitgroup_t *wg);
/* Adds delta (negative for done). LOOM_EOVERFLOW if the count would go
 * below zero or past INT64_MAX, which leaves it unchanged. */
int loom_waitgroup_add(loom_waitgroup_t *wg, int64_t delta);
void loom_waitgroup_wait(loom_waitgroup_t *wg, loom_waiter_t *w);
void loom_waitgroup_destroy(loom_waitgroup_t *wg);

#endif
