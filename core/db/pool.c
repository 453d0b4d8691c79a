/* The connection pool (see pool.h for what it promises). */
#include <stdlib.h>
#include <string.h>
#include "list.h"
#include "pool.h"

enum { PC_CONNECTING, PC_IDLE, PC_IN_USE, PC_RESETTING, PC_VALIDATING };

typedef struct pool_conn {
  loom_pool_t *pool;
  loom_db_conn_t *conn;
  struct pool_conn *prev, *next; /* idle list, most recently used first */
  int state;
  uint64_t idle_since_ns;
  uint64_t retire_ns;
  loom_db_req_t req; /* connect, reset or ping */
} pool_conn;

struct loom_pool {
  loom_loop_t *loop;
  const loom_db_driver_t *driver;
  char *conninfo;
  loom_pool_config_t cfg;
  pool_conn *idle_head, *idle_tail;
  loom_waitq_t waiters;
  int total;      /* every connection, connecting ones included */
  int draining;   /* closed, counted in loop->draining until freed */
  int nidle, in_use, connecting, busy; /* busy: resetting or validating */
  loom_pool_stats_t stats;
  int closing;
  uint64_t backoff_ns;
  uint64_t next_connect_ns;
  loom_timer_t backoff_timer;
  loom_timer_t deadline_timer; /* the oldest waiter's acquire deadline */
  loom_db_error_t last_err;
  uint64_t rng;
  uv_timer_t *trim_timer; /* unreferenced: never keeps the loop alive */
};

void loom_pool_config_default(loom_pool_config_t *cfg) {
  cfg->min = 0;
  cfg->max = 10;
  cfg->acquire_timeout_ns = 10ull * 1000000000ull;
  cfg->validate_idle_ns = 1000000000ull;
  cfg->max_lifetime_ns = 30ull * 60 * 1000000000ull;
  cfg->max_idle_ns = 10ull * 60 * 1000000000ull;
  cfg->backoff_min_ns = 50ull * 1000000ull;
  cfg->backoff_max_ns = 5ull * 1000000000ull;
  cfg->role = LOOM_DB_ROLE_ANY;
}

static double random01(loom_pool_t *p) {
  uint64_t x = p->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  p->rng = x;
  return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

static void grow(loom_pool_t *p);
static void serve(loom_pool_t *p);
static void maybe_free_pool(loom_pool_t *p);
static void arm_trim(loom_pool_t *p);

/* ---- idle list ------------------------------------------------------------ */

static void idle_push(loom_pool_t *p, pool_conn *pc) {
  pc->state = PC_IDLE;
  pc->idle_since_ns = loom_now_ns();
  LOOM_LIST_PREPEND(p->idle_head, p->idle_tail, pc);
  p->nidle++;
}

static void idle_remove(loom_pool_t *p, pool_conn *pc) {
  LOOM_LIST_UNLINK(p->idle_head, p->idle_tail, pc);
  p->nidle--;
}

static void close_conn(loom_pool_t *p, pool_conn *pc) {
  if (pc->conn) {
    pc->conn->data = NULL;
    p->driver->close(pc->conn);
    pc->conn = NULL;
  }
  loom_db_error_clear(&pc->req.err);
  free(pc);
  p->total--;
  p->stats.closed++;
}

/* Idle connections beyond `min` that sat unused too long go first: they
 * hold server resources for nothing. */
static void trim_idle(loom_pool_t *p) {
  uint64_t now = loom_now_ns();
  while (p->idle_tail && p->total > p->cfg.min &&
         now - p->idle_tail->idle_since_ns >= p->cfg.max_idle_ns) {
    pool_conn *pc = p->idle_tail;
    idle_remove(p, pc);
    close_conn(p, pc);
  }
}

/* Trimming must also happen in a pool nobody calls: a timer for when the
 * least recently used idle connection expires. It is a libuv timer of its
 * own, unreferenced, so an idle pool never keeps the loop running. */
static void trim_fired(uv_timer_t *h) {
  loom_pool_t *p = h->data;
  trim_idle(p);
  arm_trim(p);
}

static void arm_trim(loom_pool_t *p) {
  if (p->closing || p->idle_tail == NULL || p->total <= p->cfg.min ||
      p->cfg.max_idle_ns >= LOOM_POOL_NEVER)
    return;
  if (p->trim_timer == NULL) {
    uv_timer_t *t = malloc(sizeof *t);
    if (t == NULL || uv_timer_init(&p->loop->uv, t) != 0) {
      free(t);
      return;
    }
    uv_unref((uv_handle_t *)t);
    t->data = p;
    p->trim_timer = t;
  } else if (uv_is_active((uv_handle_t *)p->trim_timer)) {
    return; /* it re-arms for the then oldest one when it fires */
  }
  uint64_t now = loom_now_ns();
  uint64_t due = p->idle_tail->idle_since_ns + p->cfg.max_idle_ns;
  uint64_t ms = due > now ? (due - now + 999999u) / 1000000u : 0;
  uv_update_time(&p->loop->uv);
  uv_timer_start(p->trim_timer, trim_fired, ms, 0);
}

static void free_handle(uv_handle_t *h) { free(h); }

/* ---- handing connections to waiters ------------------------------------------ */

/* Called with req already out of the queue. */
static void complete(loom_pool_req_t *req, int status) {
  loom_pool_t *p = req->pool;
  if (p->waiters.len == 0)
    loom_timer_stop(p->loop, &p->deadline_timer);
  req->status = status;
  p->stats.wait_ns += loom_now_ns() - req->started_ns;
  req->cb(req);
}

/* Every waiter of a pool has the same timeout and the queue is in arrival
 * order, so deadlines come in queue order: one timer, aimed at the oldest
 * waiter's deadline, stands for them all. A timer per waiter cost a heap
 * insertion and removal per hand-off, and each removal re-aimed the loop's
 * libuv timer (the waiter served always held the earliest deadline). The
 * timer is left alone when its waiter is served or leaves: it then fires
 * early, finds the new oldest waiter not yet due and aims at it. It stops
 * when the queue empties, so it never keeps the loop alive for nobody. */
static void arm_deadline(loom_pool_t *p) {
  if (p->waiters.len == 0 || loom_timer_active(&p->deadline_timer) ||
      p->cfg.acquire_timeout_ns >= LOOM_POOL_NEVER)
    return;
  loom_pool_req_t *oldest = p->waiters.head->data;
  uint64_t due = oldest->started_ns + p->cfg.acquire_timeout_ns;
  uint64_t now = loom_now_ns();
  loom_timer_start(p->loop, &p->deadline_timer, due > now ? due - now : 0);
}

static void deadline_passed(loom_timer_t *t) {
  loom_pool_t *p = t->data;
  /* The loop fires a timer up to a millisecond early (its clock's step):
   * a waiter due by the time this one was set for is due now, as its own
   * timer would have been. */
  uint64_t now = loom_now_ns();
  uint64_t due = t->due_ns > now ? t->due_ns : now;
  while (p->waiters.head) {
    loom_pool_req_t *req = p->waiters.head->data;
    if (req->started_ns + p->cfg.acquire_timeout_ns > due)
      break;
    loom_waitq_shift(&p->waiters);
    p->stats.timeouts++;
    complete(req, LOOM_ETIMEDOUT);
  }
  arm_deadline(p);
}

static void hand_over(loom_pool_t *p, pool_conn *pc, loom_pool_req_t *req) {
  pc->state = PC_IN_USE;
  p->in_use++;
  p->stats.acquired++;
  req->conn = pc->conn;
}

static void validated(loom_db_req_t *dreq) {
  pool_conn *pc = dreq->data;
  loom_pool_t *p = pc->pool;
  p->busy--;
  loom_db_result_free(dreq->result); /* the ping's empty result */
  dreq->result = NULL;
  if (dreq->status != 0 || p->closing || pc->conn->broken) {
    close_conn(p, pc);
  } else {
    idle_push(p, pc);
  }
  serve(p);
  maybe_free_pool(p);
}

/* The next idle connection ready to hand out, or NULL. Stale ones start a
 * validation (and come back through serve), old ones are retired. */
static pool_conn *take_idle(loom_pool_t *p) {
  uint64_t now = loom_now_ns();
  while (p->idle_head) {
    pool_conn *pc = p->idle_head;
    idle_remove(p, pc);
    if (now >= pc->retire_ns || pc->conn->broken) {
      close_conn(p, pc);
      continue;
    }
    if (now - pc->idle_since_ns >= p->cfg.validate_idle_ns) {
      pc->state = PC_VALIDATING;
      memset(&pc->req, 0, sizeof pc->req);
      pc->req.op = LOOM_DB_PING;
      pc->req.cb = validated;
      pc->req.data = pc;
      p->busy++;
      if (p->driver->start(pc->conn, &pc->req) != 0) {
        p->busy--;
        close_conn(p, pc);
      }
      continue;
    }
    return pc;
  }
  return NULL;
}

static void serve(loom_pool_t *p) {
  while (p->waiters.len > 0) {
    pool_conn *pc = take_idle(p);
    if (pc == NULL)
      break;
    loom_pool_req_t *req = loom_waitq_shift(&p->waiters)->data;
    hand_over(p, pc, req);
    complete(req, 0);
  }
  grow(p);
  arm_trim(p);
}

/* ---- connecting ---------------------------------------------------------------- */

static void fail_waiters(loom_pool_t *p) {
  loom_waiter_t *w;
  while ((w = loom_waitq_shift(&p->waiters)) != NULL) {
    loom_pool_req_t *req = w->data;
    loom_db_error_set(&req->err, p->last_err.code, p->last_err.message);
    complete(req, LOOM_EDB_CONNECTION);
  }
}

static void connected(loom_db_req_t *dreq) {
  pool_conn *pc = dreq->data;
  loom_pool_t *p = pc->pool;
  p->connecting--;
  if (dreq->status != 0) {
    loom_db_error_set(&p->last_err, dreq->err.code, dreq->err.message);
    p->stats.failed_connects++;
    loom_db_error_clear(&dreq->err);
    free(pc);
    p->total--;
    /* Back off, with jitter, so a down server is not hammered. */
    uint64_t b = p->backoff_ns ? p->backoff_ns * 2 : p->cfg.backoff_min_ns;
    p->backoff_ns = b > p->cfg.backoff_max_ns ? p->cfg.backoff_max_ns : b;
    p->next_connect_ns = loom_now_ns() + (uint64_t)(p->backoff_ns * (0.5 + 0.5 * random01(p)));
    /* Nobody else can serve the waiters soon: tell them why now rather
     * than at their deadline. */
    if (p->in_use == 0 && p->nidle == 0 && p->connecting == 0 && p->busy == 0)
      fail_waiters(p);
    grow(p);
    maybe_free_pool(p);
    return;
  }
  p->backoff_ns = 0;
  p->stats.created++;
  pc->conn = dreq->conn;
  pc->conn->data = pc;
  double jitter = 1.0 - 0.1 * random01(p);
  pc->retire_ns = p->cfg.max_lifetime_ns >= LOOM_POOL_NEVER
                      ? UINT64_MAX
                      : loom_now_ns() + (uint64_t)((double)p->cfg.max_lifetime_ns * jitter);
  if (p->closing) {
    close_conn(p, pc);
    maybe_free_pool(p);
    return;
  }
  idle_push(p, pc);
  serve(p);
}

static void backoff_over(loom_timer_t *t) { grow(t->data); }

static void start_connect(loom_pool_t *p) {
  pool_conn *pc = calloc(1, sizeof *pc);
  if (pc == NULL)
    return;
  pc->pool = p;
  pc->state = PC_CONNECTING;
  pc->req.op = LOOM_DB_CONNECT;
  pc->req.role = p->cfg.role;
  pc->req.cb = connected;
  pc->req.data = pc;
  p->total++;
  p->connecting++;
  if (p->driver->connect(p->loop, p->conninfo, &pc->req) != 0) {
    /* Failed before starting (a malformed URL): as a failed connect. */
    pc->req.status = pc->req.status ? pc->req.status : LOOM_EDB_CONNECTION;
    connected(&pc->req);
  }
}

static void grow(loom_pool_t *p) {
  if (p->closing)
    return;
  for (;;) {
    int wanted = (int)p->waiters.len - p->connecting - p->busy;
    if (p->total < p->cfg.min)
      wanted = wanted > 1 ? wanted : 1;
    if (wanted <= 0 || p->total >= p->cfg.max)
      return;
    uint64_t now = loom_now_ns();
    if (now < p->next_connect_ns) {
      if (!loom_timer_active(&p->backoff_timer) && p->waiters.len > 0)
        loom_timer_start(p->loop, &p->backoff_timer, p->next_connect_ns - now);
      return;
    }
    int before = p->total;
    start_connect(p);
    if (p->total == before && p->next_connect_ns > loom_now_ns())
      return; /* it failed at once and armed a backoff */
    if (p->total == before)
      return;
  }
}

/* ---- the public calls ----------------------------------------------------------- */

loom_pool_t *loom_pool_new(loom_loop_t *loop, const loom_db_driver_t *driver,
                           const char *conninfo, const loom_pool_config_t *cfg) {
  loom_pool_t *p = calloc(1, sizeof *p);
  if (p == NULL)
    return NULL;
  size_t n = strlen(conninfo) + 1;
  p->conninfo = malloc(n);
  if (p->conninfo == NULL) {
    free(p);
    return NULL;
  }
  memcpy(p->conninfo, conninfo, n);
  p->loop = loop;
  p->driver = driver;
  p->cfg = *cfg;
  if (p->cfg.max < 1)
    p->cfg.max = 1;
  if (p->cfg.min > p->cfg.max)
    p->cfg.min = p->cfg.max;
  loom_waitq_init(&p->waiters);
  loom_timer_init(&p->backoff_timer, backoff_over, p);
  loom_timer_init(&p->deadline_timer, deadline_passed, p);
  p->rng = loom_now_ns() ^ (uint64_t)(uintptr_t)p ^ 0x9E3779B97F4A7C15ULL;
  grow(p);
  return p;
}

int loom_pool_acquire(loom_pool_t *p, loom_pool_req_t *req) {
  req->pool = p;
  req->conn = NULL;
  req->status = 0;
  req->started_ns = loom_now_ns();
  loom_waiter_init(&req->waiter, NULL, req);
  if (p->closing)
    return req->status = LOOM_ECLOSED;
  trim_idle(p);
  if (p->waiters.len == 0) {
    pool_conn *pc = take_idle(p);
    if (pc) {
      hand_over(p, pc, req);
      return 0;
    }
  }
  loom_waitq_push(&p->waiters, &req->waiter);
  arm_deadline(p);
  grow(p);
  if (req->waiter.queue == NULL)
    return req->status == 0 && req->conn ? 0 : req->status;
  return LOOM_EAGAIN;
}

void loom_pool_cancel(loom_pool_req_t *req) {
  loom_pool_t *p = req->pool;
  if (p == NULL || !loom_waiter_queued(&req->waiter))
    return;
  loom_waiter_unlink(&req->waiter);
  if (p->waiters.len == 0)
    loom_timer_stop(p->loop, &p->deadline_timer);
}

static void reset_done(loom_db_req_t *dreq) {
  pool_conn *pc = dreq->data;
  loom_pool_t *p = pc->pool;
  p->busy--;
  loom_db_result_free(dreq->result);
  dreq->result = NULL;
  if (dreq->status != 0 || p->closing || pc->conn->broken ||
      p->driver->txn(pc->conn) != LOOM_TXN_IDLE) {
    close_conn(p, pc);
  } else {
    idle_push(p, pc);
  }
  serve(p);
  maybe_free_pool(p);
}

void loom_pool_release(loom_pool_t *p, loom_db_conn_t *conn) {
  pool_conn *pc = conn->data;
  if (pc == NULL || pc->state != PC_IN_USE)
    return;
  p->in_use--;
  loom_db_txn_t txn = p->driver->txn(conn);
  if (p->closing || conn->broken || conn->req != NULL || txn == LOOM_TXN_UNKNOWN ||
      loom_now_ns() >= pc->retire_ns) {
    close_conn(p, pc);
  } else if (txn != LOOM_TXN_IDLE || conn->dirty) {
    /* Never hand the next user an open transaction or session state. */
    pc->state = PC_RESETTING;
    loom_db_error_clear(&pc->req.err);
    memset(&pc->req, 0, sizeof pc->req);
    pc->req.op = LOOM_DB_RESET;
    pc->req.cb = reset_done;
    pc->req.data = pc;
    p->busy++;
    if (p->driver->start(conn, &pc->req) != 0) {
      p->busy--;
      close_conn(p, pc);
    }
  } else {
    idle_push(p, pc);
  }
  serve(p);
  maybe_free_pool(p);
}

void loom_pool_discard(loom_pool_t *p, loom_db_conn_t *conn) {
  conn->broken = 1;
  loom_pool_release(p, conn);
}

void loom_pool_stats(const loom_pool_t *p, loom_pool_stats_t *out) {
  *out = p->stats;
  out->total = p->total;
  out->idle = p->nidle;
  out->in_use = p->in_use;
  out->waiting = (int64_t)p->waiters.len;
  out->connecting = p->connecting;
}

static void maybe_free_pool(loom_pool_t *p) {
  if (!p->closing || p->total > 0)
    return;
  if (p->draining)
    p->loop->draining--;
  loom_timer_stop(p->loop, &p->backoff_timer);
  loom_timer_stop(p->loop, &p->deadline_timer);
  if (p->trim_timer)
    uv_close((uv_handle_t *)p->trim_timer, free_handle);
  loom_db_error_clear(&p->last_err);
  free(p->conninfo);
  free(p);
}

void loom_pool_close(loom_pool_t *p) {
  if (p->closing)
    return;
  p->closing = 1;
  loom_timer_stop(p->loop, &p->backoff_timer);
  loom_timer_stop(p->loop, &p->deadline_timer);
  loom_waiter_t *w;
  while ((w = loom_waitq_shift(&p->waiters)) != NULL)
    complete(w->data, LOOM_ECLOSED);
  while (p->idle_head) {
    pool_conn *pc = p->idle_head;
    idle_remove(p, pc);
    close_conn(p, pc);
  }
  if (p->total > 0) {
    p->draining = 1;
    p->loop->draining++;
  }
  maybe_free_pool(p);
}
