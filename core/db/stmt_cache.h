/* The prepared statements of one connection, keyed by their SQL text: one
 * cache for every driver. A driver's entry starts with a
 * loom_stmt_entry_t and holds what the driver needs beside it (the
 * prepared statement, its parameter types, counters); the cache allocates
 * it, with the key, in one block, and hands it to the driver's free_entry
 * callback before freeing it.
 *
 * Found by the SQL's address first: the SQL of a hot statement is the same
 * (Lua) string every time, so a small table indexed by its address finds
 * the entry without hashing the text (the entry is still compared in full,
 * so an address reused by another string cannot match wrongly). A lookup
 * allocates nothing and takes no lock: a connection's cache is only ever
 * used by one thread at a time. */
#ifndef LOOM_STMT_CACHE_H
#define LOOM_STMT_CACHE_H

#include <string.h>
#include "loom.h"

#define LOOM_STMT_BUCKETS 64
#define LOOM_STMT_MEMO 16

/* The SQL's hash, for the cache and for anything else remembered per
 * statement. A shared SQLite read hashes its SQL twice, so it takes eight
 * bytes a step (a multiply and a rotate) where FNV-1a took one: 9 ns
 * against 26 ns for a 46-byte statement. Keys are compared in full on a
 * match, so its quality only matters for how evenly buckets fill. */
static inline uint64_t loom_hash_bytes(const char *p, size_t n) {
  uint64_t h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)n;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    h = (h ^ w) * 0x87c37b91114253d5ULL;
    h = (h << 31) | (h >> 33);
  }
  uint64_t tail = 0;
  memcpy(&tail, p, n);
  h ^= tail;
  /* MurmurHash3's finalizer: every input bit reaches every output bit,
   * the low ones a bucket index takes included. */
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

typedef struct loom_stmt_entry {
  struct loom_stmt_entry *next; /* in its bucket */
  uint64_t hash;
  uint64_t used;                /* the cache's tick when last found */
  const char *sql;              /* the key, NUL-terminated, in the block */
  size_t len;
} loom_stmt_entry_t;

/* Releases what the driver's part of e holds; the cache frees e. */
typedef void (*loom_stmt_free_cb)(loom_stmt_entry_t *e);

typedef struct loom_stmt_cache {
  loom_stmt_entry_t *buckets[LOOM_STMT_BUCKETS];
  loom_stmt_entry_t *memo[LOOM_STMT_MEMO];
  int count, max;
  int evict;          /* full: the least recently used entry makes room */
  size_t entry_size;  /* the driver's entry */
  uint64_t tick;
  loom_stmt_free_cb free_entry;
} loom_stmt_cache_t;

/* A cache of up to max entries of entry_size bytes. Full, it either makes
 * room (evict: for drivers that can drop a statement without I/O) or takes
 * no more (the statement then runs unprepared). */
void loom_stmt_cache_init(loom_stmt_cache_t *c, size_t entry_size, int max, int evict,
                          loom_stmt_free_cb free_entry);

/* The entry for sql, or NULL. */
loom_stmt_entry_t *loom_stmt_cache_find(loom_stmt_cache_t *c, const char *sql, size_t len);

/* Whether loom_stmt_cache_add would take a new entry. */
static inline int loom_stmt_cache_has_room(const loom_stmt_cache_t *c) {
  return c->evict || c->count < c->max;
}

/* A new zeroed entry for sql (not in the cache yet), or NULL when out of
 * memory or full. */
loom_stmt_entry_t *loom_stmt_cache_add(loom_stmt_cache_t *c, const char *sql, size_t len);

/* Takes e out of the cache and frees it through free_entry. */
void loom_stmt_cache_remove(loom_stmt_cache_t *c, loom_stmt_entry_t *e);

/* Removes every entry. */
void loom_stmt_cache_clear(loom_stmt_cache_t *c);

#endif
