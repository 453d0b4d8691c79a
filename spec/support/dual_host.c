/* Preloaded into a child process by spec/pg_hosts_spec.lua and
 * spec/mysql_hosts_spec.lua: the name "loom-dual.test" resolves to ::1
 * first, then 127.0.0.1, as "localhost" does on machines whose /etc/hosts
 * lists ::1 first. The test servers listen on 127.0.0.1 only, so a client
 * must get past the first address. "loom-pair.test" is 127.0.0.2, then
 * 127.0.0.1: two IPv4 loopback addresses, so a spec can put a listener of
 * its own on the first one (one that never answers). Every other name goes
 * to the system's resolver. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define DUAL_NAME "loom-dual.test"
#define PAIR_NAME "loom-pair.test"

/* One allocation per entry, the address inside it, as glibc does, so either
 * freeaddrinfo can free it. IPv6 entries are ::1, IPv4 ones 127.0.0.host. */
static struct addrinfo *entry(int family, const struct addrinfo *hints, int port, int host) {
  struct addrinfo *ai = calloc(1, sizeof *ai + sizeof(struct sockaddr_in6));
  if (ai == NULL)
    return NULL;
  ai->ai_family = family;
  ai->ai_socktype = hints && hints->ai_socktype ? hints->ai_socktype : SOCK_STREAM;
  ai->ai_protocol = IPPROTO_TCP;
  ai->ai_addr = (struct sockaddr *)(ai + 1);
  if (family == AF_INET6) {
    struct sockaddr_in6 *sa = (struct sockaddr_in6 *)ai->ai_addr;
    sa->sin6_family = AF_INET6;
    sa->sin6_port = htons((unsigned short)port);
    sa->sin6_addr = in6addr_loopback;
    ai->ai_addrlen = sizeof *sa;
  } else {
    struct sockaddr_in *sa = (struct sockaddr_in *)ai->ai_addr;
    sa->sin_family = AF_INET;
    sa->sin_port = htons((unsigned short)port);
    sa->sin_addr.s_addr = htonl((127u << 24) | (unsigned)host);
    ai->ai_addrlen = sizeof *sa;
  }
  return ai;
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res) {
  int pair = node && strcmp(node, PAIR_NAME) == 0;
  if (node == NULL || (!pair && strcmp(node, DUAL_NAME) != 0)) {
    int (*real)(const char *, const char *, const struct addrinfo *, struct addrinfo **) =
        (int (*)(const char *, const char *, const struct addrinfo *, struct addrinfo **))
            dlsym(RTLD_NEXT, "getaddrinfo");
    return real(node, service, hints, res);
  }
  int port = service ? atoi(service) : 0;
  int family = hints ? hints->ai_family : AF_UNSPEC;
  if (pair) {
    if (family == AF_INET6)
      return EAI_NONAME;
    struct addrinfo *first = entry(AF_INET, hints, port, 2);
    struct addrinfo *second = entry(AF_INET, hints, port, 1);
    if (first == NULL || second == NULL) {
      free(first);
      free(second);
      return EAI_MEMORY;
    }
    first->ai_next = second;
    *res = first;
    return 0;
  }
  struct addrinfo *v6 = family == AF_INET ? NULL : entry(AF_INET6, hints, port, 0);
  struct addrinfo *v4 = family == AF_INET6 ? NULL : entry(AF_INET, hints, port, 1);
  if (v6)
    v6->ai_next = v4;
  *res = v6 ? v6 : v4;
  return *res ? 0 : EAI_MEMORY;
}
