/* A message that its receiver decodes while its sender still encodes it:
 * the codec's buffer for large values crossing to or from a worker, so
 * that the two threads overlap instead of taking turns (issue 13: 100k
 * records to a worker and back).
 *
 * The buffer never moves: its address space is reserved up front
 * (PROT_NONE) and its pages made writable as the encoder grows, so the
 * receiver reads the bytes already published while the sender appends.
 * The sender publishes a byte count with release order; the receiver reads
 * it with acquire order, watches it for a few microseconds when it has
 * caught up, then sleeps on a condition variable. A stream ends done (the
 * whole message is there, trailer included) or failed (the sender stopped
 * halfway: the receiver raises, with the sender's error if it left one).
 *
 * Refcounted: the sender, the job that carries it and, through the job,
 * the receiver each let go once. No lua.h here: the codec (codec.c) writes
 * and reads the bytes. */
#ifndef LM_THREAD_XSTREAM_H
#define LM_THREAD_XSTREAM_H

#include <stdatomic.h>
#include <stddef.h>
#include <uv.h>

/* A copy goes as a stream when one of its values is a table with at least
 * this many array items: below that the copy takes well under a
 * millisecond, and the reservation and its page faults would cost more
 * than the overlap saves. */
#define LM_XSTREAM_ITEMS 4096

enum { LM_XSTREAM_OPEN, LM_XSTREAM_DONE, LM_XSTREAM_FAILED };

typedef struct lm_xstream {
  char *base;
  size_t reserved;            /* address space reserved */
  size_t mapped;              /* writable so far (the sender's) */
  _Atomic size_t published;   /* bytes the receiver may read */
  _Atomic int state;
  _Atomic int refs;
  _Atomic int sleepers;       /* receivers asleep on cond */
  uv_mutex_t lock;
  uv_cond_t cond;
  /* A failed sender's error, an encoded message (error, traceback), set
   * before the state says FAILED; NULL if it could not be encoded. */
  char *err;
  size_t err_len;
} lm_xstream;

/* NULL when the address space or the lock cannot be had: the caller copies
 * in one piece instead. One reference, the caller's. */
lm_xstream *lm_xstream_new(void);
void lm_xstream_ref(lm_xstream *s);
/* The last reference frees the pages and the references to thread
 * channels a done message holds. */
void lm_xstream_unref(lm_xstream *s);
/* Sender: makes the first `want` bytes writable; -1 past the reservation
 * or without memory. */
int lm_xstream_grow(lm_xstream *s, size_t want);
/* Sender: the first n bytes are final. */
void lm_xstream_publish(lm_xstream *s, size_t n);
/* Sender: the message is whole, n bytes long. */
void lm_xstream_done(lm_xstream *s, size_t n);
/* Sender, or whoever gives up on the sender: the message stops here. err
 * (an encoded message, or NULL) becomes the stream's. Once only: a stream
 * already ended keeps its end (and err is freed). */
void lm_xstream_fail(lm_xstream *s, char *err, size_t err_len);
/* Receiver: waits until `want` bytes are published or the stream ended;
 * returns the bytes published then (fewer than want: it ended). */
size_t lm_xstream_wait(lm_xstream *s, size_t want);
int lm_xstream_state(lm_xstream *s);

#endif
