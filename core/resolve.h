/* Name lookup for the drivers that connect over TCP: one resolver that
 * keeps every address a name has.
 *
 * getaddrinfo blocks, so the lookup runs on libuv's thread pool. A name may
 * have several addresses ("localhost": ::1 and 127.0.0.1), and a client that
 * tries only the first cannot reach a server listening on another one. The
 * list is kept in getaddrinfo's order (the system's preference, RFC 6724)
 * and handed out one address at a time: the driver moves on to the next
 * when one refuses, is unreachable or does not answer in time, as libpq
 * does. */
#ifndef LOOM_RESOLVE_H
#define LOOM_RESOLVE_H

#include "loom.h"

typedef struct loom_resolve loom_resolve_t;
typedef void (*loom_resolve_cb)(loom_resolve_t *r, int status);

struct loom_resolve {
  uv_getaddrinfo_t gai;
  struct addrinfo *list; /* as getaddrinfo gave it */
  struct addrinfo *next; /* the next one to hand out */
  loom_resolve_cb cb;
  void *data;            /* the caller's */
  int active;            /* a lookup runs: r must stay where it is */
};

/* Looks host up: a name, or a numeric address (which needs no lookup but
 * comes back the same way). port (0 for none) is set in every address. cb
 * runs once, on the loop thread, with 0 or a libuv error (UV_ECANCELED
 * after loom_resolve_cancel). Returns 0, or a libuv error and then cb does
 * not run. A previous list is freed first. */
int loom_resolve_start(loom_loop_t *loop, loom_resolve_t *r, const char *host, int port,
                       loom_resolve_cb cb);

/* Asks a running lookup to stop; its callback still runs. */
void loom_resolve_cancel(loom_resolve_t *r);

/* The next address not handed out yet (an address listed twice is handed
 * out once): its numeric text in ip (INET6_ADDRSTRLEN bytes are enough) and,
 * when sa is not NULL, the address itself. Returns 1, or 0 when none is left. */
int loom_resolve_next(loom_resolve_t *r, char *ip, size_t iplen, struct sockaddr_storage *sa);

/* Frees the list (not while a lookup runs). */
void loom_resolve_free(loom_resolve_t *r);

/* 1 when host is a numeric IPv4 or IPv6 address, which needs no lookup. */
int loom_resolve_is_numeric(const char *host);

#endif
