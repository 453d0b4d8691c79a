/* The statement cache (stmt_cache.h). */
#include <stdlib.h>
#include <string.h>
#include "stmt_cache.h"

void loom_stmt_cache_init(loom_stmt_cache_t *c, size_t entry_size, int max, int evict,
                          loom_stmt_free_cb free_entry) {
  memset(c, 0, sizeof *c);
  c->entry_size = entry_size;
  c->max = max;
  c->evict = evict;
  c->free_entry = free_entry;
}

static unsigned memo_slot(const char *sql) {
  uintptr_t a = (uintptr_t)sql;
  return (unsigned)((a >> 4) ^ (a >> 10)) & (LOOM_STMT_MEMO - 1);
}

static int matches(const loom_stmt_entry_t *e, const char *sql, size_t len) {
  return e->len == len && memcmp(e->sql, sql, len) == 0;
}

loom_stmt_entry_t *loom_stmt_cache_find(loom_stmt_cache_t *c, const char *sql, size_t len) {
  unsigned m = memo_slot(sql);
  loom_stmt_entry_t *e = c->memo[m];
  if (e == NULL || !matches(e, sql, len)) {
    uint64_t h = loom_hash_bytes(sql, len);
    for (e = c->buckets[h % LOOM_STMT_BUCKETS]; e; e = e->next)
      if (e->hash == h && matches(e, sql, len))
        break;
    if (e == NULL)
      return NULL;
    c->memo[m] = e;
  }
  e->used = ++c->tick;
  return e;
}

static loom_stmt_entry_t *least_used(loom_stmt_cache_t *c) {
  loom_stmt_entry_t *old = NULL;
  for (int i = 0; i < LOOM_STMT_BUCKETS; i++)
    for (loom_stmt_entry_t *e = c->buckets[i]; e; e = e->next)
      if (old == NULL || e->used < old->used)
        old = e;
  return old;
}

loom_stmt_entry_t *loom_stmt_cache_add(loom_stmt_cache_t *c, const char *sql, size_t len) {
  if (c->count >= c->max) {
    if (!c->evict || c->count == 0)
      return NULL;
    loom_stmt_cache_remove(c, least_used(c));
  }
  loom_stmt_entry_t *e = calloc(1, c->entry_size + len + 1);
  if (e == NULL)
    return NULL;
  char *key = (char *)e + c->entry_size;
  memcpy(key, sql, len);
  key[len] = 0;
  e->sql = key;
  e->len = len;
  e->hash = loom_hash_bytes(sql, len);
  e->used = ++c->tick;
  e->next = c->buckets[e->hash % LOOM_STMT_BUCKETS];
  c->buckets[e->hash % LOOM_STMT_BUCKETS] = e;
  c->count++;
  c->memo[memo_slot(sql)] = e;
  return e;
}

void loom_stmt_cache_remove(loom_stmt_cache_t *c, loom_stmt_entry_t *e) {
  loom_stmt_entry_t **p = &c->buckets[e->hash % LOOM_STMT_BUCKETS];
  while (*p && *p != e)
    p = &(*p)->next;
  if (*p == NULL)
    return;
  *p = e->next;
  for (int i = 0; i < LOOM_STMT_MEMO; i++)
    if (c->memo[i] == e)
      c->memo[i] = NULL;
  c->count--;
  c->free_entry(e);
  free(e);
}

void loom_stmt_cache_clear(loom_stmt_cache_t *c) {
  for (int i = 0; i < LOOM_STMT_BUCKETS; i++)
    while (c->buckets[i])
      loom_stmt_cache_remove(c, c->buckets[i]);
}
