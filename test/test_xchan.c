/* Cross-thread channels: order, capacity, backpressure across threads,
 * close, waiter removal (also of a wake-up already on its way), and many
 * producers and consumers on their own threads and loops. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>
#include "runner.h"
#include "xchan.h"

#define MS 1000000u

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define PER_PRODUCER 5000
#else
#define PER_PRODUCER 20000
#endif

static _Atomic int freed;

static void free_msg(void *msg, size_t len) {
  ASSERT_EQ(len, sizeof(int64_t));
  atomic_fetch_add(&freed, 1);
  free(msg);
}

static int64_t *msg_new(int64_t v) {
  int64_t *m = malloc(sizeof *m);
  ASSERT(m != NULL);
  *m = v;
  return m;
}

/* A loop and its hub: what each thread that waits on channels has. */
typedef struct {
  loom_loop_t loop;
  loom_xhub_t *hub;
} side_t;

static void side_init(side_t *s) {
  ASSERT_EQ(loom_loop_init(&s->loop), 0);
  s->hub = loom_xhub_new(&s->loop);
  ASSERT(s->hub != NULL);
}

static void side_close(side_t *s) {
  loom_xhub_free(s->hub);
  ASSERT_EQ(loom_loop_close(&s->loop), 0);
}

typedef struct {
  loom_xwaiter_t w;
  int woken;
  int status;
} flag_t;

static void flag_wake(loom_xwaiter_t *w, int status) {
  flag_t *f = w->data;
  ASSERT(!loom_xwaiter_registered(w));
  f->woken++;
  f->status = status;
}

static void flag_init(flag_t *f) {
  memset(f, 0, sizeof *f);
  loom_xwaiter_init(&f->w, flag_wake, f);
}

static void wait_woken(side_t *s, flag_t *f) {
  uint64_t deadline = loom_now_ns() + 10000 * (uint64_t)MS;
  while (!f->woken) {
    ASSERT(loom_now_ns() < deadline);
    loom_loop_poll(&s->loop, 50);
  }
}

/* Waits on the loop until the channel may serve that side. */
static void wait_turn(side_t *s, loom_xchan_t *ch, int send) {
  flag_t f;
  flag_init(&f);
  if (send)
    loom_xchan_wait_send(ch, s->hub, &f.w);
  else
    loom_xchan_wait_recv(ch, s->hub, &f.w);
  wait_woken(s, &f);
}

/* A task's send and receive: try, and wait on the loop when it cannot. */
static int send_wait(side_t *s, loom_xchan_t *ch, int64_t v, int *waited) {
  int64_t *m = msg_new(v);
  for (;;) {
    int r = loom_xchan_try_send(ch, m, sizeof *m);
    if (r == 0)
      return 0;
    if (r == LOOM_ECLOSED) {
      free(m);
      return r;
    }
    ASSERT_EQ(r, LOOM_EAGAIN);
    wait_turn(s, ch, 1);
    if (waited)
      (*waited)++;
  }
}

static int recv_wait(side_t *s, loom_xchan_t *ch, int64_t *v) {
  for (;;) {
    void *m;
    size_t len;
    int r = loom_xchan_try_recv(ch, &m, &len);
    if (r == 0) {
      ASSERT_EQ(len, sizeof(int64_t));
      *v = *(int64_t *)m;
      free(m);
      return 0;
    }
    if (r == LOOM_ECLOSED)
      return r;
    ASSERT_EQ(r, LOOM_EAGAIN);
    wait_turn(s, ch, 0);
  }
}

TEST_IMPL(xchan_order) {
  loom_xchan_t *ch;
  ASSERT_EQ(loom_xchan_new(&ch, 0, free_msg), UV_EINVAL);
  /* Past the ring's first size, so it grows while holding messages. */
  ASSERT_EQ(loom_xchan_new(&ch, 40, free_msg), 0);
  ASSERT_EQ(loom_xchan_cap(ch), 40);
  void *m;
  size_t len;
  ASSERT_EQ(loom_xchan_try_recv(ch, &m, &len), LOOM_EAGAIN);
  int64_t next = 0, want = 0;
  for (int round = 0; round < 3; round++) {
    /* Receive a few between sends so the ring wraps before it grows. */
    while (loom_xchan_len(ch) < 40) {
      ASSERT_EQ(loom_xchan_try_send(ch, msg_new(next), sizeof(int64_t)), 0);
      next++;
      if (next % 7 == 0) {
        ASSERT_EQ(loom_xchan_try_recv(ch, &m, &len), 0);
        ASSERT_EQ(*(int64_t *)m, want);
        want++;
        free(m);
      }
    }
    int64_t *extra = msg_new(-1);
    ASSERT_EQ(loom_xchan_try_send(ch, extra, sizeof *extra), LOOM_EAGAIN);
    free(extra);
    for (int i = 0; i < 25; i++) {
      ASSERT_EQ(loom_xchan_try_recv(ch, &m, &len), 0);
      ASSERT_EQ(len, sizeof(int64_t));
      ASSERT_EQ(*(int64_t *)m, want);
      want++;
      free(m);
    }
  }
  while (loom_xchan_try_recv(ch, &m, &len) == 0) {
    ASSERT_EQ(*(int64_t *)m, want);
    want++;
    free(m);
  }
  ASSERT_EQ(want, next);
  ASSERT_EQ(loom_xchan_len(ch), 0);
  loom_xchan_unref(ch);
  ASSERT_EQ(atomic_load(&freed), 0);
}

/* ---- backpressure across threads ---------------------------------------- */

typedef struct {
  loom_xchan_t *ch;
  _Atomic int sent;
  int waited;
  int n;
} producer_t;

static void *produce(void *arg) {
  producer_t *p = arg;
  side_t s;
  side_init(&s);
  for (int i = 0; i < p->n; i++) {
    ASSERT_EQ(send_wait(&s, p->ch, i, &p->waited), 0);
    atomic_fetch_add(&p->sent, 1);
  }
  side_close(&s);
  return NULL;
}

static void wait_sent(producer_t *p, int want) {
  uint64_t deadline = loom_now_ns() + 10000 * (uint64_t)MS;
  while (atomic_load(&p->sent) < want) {
    ASSERT(loom_now_ns() < deadline);
    usleep(1000);
  }
}

TEST_IMPL(xchan_backpressure) {
  side_t s;
  side_init(&s);
  producer_t p = {0};
  p.n = 200;
  ASSERT_EQ(loom_xchan_new(&p.ch, 2, free_msg), 0);
  pthread_t th;
  ASSERT_EQ(pthread_create(&th, NULL, produce, &p), 0);
  wait_sent(&p, 2);
  /* Full: the producer waits and sends nothing more. */
  usleep(30000);
  ASSERT_EQ(atomic_load(&p.sent), 2);
  ASSERT_EQ(loom_xchan_len(p.ch), 2);
  int64_t v;
  ASSERT_EQ(recv_wait(&s, p.ch, &v), 0);
  ASSERT_EQ(v, 0);
  /* Taking one lets it go on, up to full again. */
  wait_sent(&p, 3);
  usleep(10000);
  ASSERT_EQ(atomic_load(&p.sent), 3);
  for (int i = 1; i < p.n; i++) {
    ASSERT_EQ(recv_wait(&s, p.ch, &v), 0);
    ASSERT_EQ(v, i);
  }
  ASSERT_EQ(pthread_join(th, NULL), 0);
  ASSERT(p.waited >= 1);
  void *m;
  size_t len;
  ASSERT_EQ(loom_xchan_try_recv(p.ch, &m, &len), LOOM_EAGAIN);
  loom_xchan_unref(p.ch);
  side_close(&s);
}

/* ---- close ---------------------------------------------------------------- */

TEST_IMPL(xchan_close) {
  side_t s;
  side_init(&s);
  loom_xchan_t *empty, *full;
  ASSERT_EQ(loom_xchan_new(&empty, 1, free_msg), 0);
  ASSERT_EQ(loom_xchan_new(&full, 4, free_msg), 0);
  for (int i = 0; i < 4; i++)
    ASSERT_EQ(loom_xchan_try_send(full, msg_new(i), sizeof(int64_t)), 0);
  flag_t r, w;
  flag_init(&r);
  flag_init(&w);
  loom_xchan_wait_recv(empty, s.hub, &r.w);
  loom_xchan_wait_send(full, s.hub, &w.w);
  ASSERT(loom_xwaiter_registered(&r.w) && loom_xwaiter_registered(&w.w));
  loom_loop_poll(&s.loop, 0);
  ASSERT_EQ(r.woken + w.woken, 0);

  ASSERT_EQ(loom_xchan_close(empty), 0);
  ASSERT_EQ(loom_xchan_close(empty), LOOM_ECLOSED);
  ASSERT_EQ(loom_xchan_close(full), 0);
  wait_woken(&s, &r);
  wait_woken(&s, &w);
  ASSERT_EQ(r.status, LOOM_ECLOSED);
  ASSERT_EQ(w.status, LOOM_ECLOSED);
  ASSERT_EQ(r.woken, 1);
  ASSERT_EQ(w.woken, 1);

  /* Sending fails and leaves the message with the caller. */
  int64_t *late = msg_new(99);
  ASSERT_EQ(loom_xchan_try_send(full, late, sizeof *late), LOOM_ECLOSED);
  free(late);
  /* What was sent stays receivable; then closed. */
  void *m;
  size_t len;
  ASSERT_EQ(loom_xchan_try_recv(full, &m, &len), 0);
  ASSERT_EQ(*(int64_t *)m, 0);
  free(m);
  ASSERT_EQ(loom_xchan_try_recv(empty, &m, &len), LOOM_ECLOSED);

  /* Waiting on a closed channel wakes at once. */
  flag_t again;
  flag_init(&again);
  loom_xchan_wait_recv(empty, s.hub, &again.w);
  wait_woken(&s, &again);
  ASSERT_EQ(again.status, LOOM_ECLOSED);

  /* The three messages left are freed with the channel. */
  loom_xchan_unref(empty);
  loom_xchan_unref(full);
  ASSERT_EQ(atomic_load(&freed), 3);
  ASSERT(!loom_loop_alive(&s.loop));
  side_close(&s);
}

/* ---- removing waiters ---------------------------------------------------- */

TEST_IMPL(xchan_unwait) {
  side_t s;
  side_init(&s);
  loom_xchan_t *ch;
  void *m;
  size_t len;
  ASSERT_EQ(loom_xchan_new(&ch, 4, free_msg), 0);
  flag_t f;

  /* Queued: removed, and a later send wakes nobody. */
  flag_init(&f);
  loom_xchan_wait_recv(ch, s.hub, &f.w);
  ASSERT(loom_loop_alive(&s.loop));
  ASSERT_EQ(loom_xchan_unwait(&f.w), 1);
  ASSERT(!loom_xwaiter_registered(&f.w));
  ASSERT(!loom_loop_alive(&s.loop));
  ASSERT_EQ(loom_xchan_try_send(ch, msg_new(1), sizeof(int64_t)), 0);
  loom_loop_poll(&s.loop, 10);
  ASSERT_EQ(f.woken, 0);
  ASSERT_EQ(loom_xchan_try_recv(ch, &m, &len), 0);
  free(m);

  /* Woken but not yet delivered: the wake-up is withdrawn. */
  flag_init(&f);
  loom_xchan_wait_recv(ch, s.hub, &f.w);
  ASSERT_EQ(loom_xchan_try_send(ch, msg_new(2), sizeof(int64_t)), 0);
  ASSERT_EQ(loom_xchan_unwait(&f.w), 1);
  loom_loop_poll(&s.loop, 10);
  loom_loop_poll(&s.loop, 0);
  ASSERT_EQ(f.woken, 0);
  ASSERT(!loom_loop_alive(&s.loop));

  /* Delivered: nothing left to remove. */
  flag_init(&f);
  loom_xchan_wait_recv(ch, s.hub, &f.w);
  wait_woken(&s, &f);
  ASSERT_EQ(f.status, 0);
  ASSERT_EQ(loom_xchan_unwait(&f.w), 0);
  ASSERT_EQ(loom_xchan_try_recv(ch, &m, &len), 0);
  ASSERT_EQ(*(int64_t *)m, 2);
  free(m);
  loom_xchan_unref(ch);
  side_close(&s);
}

/* A select waits on two channels; the first wake-up delivered drops the
 * other case, even though its wake-up was already posted. */
typedef struct {
  flag_t cases[2];
  int picked;
} select_t;

static void select_wake(loom_xwaiter_t *w, int status) {
  select_t *sel = w->data;
  int i = w == &sel->cases[0].w ? 0 : 1;
  sel->cases[i].woken++;
  sel->picked = i;
  ASSERT_EQ(loom_xchan_unwait(&sel->cases[1 - i].w), 1);
}

TEST_IMPL(xchan_select_drops_other_case) {
  side_t s;
  side_init(&s);
  loom_xchan_t *ch[2];
  select_t sel;
  memset(&sel, 0, sizeof sel);
  for (int i = 0; i < 2; i++) {
    ASSERT_EQ(loom_xchan_new(&ch[i], 1, free_msg), 0);
    loom_xwaiter_init(&sel.cases[i].w, select_wake, &sel);
    loom_xchan_wait_recv(ch[i], s.hub, &sel.cases[i].w);
  }
  ASSERT_EQ(loom_xchan_try_send(ch[1], msg_new(1), sizeof(int64_t)), 0);
  ASSERT_EQ(loom_xchan_try_send(ch[0], msg_new(0), sizeof(int64_t)), 0);
  uint64_t deadline = loom_now_ns() + 10000 * (uint64_t)MS;
  while (sel.cases[0].woken + sel.cases[1].woken == 0) {
    ASSERT(loom_now_ns() < deadline);
    loom_loop_poll(&s.loop, 10);
  }
  loom_loop_poll(&s.loop, 10);
  ASSERT_EQ(sel.cases[0].woken + sel.cases[1].woken, 1);
  /* Woken in the order the channels changed. */
  ASSERT_EQ(sel.picked, 1);
  ASSERT(!loom_loop_alive(&s.loop));
  /* Both messages are still there; the channels free them. */
  loom_xchan_unref(ch[0]);
  loom_xchan_unref(ch[1]);
  ASSERT_EQ(atomic_load(&freed), 2);
  side_close(&s);
}

/* Freeing a hub unwaits its waiters, queued or with a wake-up posted, and
 * the posted wake-up runs into nothing. */
TEST_IMPL(xchan_hub_free_with_waiters) {
  loom_loop_t loop;
  loom_test_loop_init(&loop);
  loom_xhub_t *hub = loom_xhub_new(&loop);
  ASSERT(hub != NULL);
  loom_xchan_t *ch;
  ASSERT_EQ(loom_xchan_new(&ch, 1, free_msg), 0);
  flag_t queued, posted;
  flag_init(&queued);
  flag_init(&posted);
  ASSERT_EQ(loom_xchan_try_send(ch, msg_new(7), sizeof(int64_t)), 0);
  loom_xchan_wait_send(ch, hub, &queued.w);
  loom_xchan_wait_recv(ch, hub, &posted.w);
  loom_xhub_free(hub);
  ASSERT(!loom_xwaiter_registered(&queued.w));
  ASSERT(!loom_xwaiter_registered(&posted.w));
  loom_loop_poll(&loop, 0);
  ASSERT_EQ(queued.woken + posted.woken, 0);
  loom_xchan_unref(ch);
  ASSERT_EQ(atomic_load(&freed), 1);
  loom_test_loop_close(&loop);
}

/* ---- many producers and consumers ----------------------------------------- */

#define PRODUCERS 4
#define CONSUMERS 4

typedef struct {
  loom_xchan_t *ch;
  int id;
  int64_t count, sum;
  int out_of_order;
} worker_t;

/* Every thread's loop exists before any closes: libuv closes descriptors
 * with a raw syscall ThreadSanitizer does not see (google/sanitizers#1376),
 * so a number closed on one thread and reused on another looks like a race
 * on the descriptor. */
static pthread_barrier_t all_open;

static void *produce_many(void *arg) {
  worker_t *w = arg;
  side_t s;
  side_init(&s);
  pthread_barrier_wait(&all_open);
  for (int64_t i = 0; i < PER_PRODUCER; i++)
    ASSERT_EQ(send_wait(&s, w->ch, (int64_t)w->id * PER_PRODUCER + i + 1, NULL), 0);
  side_close(&s);
  return NULL;
}

static void *consume_many(void *arg) {
  worker_t *w = arg;
  side_t s;
  int64_t last[PRODUCERS] = {0}, v;
  side_init(&s);
  pthread_barrier_wait(&all_open);
  while (recv_wait(&s, w->ch, &v) == 0) {
    int from = (int)((v - 1) / PER_PRODUCER);
    /* Each producer's messages reach every consumer in their order. */
    if (v <= last[from])
      w->out_of_order++;
    last[from] = v;
    w->count++;
    w->sum += v;
  }
  side_close(&s);
  return NULL;
}

TEST_IMPL(xchan_many_threads) {
  loom_xchan_t *ch;
  ASSERT_EQ(loom_xchan_new(&ch, 8, free_msg), 0);
  worker_t prod[PRODUCERS], cons[CONSUMERS];
  pthread_t pt[PRODUCERS], ct[CONSUMERS];
  ASSERT_EQ(pthread_barrier_init(&all_open, NULL, PRODUCERS + CONSUMERS), 0);
  for (int i = 0; i < CONSUMERS; i++) {
    cons[i] = (worker_t){ch, i, 0, 0, 0};
    ASSERT_EQ(pthread_create(&ct[i], NULL, consume_many, &cons[i]), 0);
  }
  for (int i = 0; i < PRODUCERS; i++) {
    prod[i] = (worker_t){ch, i, 0, 0, 0};
    ASSERT_EQ(pthread_create(&pt[i], NULL, produce_many, &prod[i]), 0);
  }
  for (int i = 0; i < PRODUCERS; i++)
    ASSERT_EQ(pthread_join(pt[i], NULL), 0);
  ASSERT_EQ(loom_xchan_close(ch), 0);
  int64_t count = 0, sum = 0;
  for (int i = 0; i < CONSUMERS; i++) {
    ASSERT_EQ(pthread_join(ct[i], NULL), 0);
    ASSERT_EQ(cons[i].out_of_order, 0);
    count += cons[i].count;
    sum += cons[i].sum;
  }
  pthread_barrier_destroy(&all_open);
  int64_t n = (int64_t)PRODUCERS * PER_PRODUCER;
  ASSERT_EQ(count, n);
  ASSERT_EQ(sum, n * (n + 1) / 2);
  loom_xchan_unref(ch);
  ASSERT_EQ(atomic_load(&freed), 0);
}

/* Waiters registered and removed while another thread sends: a removed
 * waiter is never woken, and no message is lost. */
#define RACE_MSGS 3000

static void *send_fast(void *arg) {
  loom_xchan_t *ch = arg;
  for (int64_t i = 0; i < RACE_MSGS; i++) {
    int64_t *m = msg_new(i);
    int r;
    while ((r = loom_xchan_try_send(ch, m, sizeof *m)) == LOOM_EAGAIN)
      sched_yield();
    ASSERT_EQ(r, 0);
  }
  return NULL;
}

TEST_IMPL(xchan_unwait_race) {
  side_t s;
  side_init(&s);
  loom_xchan_t *ch;
  ASSERT_EQ(loom_xchan_new(&ch, 1, free_msg), 0);
  pthread_t th;
  ASSERT_EQ(pthread_create(&th, NULL, send_fast, ch), 0);
  int64_t next = 0;
  uint64_t deadline = loom_now_ns() + 15000 * (uint64_t)MS;
  for (unsigned turn = 0; next < RACE_MSGS; turn++) {
    ASSERT(loom_now_ns() < deadline);
    flag_t f;
    flag_init(&f);
    loom_xchan_wait_recv(ch, s.hub, &f.w);
    if (turn % 3 != 0) {
      /* Let a wake-up be posted, or not, then withdraw it. */
      uint64_t until = loom_now_ns() + (turn % 40) * 1000;
      while (loom_now_ns() < until)
        ;
      if (turn % 3 == 2)
        loom_loop_poll(&s.loop, 0);
      if (loom_xchan_unwait(&f.w) == 1) {
        loom_loop_poll(&s.loop, 0);
        ASSERT_EQ(f.woken, 0);
      } else {
        ASSERT_EQ(f.woken, 1);
      }
    } else {
      wait_woken(&s, &f);
    }
    ASSERT(!loom_xwaiter_registered(&f.w));
    void *m;
    size_t len;
    while (loom_xchan_try_recv(ch, &m, &len) == 0) {
      ASSERT_EQ(*(int64_t *)m, next);
      next++;
      free(m);
    }
  }
  ASSERT_EQ(pthread_join(th, NULL), 0);
  ASSERT(!loom_loop_alive(&s.loop));
  loom_xchan_unref(ch);
  side_close(&s);
}
