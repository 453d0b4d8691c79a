/* The floor under bench/io.lua's one-process echo: the same 64-byte round
 * trips over one loopback TCP connection, both ends in this process, with
 * nothing but the system calls a readiness loop needs: on each side a
 * write, an epoll_wait and a read. No library, no allocation, no clock
 * reading inside the loop. What a library adds to a round trip is its
 * rate's distance from this one.
 *   echo_floor N        prints "RESULT <round trips/s> <user us per trip>"
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG 64

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void nodelay(int fd) {
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one))
    die("setsockopt");
}

/* Reads one whole message, waiting on the epoll set as a loop would. */
static void await_message(int ep, int fd, char *buf) {
  size_t got = 0;
  while (got < MSG) {
    struct epoll_event ev;
    if (epoll_wait(ep, &ev, 1, -1) != 1 || (int)ev.data.fd != fd)
      die("epoll_wait");
    ssize_t r = read(fd, buf + got, MSG - got);
    if (r <= 0)
      die("read");
    got += (size_t)r;
  }
}

static void send_message(int fd, const char *buf) {
  if (write(fd, buf, MSG) != MSG)
    die("write");
}

static double seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double user_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 100000;
  int lst = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof a;
  if (lst < 0 || bind(lst, (struct sockaddr *)&a, sizeof a) || listen(lst, 1) ||
      getsockname(lst, (struct sockaddr *)&a, &alen))
    die("listen");
  int client = socket(AF_INET, SOCK_STREAM, 0);
  if (client < 0 || connect(client, (struct sockaddr *)&a, sizeof a))
    die("connect");
  int server = accept4(lst, NULL, NULL, SOCK_NONBLOCK);
  if (server < 0)
    die("accept");
  nodelay(client);
  nodelay(server);
  /* One set for both ends, as one loop has: only one end is ever readable,
   * the other waits for its answer. */
  int ep = epoll_create1(0);
  struct epoll_event ce = {.events = EPOLLIN, .data.fd = client};
  struct epoll_event se = {.events = EPOLLIN, .data.fd = server};
  if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, client, &ce) ||
      epoll_ctl(ep, EPOLL_CTL_ADD, server, &se))
    die("epoll_ctl");
  char out[MSG], in[MSG];
  memset(out, 'm', sizeof out);
  double t0 = 0, u0 = 0;
  for (long i = -1000; i < n; i++) {
    if (i == 0) {
      t0 = seconds();
      u0 = user_seconds();
    }
    send_message(client, out);
    await_message(ep, server, in);
    send_message(server, in);
    await_message(ep, client, in);
  }
  double t = seconds() - t0, u = user_seconds() - u0;
  printf("RESULT %.1f %.3f\n", (double)n / t, u / (double)n * 1e6);
  return 0;
}
