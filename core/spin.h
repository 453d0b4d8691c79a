/* How long a thread that waits for another's answer (the loop for a
 * lane's or a worker's, a lane or a worker for the next job) watches for
 * it before it sleeps in the kernel. A hand-off through the kernel (a
 * futex or an eventfd, a context switch) costs several microseconds, more
 * than a short statement, so a waiter first spins. That pays only while
 * the other thread has a core of its own. When it has not (the two share
 * a core, or other processes keep the cores busy) the spin only keeps it
 * off the core, and a sched_yield() would hand the core to whichever
 * thread the kernel picks, a CPU-bound neighbour for a whole time slice:
 * once per hand-off that made 4 reads on a reader 250 times slower beside
 * two busy loops. So a spin never yields, and its budget adapts:
 *   - the answer came while spinning: it doubles (up to the maximum);
 *   - it came after the waiter slept, from a thread on another core, and
 *     soon enough that a spin of the maximum would have seen it: it
 *     doubles too (a budget worn down by long jobs comes back);
 *   - otherwise (from the waiter's own core: the spin kept it waiting; or
 *     late: spinning would not have helped) it halves, down to a few
 *     turns, and the waiter sleeps almost at once. */
#ifndef LOOM_SPIN_H
#define LOOM_SPIN_H

#include <stdint.h>
#include <uv.h>

#define LOOM_SPIN_MAX_NS 50000u
#define LOOM_SPIN_MIN_NS 250u

typedef struct loom_spin {
  uint32_t budget_ns;
  int cpu;             /* where the waiter was when its budget ran out */
  uint64_t slept_at;   /* when it did, 0: it is not asleep */
} loom_spin_t;

/* The core the calling thread runs on, -1 when unknown. Cheap on Linux
 * (glibc reads it from the thread's rseq area). */
int loom_spin_cpu(void);

static inline void loom_spin_init(loom_spin_t *s) {
  s->budget_ns = LOOM_SPIN_MAX_NS;
  s->cpu = -1;
  s->slept_at = 0;
}

/* The answer came while spinning (or was there already). */
static inline void loom_spin_found(loom_spin_t *s) {
  uint32_t b = s->budget_ns * 2;
  s->budget_ns = b > LOOM_SPIN_MAX_NS ? LOOM_SPIN_MAX_NS : b;
}

static inline void loom_spin_shrink(loom_spin_t *s) {
  uint32_t b = s->budget_ns / 2;
  s->budget_ns = b < LOOM_SPIN_MIN_NS ? LOOM_SPIN_MIN_NS : b;
}

/* The budget ran out at `now`: the waiter goes to sleep. */
static inline void loom_spin_missed(loom_spin_t *s, uint64_t now) {
  s->cpu = loom_spin_cpu();
  s->slept_at = now;
}

/* After a sleep that loom_spin_missed began, the answer came at `now`
 * from a thread on core their_cpu (-1: unknown). */
static inline void loom_spin_woken_at(loom_spin_t *s, int their_cpu, uint64_t now) {
  if (s->slept_at == 0)
    return;
  uint64_t waited = now - s->slept_at + s->budget_ns;
  s->slept_at = 0;
  if ((their_cpu < 0 || their_cpu != s->cpu) && waited <= LOOM_SPIN_MAX_NS)
    loom_spin_found(s);
  else
    loom_spin_shrink(s);
}

static inline void loom_spin_woken(loom_spin_t *s, int their_cpu) {
  loom_spin_woken_at(s, their_cpu, uv_hrtime());
}

/* The wait ended some other way (the thread stops, or gave up waiting). */
static inline void loom_spin_forget(loom_spin_t *s) {
  if (s->slept_at)
    loom_spin_shrink(s);
  s->slept_at = 0;
}

static inline void loom_spin_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* Turns between looks at the clock: a look costs about as much as a few
 * pauses. */
#define LOOM_SPIN_CLOCK_EVERY 8

/* Spins from `start` (a uv_hrtime reading) until ready(arg) says yes: 1,
 * counted as found; or until the budget runs out: 0, counted as missed,
 * and the caller sleeps and says how that went (loom_spin_woken). Inline
 * with a known ready, the call through the pointer folds away. */
static inline int loom_spin_until(loom_spin_t *s, uint64_t start, int (*ready)(void *arg), void *arg) {
  for (unsigned i = 1;; i++) {
    if (ready(arg)) {
      loom_spin_found(s);
      return 1;
    }
    if (i % LOOM_SPIN_CLOCK_EVERY == 0) {
      uint64_t now = uv_hrtime();
      if (now - start > s->budget_ns) {
        loom_spin_missed(s, now);
        return 0;
      }
    }
    loom_spin_pause();
  }
}

#endif
