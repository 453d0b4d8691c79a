/* A message decoded while it is encoded (xstream.h says why and how). */
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#include "codec.h"
#include "spin.h"
#include "xstream.h"

/* Address space a stream reserves: the largest message that can stream.
 * Reserving costs no memory, only page tables for what is touched. */
#define RESERVE ((size_t)1 << 32)
/* Pages are made writable at least this many bytes at a time, doubling. */
#define GROW_MIN ((size_t)1 << 20)
/* How long a receiver that caught up watches for more before it sleeps:
 * the sender publishes every few tens of microseconds while it runs. */
#define WATCH_NS 50000

lm_xstream *lm_xstream_new(void) {
  if (sizeof(void *) < 8)
    return NULL; /* no address space to spare */
  lm_xstream *s = calloc(1, sizeof *s);
  if (s == NULL)
    return NULL;
  if (uv_mutex_init(&s->lock) != 0) {
    free(s);
    return NULL;
  }
  if (uv_cond_init(&s->cond) != 0) {
    uv_mutex_destroy(&s->lock);
    free(s);
    return NULL;
  }
  /* An anonymous mapping takes fd -1 (cppcheck expects a file). */
  // cppcheck-suppress invalidFunctionArg
  void *p = mmap(NULL, RESERVE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    uv_cond_destroy(&s->cond);
    uv_mutex_destroy(&s->lock);
    free(s);
    return NULL;
  }
  s->base = p;
  s->reserved = RESERVE;
  atomic_init(&s->refs, 1);
  return s;
}

void lm_xstream_ref(lm_xstream *s) { atomic_fetch_add(&s->refs, 1); }

void lm_xstream_unref(lm_xstream *s) {
  if (s == NULL || atomic_fetch_sub(&s->refs, 1) != 1)
    return;
  if (atomic_load(&s->state) == LM_XSTREAM_DONE)
    lm_xbuf_release_chans(s->base, atomic_load(&s->published));
  munmap(s->base, s->reserved);
  free(s->err);
  uv_cond_destroy(&s->cond);
  uv_mutex_destroy(&s->lock);
  free(s);
}

int lm_xstream_grow(lm_xstream *s, size_t want) {
  if (want <= s->mapped)
    return 0;
  if (want > s->reserved)
    return -1;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t to = s->mapped ? s->mapped : GROW_MIN;
  while (to < want)
    to *= 2;
  if (to > s->reserved)
    to = s->reserved;
  to = (to + page - 1) / page * page;
  if (mprotect(s->base + s->mapped, to - s->mapped, PROT_READ | PROT_WRITE) != 0)
    return -1;
  s->mapped = to;
  return 0;
}

/* After a change the receivers look at: wakes those asleep. A receiver
 * counts itself in sleepers before it looks again under the lock, and the
 * change was stored before sleepers is read here (both sequentially
 * consistent), so one of the two sees the other. */
static void wake(lm_xstream *s) {
  if (atomic_load(&s->sleepers) == 0)
    return;
  uv_mutex_lock(&s->lock);
  uv_cond_broadcast(&s->cond);
  uv_mutex_unlock(&s->lock);
}

void lm_xstream_publish(lm_xstream *s, size_t n) {
  atomic_store(&s->published, n);
  wake(s);
}

void lm_xstream_done(lm_xstream *s, size_t n) {
  atomic_store(&s->published, n);
  atomic_store(&s->state, LM_XSTREAM_DONE);
  wake(s);
}

void lm_xstream_fail(lm_xstream *s, char *err, size_t err_len) {
  uv_mutex_lock(&s->lock);
  int open = atomic_load(&s->state) == LM_XSTREAM_OPEN;
  if (open) {
    s->err = err;
    s->err_len = err_len;
    atomic_store(&s->state, LM_XSTREAM_FAILED);
  }
  uv_mutex_unlock(&s->lock);
  if (!open) {
    lm_xbuf_free(err, err_len);
    return;
  }
  wake(s);
}

int lm_xstream_state(lm_xstream *s) { return atomic_load(&s->state); }

size_t lm_xstream_wait(lm_xstream *s, size_t want) {
  uint64_t start = 0;
  for (unsigned i = 1;; i++) {
    size_t got = atomic_load_explicit(&s->published, memory_order_acquire);
    if (got >= want)
      return got;
    if (atomic_load(&s->state) != LM_XSTREAM_OPEN)
      return atomic_load(&s->published);
    if (i % LOOM_SPIN_CLOCK_EVERY == 0) {
      uint64_t now = uv_hrtime();
      if (start == 0)
        start = now;
      else if (now - start > WATCH_NS)
        break;
    }
    loom_spin_pause();
  }
  uv_mutex_lock(&s->lock);
  atomic_fetch_add(&s->sleepers, 1);
  while (atomic_load(&s->published) < want && atomic_load(&s->state) == LM_XSTREAM_OPEN)
    uv_cond_wait(&s->cond, &s->lock);
  atomic_fetch_sub(&s->sleepers, 1);
  uv_mutex_unlock(&s->lock);
  return atomic_load(&s->published);
}
