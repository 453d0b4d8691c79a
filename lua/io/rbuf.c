/* A file's read buffer: unread bytes kept at the front, room made at the
 * back for the next refill (formats.c answers reads from it). */
#include <stdlib.h>
#include <string.h>
#include "lm_fsproc.h"

/* The first refill of a buffer: big enough that a read of a 64 KiB chunk
 * costs a fraction of one trip to the thread pool. */
#define RBUF_MIN 262144

size_t lm_rbuf_room(lm_rbuf *b, size_t want) {
  if (b->start == b->end)
    b->start = b->end = 0;
  if (b->cap - b->end >= want)
    return b->cap - b->end;
  size_t used = b->end - b->start;
  if (b->start > 0 && b->cap - used >= want) {
    memmove(b->p, b->p + b->start, used);
    b->start = 0;
    b->end = used;
    return b->cap - b->end;
  }
  size_t cap = b->cap ? b->cap : RBUF_MIN;
  while (cap - used < want) {
    if (cap > ((size_t)-1) / 2)
      return 0;
    cap *= 2;
  }
  char *p = malloc(cap);
  if (p == NULL)
    return 0;
  if (used)
    memcpy(p, b->p + b->start, used);
  free(b->p);
  b->p = p;
  b->cap = cap;
  b->start = 0;
  b->end = used;
  return cap - used;
}

void lm_rbuf_free(lm_rbuf *b) {
  free(b->p);
  b->p = NULL;
  b->cap = b->start = b->end = 0;
}
