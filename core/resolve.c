/* Name lookup on libuv's thread pool, every address kept (see resolve.h). */
#include <stdio.h>
#include <string.h>
#include "resolve.h"

static void on_resolved(uv_getaddrinfo_t *gai, int status, struct addrinfo *res) {
  loom_resolve_t *r = gai->data;
  r->active = 0;
  r->list = status == 0 ? res : NULL;
  r->next = r->list;
  if (status != 0 && res)
    uv_freeaddrinfo(res);
  if (status == 0 && res == NULL)
    status = UV_EAI_NONAME;
  /* libuv reports a cancelled lookup as getaddrinfo would, EAI_CANCELED;
   * callers are promised the usual UV_ECANCELED. */
  if (status == UV_EAI_CANCELED)
    status = UV_ECANCELED;
  r->cb(r, status);
}

int loom_resolve_start(loom_loop_t *loop, loom_resolve_t *r, const char *host, int port,
                       loom_resolve_cb cb) {
  if (r->active)
    return UV_EBUSY;
  loom_resolve_free(r);
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  char service[8];
  snprintf(service, sizeof service, "%d", port & 0xffff);
  r->cb = cb;
  r->gai.data = r;
  int rc = uv_getaddrinfo(&loop->uv, &r->gai, on_resolved, host, port ? service : NULL, &hints);
  if (rc == 0)
    r->active = 1;
  /* With these hints libuv refuses only a name that cannot be one (a
   * label over 63 bytes, which its IDNA step rejects): no such name, as
   * getaddrinfo says of the ones it parses. */
  if (rc == UV_EINVAL && host)
    rc = UV_EAI_NONAME;
  return rc;
}

void loom_resolve_cancel(loom_resolve_t *r) {
  if (r->active)
    uv_cancel((uv_req_t *)&r->gai);
}

static int same_address(const struct addrinfo *a, const struct addrinfo *b) {
  return a->ai_family == b->ai_family && a->ai_addrlen == b->ai_addrlen &&
         memcmp(a->ai_addr, b->ai_addr, a->ai_addrlen) == 0;
}

int loom_resolve_next(loom_resolve_t *r, char *ip, size_t iplen, struct sockaddr_storage *sa) {
  for (; r->next; r->next = r->next->ai_next) {
    struct addrinfo *a = r->next;
    if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) || a->ai_addrlen > sizeof *sa)
      continue;
    /* /etc/hosts may list an address twice; trying it twice gains nothing. */
    struct addrinfo *seen = r->list;
    while (seen != a && !same_address(seen, a))
      seen = seen->ai_next;
    if (seen != a)
      continue;
    r->next = a->ai_next;
    if (a->ai_family == AF_INET6)
      uv_ip6_name((const struct sockaddr_in6 *)a->ai_addr, ip, iplen);
    else
      uv_ip4_name((const struct sockaddr_in *)a->ai_addr, ip, iplen);
    if (sa) {
      memset(sa, 0, sizeof *sa);
      memcpy(sa, a->ai_addr, a->ai_addrlen);
    }
    return 1;
  }
  return 0;
}

void loom_resolve_free(loom_resolve_t *r) {
  if (r->active)
    return;
  if (r->list)
    uv_freeaddrinfo(r->list);
  r->list = r->next = NULL;
}

int loom_resolve_is_numeric(const char *host) {
  unsigned char buf[16];
  return host && (uv_inet_pton(AF_INET, host, buf) == 0 || uv_inet_pton(AF_INET6, host, buf) == 0);
}
