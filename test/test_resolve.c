/* core/resolve: every address a name has, in the resolver's order, each
 * handed out once, with the port set; a name that does not exist is an
 * error the driver can name. */
#include <arpa/inet.h>
#include <netdb.h>
#include <string.h>
#include "resolve.h"
#include "runner.h"

typedef struct {
  int calls, status;
} got_t;

static void on_done(loom_resolve_t *r, int status) {
  got_t *g = r->data;
  ASSERT(!r->active);
  g->calls++;
  g->status = status;
}

/* Polls until the lookup's callback ran (bounded: the runner's alarm would
 * end a hang anyway, this says where). */
static int wait_done(loom_loop_t *loop, got_t *g) {
  for (int i = 0; i < 2000 && g->calls == 0; i++)
    loom_loop_poll(loop, 10);
  ASSERT_EQ(g->calls, 1);
  return g->status;
}

static int resolve(loom_loop_t *loop, loom_resolve_t *r, const char *host, int port) {
  got_t g = {0, 0};
  r->data = &g;
  ASSERT_EQ(loom_resolve_start(loop, r, host, port, on_done), 0);
  ASSERT(r->active);
  int status = wait_done(loop, &g);
  r->data = NULL;
  return status;
}

static int port_of(const struct sockaddr_storage *sa) {
  if (sa->ss_family == AF_INET6)
    return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
  return ntohs(((const struct sockaddr_in *)sa)->sin_port);
}

TEST_IMPL(resolve_numeric_v4) {
  loom_loop_t loop;
  loom_resolve_t r;
  memset(&r, 0, sizeof r);
  loom_test_loop_init(&loop);
  ASSERT_EQ(resolve(&loop, &r, "127.0.0.1", 3306), 0);
  char ip[INET6_ADDRSTRLEN];
  struct sockaddr_storage sa;
  ASSERT_EQ(loom_resolve_next(&r, ip, sizeof ip, &sa), 1);
  ASSERT(strcmp(ip, "127.0.0.1") == 0);
  ASSERT_EQ(sa.ss_family, AF_INET);
  ASSERT_EQ(port_of(&sa), 3306);
  ASSERT_EQ(loom_resolve_next(&r, ip, sizeof ip, &sa), 0);
  ASSERT_EQ(loom_resolve_next(&r, ip, sizeof ip, NULL), 0);
  loom_resolve_free(&r);
  loom_resolve_free(&r); /* twice is harmless */
  loom_test_loop_close(&loop);
}

TEST_IMPL(resolve_numeric_v6) {
  loom_loop_t loop;
  loom_resolve_t r;
  memset(&r, 0, sizeof r);
  loom_test_loop_init(&loop);
  ASSERT_EQ(resolve(&loop, &r, "::1", 5432), 0);
  char ip[INET6_ADDRSTRLEN];
  struct sockaddr_storage sa;
  ASSERT_EQ(loom_resolve_next(&r, ip, sizeof ip, &sa), 1);
  ASSERT(strcmp(ip, "::1") == 0);
  ASSERT_EQ(sa.ss_family, AF_INET6);
  ASSERT_EQ(port_of(&sa), 5432);
  ASSERT_EQ(loom_resolve_next(&r, ip, sizeof ip, NULL), 0);
  loom_resolve_free(&r);
  loom_test_loop_close(&loop);
}

TEST_IMPL(resolve_is_numeric) {
  ASSERT(loom_resolve_is_numeric("127.0.0.1"));
  ASSERT(loom_resolve_is_numeric("::1"));
  ASSERT(loom_resolve_is_numeric("fe80::1"));
  ASSERT(!loom_resolve_is_numeric("localhost"));
  ASSERT(!loom_resolve_is_numeric("127.1")); /* inet_aton shorthand: left to getaddrinfo */
  ASSERT(!loom_resolve_is_numeric("[::1]"));
  ASSERT(!loom_resolve_is_numeric(""));
  ASSERT(!loom_resolve_is_numeric(NULL));
}

/* The order is the system resolver's (its RFC 6724 preference, /etc/hosts
 * order), whatever this machine lists for localhost: compared with
 * getaddrinfo's own answer, repeats left out. */
TEST_IMPL(resolve_localhost_in_order) {
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  ASSERT_EQ(getaddrinfo("localhost", "80", &hints, &res), 0);
  char want[8][INET6_ADDRSTRLEN];
  int nwant = 0;
  for (struct addrinfo *a = res; a && nwant < 8; a = a->ai_next) {
    char ip[INET6_ADDRSTRLEN];
    const void *addr = a->ai_family == AF_INET6
                           ? (const void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr
                           : (const void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr;
    ASSERT(inet_ntop(a->ai_family, addr, ip, sizeof ip) != NULL);
    int seen = 0;
    for (int i = 0; i < nwant; i++)
      seen |= strcmp(want[i], ip) == 0;
    if (!seen)
      strcpy(want[nwant++], ip);
  }
  freeaddrinfo(res);
  ASSERT(nwant >= 1);

  loom_loop_t loop;
  loom_resolve_t r;
  memset(&r, 0, sizeof r);
  loom_test_loop_init(&loop);
  ASSERT_EQ(resolve(&loop, &r, "localhost", 80), 0);
  char ip[INET6_ADDRSTRLEN];
  struct sockaddr_storage sa;
  int n = 0;
  while (loom_resolve_next(&r, ip, sizeof ip, &sa)) {
    ASSERT(n < nwant);
    ASSERT(strcmp(ip, want[n]) == 0);
    ASSERT_EQ(port_of(&sa), 80);
    n++;
  }
  ASSERT_EQ(n, nwant);
  loom_resolve_free(&r);
  loom_test_loop_close(&loop);
}

static struct addrinfo *lookup(const char *host) {
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST;
  ASSERT_EQ(getaddrinfo(host, "1", &hints, &res), 0);
  return res;
}

/* /etc/hosts may list an address twice: it is handed out once, where it
 * first appears. The list is built from real getaddrinfo answers chained
 * together (freeaddrinfo follows the chain), 127.0.0.1, ::1, 127.0.0.1, ::1. */
TEST_IMPL(resolve_duplicates_dropped) {
  loom_loop_t loop;
  loom_resolve_t r;
  memset(&r, 0, sizeof r);
  loom_test_loop_init(&loop);
  ASSERT_EQ(resolve(&loop, &r, "127.0.0.1", 1), 0);
  struct addrinfo *tail = r.list;
  while (tail->ai_next)
    tail = tail->ai_next;
  const char *more[] = {"::1", "127.0.0.1", "::1"};
  for (int i = 0; i < 3; i++) {
    tail->ai_next = lookup(more[i]);
    while (tail->ai_next)
      tail = tail->ai_next;
  }
  char ip[INET6_ADDRSTRLEN];
  ASSERT_EQ(loom_resolve_next(&r, ip, sizeof ip, NULL), 1);
  ASSERT(strcmp(ip, "127.0.0.1") == 0);
  ASSERT_EQ(loom_resolve_next(&r, ip, sizeof ip, NULL), 1);
  ASSERT(strcmp(ip, "::1") == 0);
  ASSERT_EQ(loom_resolve_next(&r, ip, sizeof ip, NULL), 0);
  loom_resolve_free(&r);
  loom_test_loop_close(&loop);
}

/* The .invalid domain never resolves (RFC 6761): the callback gets a
 * getaddrinfo error (EAI_NONAME, or EAI_AGAIN where no name server can be
 * asked), which uv_strerror can put in words, and nothing is handed out. */
TEST_IMPL(resolve_unknown_name) {
  loom_loop_t loop;
  loom_resolve_t r;
  memset(&r, 0, sizeof r);
  loom_test_loop_init(&loop);
  int status = resolve(&loop, &r, "no-such-host.invalid", 3306);
  ASSERT(status < 0);
  ASSERT(strncmp(uv_err_name(status), "EAI_", 4) == 0);
  ASSERT(strlen(uv_strerror(status)) > 0);
  ASSERT_PTR_EQ(r.list, NULL);
  char ip[INET6_ADDRSTRLEN];
  ASSERT_EQ(loom_resolve_next(&r, ip, sizeof ip, NULL), 0);
  loom_resolve_free(&r);
  loom_test_loop_close(&loop);
}

/* One lookup at a time per resolver; a new one replaces the last list. */
TEST_IMPL(resolve_busy_and_restart) {
  loom_loop_t loop;
  loom_resolve_t r;
  memset(&r, 0, sizeof r);
  loom_test_loop_init(&loop);
  got_t g = {0, 0};
  r.data = &g;
  ASSERT_EQ(loom_resolve_start(&loop, &r, "127.0.0.1", 1, on_done), 0);
  ASSERT_EQ(loom_resolve_start(&loop, &r, "::1", 1, on_done), UV_EBUSY);
  loom_resolve_free(&r); /* not while it runs: a no-op */
  ASSERT_EQ(wait_done(&loop, &g), 0);
  ASSERT_EQ(resolve(&loop, &r, "::1", 2), 0);
  char ip[INET6_ADDRSTRLEN];
  ASSERT_EQ(loom_resolve_next(&r, ip, sizeof ip, NULL), 1);
  ASSERT(strcmp(ip, "::1") == 0);
  ASSERT_EQ(loom_resolve_next(&r, ip, sizeof ip, NULL), 0);
  loom_resolve_free(&r);
  loom_test_loop_close(&loop);
}

/* A cancelled lookup still calls back once: cancelled, or done if the
 * thread pool had already run it. */
TEST_IMPL(resolve_cancel) {
  loom_loop_t loop;
  loom_resolve_t r;
  memset(&r, 0, sizeof r);
  loom_test_loop_init(&loop);
  got_t g = {0, 0};
  r.data = &g;
  ASSERT_EQ(loom_resolve_start(&loop, &r, "localhost", 1, on_done), 0);
  loom_resolve_cancel(&r);
  int status = wait_done(&loop, &g);
  ASSERT(status == UV_ECANCELED || status == 0); /* not UV_EAI_CANCELED, libuv's own */
  if (status == UV_ECANCELED)
    ASSERT_PTR_EQ(r.list, NULL);
  loom_resolve_cancel(&r); /* nothing runs: a no-op */
  loom_resolve_free(&r);
  loom_test_loop_close(&loop);
}
