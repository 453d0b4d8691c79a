/* The loop: clean shutdown, cross-thread wake-ups, and the pieces a host
 * needs to poll it from outside (fd, next_timeout, bounded polls). */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>
#include "runner.h"

#define MS 1000000u

static void noop_timer(loom_timer_t *t) { (void)t; }
static void noop_uv_timer(uv_timer_t *t) { (void)t; }

TEST_IMPL(loop_create_close) {
  loom_loop_t loop;
  loom_test_loop_init(&loop);
  ASSERT(!loom_loop_alive(&loop));
  ASSERT_EQ(loom_loop_next_timeout(&loop), -1);
  ASSERT_EQ(loom_loop_poll(&loop, 0), 0);
  loom_test_loop_close(&loop);
  /* Closing twice is allowed: __gc and an explicit close may both run. */
  loom_test_loop_close(&loop);
}

TEST_IMPL(loop_close_with_armed_timers) {
  loom_loop_t loop;
  loom_timer_t t[3];
  loom_test_loop_init(&loop);
  for (int i = 0; i < 3; i++) {
    loom_timer_init(&t[i], noop_timer, NULL);
    ASSERT_EQ(loom_timer_start(&loop, &t[i], (uint64_t)(i + 1) * 1000 * MS), 0);
  }
  ASSERT(loom_loop_alive(&loop));
  loom_test_loop_close(&loop);
  /* Timers outlive the loop as plain memory, disarmed. */
  for (int i = 0; i < 3; i++)
    ASSERT(!loom_timer_active(&t[i]));
}

static int work_ran, after_work_status = 1;

static void slow_work(uv_work_t *req) {
  (void)req;
  usleep(20000);
  work_ran = 1;
}

static void after_work(uv_work_t *req, int status) {
  (void)req;
  after_work_status = status;
}

/* Another layer (a driver) may leave handles and requests on the loop;
 * closing must still end with nothing left for uv_loop_close to refuse. */
TEST_IMPL(loop_close_with_user_handle) {
  loom_loop_t loop;
  uv_timer_t user_timer;
  uv_idle_t idle;
  uv_work_t work;
  loom_test_loop_init(&loop);
  ASSERT_EQ(uv_timer_init(&loop.uv, &user_timer), 0);
  ASSERT_EQ(uv_timer_start(&user_timer, noop_uv_timer, 100000, 0), 0);
  ASSERT_EQ(uv_idle_init(&loop.uv, &idle), 0);
  ASSERT_EQ(uv_queue_work(&loop.uv, &work, slow_work, after_work), 0);
  loom_test_loop_close(&loop);
  ASSERT(work_ran);
  ASSERT(after_work_status == 0 || after_work_status == UV_ECANCELED);
}

static int wakes;
static loom_loop_t *wake_loop;

static void on_wake(loom_loop_t *loop) {
  ASSERT_PTR_EQ(loop, wake_loop);
  wakes++;
}

static void *waker(void *arg) {
  usleep(30000);
  ASSERT_EQ(loom_loop_wake(arg), 0);
  return NULL;
}

TEST_IMPL(loop_wake_from_thread) {
  loom_loop_t loop;
  loom_timer_t far;
  pthread_t th;
  loom_test_loop_init(&loop);
  wake_loop = &loop;
  loop.on_wake = on_wake;
  /* Something real to wait for, so the poll blocks until woken. */
  loom_timer_init(&far, noop_timer, NULL);
  ASSERT_EQ(loom_timer_start(&loop, &far, 10000 * MS), 0);
  uint64_t start = loom_now_ns();
  ASSERT_EQ(pthread_create(&th, NULL, waker, &loop), 0);
  while (wakes == 0) {
    ASSERT(loom_now_ns() - start < 5000 * MS);
    ASSERT(loom_loop_poll(&loop, -1));
  }
  ASSERT_EQ(pthread_join(th, NULL), 0);
  ASSERT_EQ(wakes, 1);
  ASSERT(loom_now_ns() - start < 5000 * MS);
  ASSERT(loom_timer_active(&far));
  loom_test_loop_close(&loop);
}

/* Wake-ups sent before anyone polls are not lost, and several of them
 * before one poll come out as one callback (libuv's async coalescing). */
TEST_IMPL(loop_wake_before_poll) {
  loom_loop_t loop;
  loom_timer_t far;
  loom_test_loop_init(&loop);
  wake_loop = &loop;
  loop.on_wake = on_wake;
  loom_timer_init(&far, noop_timer, NULL);
  ASSERT_EQ(loom_timer_start(&loop, &far, 10000 * MS), 0);
  ASSERT_EQ(loom_loop_wake(&loop), 0);
  ASSERT_EQ(loom_loop_wake(&loop), 0);
  ASSERT_EQ(loom_loop_wake(&loop), 0);
  uint64_t start = loom_now_ns();
  while (wakes == 0 && loom_now_ns() - start < 2000 * MS)
    loom_loop_poll(&loop, 100);
  ASSERT_EQ(wakes, 1);
  loom_loop_poll(&loop, 0);
  ASSERT_EQ(wakes, 1);
  loom_test_loop_close(&loop);
}

TEST_IMPL(loop_next_timeout) {
  loom_loop_t loop;
  loom_timer_t a, b, c;
  loom_test_loop_init(&loop);
  ASSERT_EQ(loom_loop_next_timeout(&loop), -1);
  /* A new loop's own watchers reach the kernel in its first poll: before
   * that, with a timer armed, a host is told to poll at once. */
  loom_loop_poll(&loop, 0);
  loom_timer_init(&a, noop_timer, NULL);
  loom_timer_init(&b, noop_timer, NULL);
  loom_timer_init(&c, noop_timer, NULL);
  ASSERT_EQ(loom_timer_start(&loop, &a, 500 * MS), 0);
  int64_t t = loom_loop_next_timeout(&loop);
  ASSERT(t > 400 && t <= 500);
  ASSERT_EQ(loom_timer_start(&loop, &b, 50 * MS), 0);
  t = loom_loop_next_timeout(&loop);
  ASSERT(t > 0 && t <= 50);
  /* Rounded up, so a host that sleeps that long finds the timer due; 0
   * once libuv's millisecond clock has reached it. */
  ASSERT_EQ(loom_timer_start(&loop, &c, MS / 2), 0);
  t = loom_loop_next_timeout(&loop);
  ASSERT(t == 0 || t == 1);
  usleep(2000);
  ASSERT_EQ(loom_loop_next_timeout(&loop), 0);
  loom_timer_stop(&loop, &c);
  loom_timer_stop(&loop, &b);
  t = loom_loop_next_timeout(&loop);
  ASSERT(t > 400 && t <= 500);
  loom_timer_stop(&loop, &a);
  ASSERT_EQ(loom_loop_next_timeout(&loop), -1);
  loom_test_loop_close(&loop);
}

static int fd_readable(int fd, int timeout_ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int r = poll(&p, 1, timeout_ms);
  ASSERT(r >= 0);
  return r > 0 && (p.revents & POLLIN);
}

/* The host's view: loom's fd turns readable when loom has an event to
 * handle, and one poll of the loop consumes it. */
TEST_IMPL(loop_fd) {
  loom_loop_t loop;
  loom_timer_t far;
  pthread_t th;
  loom_test_loop_init(&loop);
  int fd = loom_loop_fd(&loop);
  ASSERT(fd >= 0);
  ASSERT(fcntl(fd, F_GETFD) != -1);
  wake_loop = &loop;
  loop.on_wake = on_wake;
  loom_timer_init(&far, noop_timer, NULL);
  ASSERT_EQ(loom_timer_start(&loop, &far, 10000 * MS), 0);
  /* libuv registers its watchers with the backend during a poll. */
  loom_loop_poll(&loop, 0);
  ASSERT(!fd_readable(fd, 0));
  ASSERT_EQ(pthread_create(&th, NULL, waker, &loop), 0);
  ASSERT(fd_readable(fd, 5000));
  ASSERT_EQ(pthread_join(th, NULL), 0);
  ASSERT_EQ(wakes, 0);
  loom_loop_poll(&loop, 0);
  ASSERT_EQ(wakes, 1);
  ASSERT(!fd_readable(fd, 0));
  loom_test_loop_close(&loop);
}

/* A loop with no work left can still have a wake-up pending on its fd.
 * uv_run skips polling an idle loop, so unless loom's non-blocking poll
 * drains it, the fd stays readable and a host polling it spins forever. */
TEST_IMPL(loop_wake_idle_drains_fd) {
  loom_loop_t loop;
  loom_timer_t t;
  loom_test_loop_init(&loop);
  wake_loop = &loop;
  loop.on_wake = on_wake;
  int fd = loom_loop_fd(&loop);
  loom_timer_init(&t, noop_timer, NULL);
  ASSERT_EQ(loom_timer_start(&loop, &t, 10000 * MS), 0);
  loom_loop_poll(&loop, 0);
  loom_timer_stop(&loop, &t);
  ASSERT(!loom_loop_alive(&loop));
  ASSERT_EQ(loom_loop_wake(&loop), 0);
  ASSERT(fd_readable(fd, 1000));
  ASSERT_EQ(loom_loop_poll(&loop, 0), 0);
  ASSERT_EQ(wakes, 1);
  ASSERT(!fd_readable(fd, 0));
  loom_test_loop_close(&loop);
}

TEST_IMPL(loop_poll_timeout_bounds_wait) {
  loom_loop_t loop;
  loom_timer_t far;
  loom_test_loop_init(&loop);
  loom_timer_init(&far, noop_timer, NULL);
  ASSERT_EQ(loom_timer_start(&loop, &far, 10000 * MS), 0);
  uint64_t start = loom_now_ns();
  ASSERT(loom_loop_poll(&loop, 30));
  uint64_t took = loom_now_ns() - start;
  ASSERT(took >= 25 * MS);
  ASSERT(took < 3000 * MS);
  start = loom_now_ns();
  ASSERT(loom_loop_poll(&loop, 0));
  ASSERT(loom_now_ns() - start < 1000 * MS);
  /* The poll's own bound is not work: with the timer gone, idle. */
  loom_timer_stop(&loop, &far);
  ASSERT_EQ(loom_loop_poll(&loop, 10), 0);
  ASSERT(!loom_loop_alive(&loop));
  loom_test_loop_close(&loop);
}

static int readable_calls;

static void on_readable(uv_poll_t *h, int status, int events) {
  ASSERT_EQ(status, 0);
  ASSERT(events & UV_READABLE);
  char c;
  ASSERT_EQ(read(*(int *)h->data, &c, 1), 1);
  readable_calls++;
}

static void on_poll_closed(uv_handle_t *h) {
  int *fd = h->data;
  close(*fd);
  *fd = -1;
}

/* A host waits on the backend fd for at most next_timeout. libuv hands a
 * watcher's new interest to the kernel only in its next poll, and pending
 * callbacks and closing handles run only there too: until then nothing on
 * the fd announces them, so next_timeout must send the host to poll now. */
TEST_IMPL(loop_next_timeout_pending_work) {
  loom_loop_t loop;
  uv_poll_t watcher;
  int sv[2];
  loom_test_loop_init(&loop);
  loom_loop_poll(&loop, 0);
  ASSERT_EQ(loom_loop_next_timeout(&loop), -1);
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  ASSERT_EQ(uv_poll_init_socket(&loop.uv, &watcher, sv[0]), 0);
  watcher.data = &sv[0];
  /* A new socket: not in the backend's set until the next poll. */
  ASSERT_EQ(uv_poll_start(&watcher, UV_READABLE, on_readable), 0);
  ASSERT_EQ(loom_loop_next_timeout(&loop), 0);
  loom_loop_poll(&loop, 0);
  /* Applied: nothing is due, the host may wait on the fd alone, and the fd
   * tells it when the socket has data. */
  ASSERT_EQ(loom_loop_next_timeout(&loop), -1);
  int fd = loom_loop_fd(&loop);
  ASSERT(!fd_readable(fd, 0));
  ASSERT_EQ(write(sv[1], "x", 1), 1);
  ASSERT(fd_readable(fd, 5000));
  loom_loop_poll(&loop, 0);
  ASSERT_EQ(readable_calls, 1);
  ASSERT_EQ(loom_loop_next_timeout(&loop), -1);
  /* A changed interest is taken out of the set at once and put back in
   * the next poll: the same gap as a new socket. */
  ASSERT_EQ(uv_poll_start(&watcher, UV_READABLE | UV_WRITABLE, on_readable), 0);
  ASSERT_EQ(uv_poll_start(&watcher, UV_READABLE, on_readable), 0);
  ASSERT_EQ(loom_loop_next_timeout(&loop), 0);
  loom_loop_poll(&loop, 0);
  ASSERT_EQ(loom_loop_next_timeout(&loop), -1);
  /* A close callback runs in the next poll, not on any event. */
  uv_close((uv_handle_t *)&watcher, on_poll_closed);
  ASSERT_EQ(loom_loop_next_timeout(&loop), 0);
  loom_loop_poll(&loop, 0);
  ASSERT_EQ(sv[0], -1);
  ASSERT_EQ(loom_loop_next_timeout(&loop), -1);
  close(sv[1]);
  loom_test_loop_close(&loop);
}

static int due_fired;

static void count_fired(loom_timer_t *t) {
  (void)t;
  due_fired++;
}

/* A 0 from next_timeout means a poll now has work. A busy host wakes often
 * for its own reasons and asks each time; told 0 from the heap's nanosecond
 * deadline while libuv's millisecond clock has not reached the timer it
 * armed for it (up to a millisecond later), the host would poll in vain,
 * over and over, until the clock ticks. */
TEST_IMPL(loop_next_timeout_zero_means_due) {
  loom_loop_t loop;
  loom_timer_t t;
  loom_test_loop_init(&loop);
  loom_loop_poll(&loop, 0);
  int vain = 0;
  loom_timer_init(&t, count_fired, NULL);
  /* Deadlines at many fractions of a millisecond from arming. */
  for (int round = 0; round < 40; round++) {
    due_fired = 0;
    ASSERT_EQ(loom_timer_start(&loop, &t, (uint64_t)(1000 + round * 137) * 1000u), 0);
    uint64_t start = loom_now_ns();
    while (!due_fired) {
      ASSERT(loom_now_ns() - start < 5000 * MS);
      /* The host's own work between its polls. */
      usleep(50);
      int64_t ms = loom_loop_next_timeout(&loop);
      ASSERT(ms >= 0 && ms <= 8);
      if (ms > 0)
        continue;
      loom_loop_poll(&loop, 0);
      vain += !due_fired;
    }
  }
  ASSERT_EQ(vain, 0);
  loom_test_loop_close(&loop);
}
