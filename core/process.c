/* Child processes (process.h). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "process.h"

#if defined(__linux__) && defined(__GLIBC__)
#if __GLIBC_PREREQ(2, 29) /* posix_spawn_file_actions_addchdir_np */
#include <spawn.h>
#include <sys/syscall.h>
#if defined(SYS_pidfd_open) && defined(SYS_pidfd_send_signal)
#define LOOM_PIDFD 1
#endif
#endif
#endif

static void closed_cb(uv_handle_t *h) {
  loom_process_t *p = h->data;
  if (p->pidfd >= 0) {
    close(p->pidfd);
    p->pidfd = -1;
  }
  if (p->on_closed)
    p->on_closed(p);
}

static void close_pipes(loom_stream_t *pipes[3]) {
  for (int i = 0; i < 3; i++) {
    if (pipes[i])
      loom_stream_close(pipes[i], NULL);
    pipes[i] = NULL;
  }
}

/* ---- uv_spawn ------------------------------------------------------------ */

static void on_uv_exit(uv_process_t *h, int64_t status, int term_signal) {
  loom_process_t *p = h->data;
  p->exited = 1;
  p->code = status;
  p->term_signal = term_signal;
  p->on_exit(p);
}

static int spawn_uv(loom_loop_t *loop, loom_process_t *p, const loom_process_options_t *o,
                    loom_stream_t *pipes[3]) {
  int err = 0;
  uv_stdio_container_t stdio[3];
  for (int i = 0; i < 3; i++) {
    switch (o->stdio[i]) {
    case LOOM_STDIO_PIPE:
      pipes[i] = loom_stream_new(loop, LOOM_STREAM_PIPE, &err);
      if (pipes[i] == NULL) {
        close_pipes(pipes);
        return err;
      }
      stdio[i].flags = UV_CREATE_PIPE | (i == 0 ? UV_READABLE_PIPE : UV_WRITABLE_PIPE);
      stdio[i].data.stream = loom_stream_uv(pipes[i]);
      break;
    case LOOM_STDIO_INHERIT:
      stdio[i].flags = UV_INHERIT_FD;
      stdio[i].data.fd = i;
      break;
    default:
      stdio[i].flags = UV_IGNORE; /* libuv opens /dev/null for 0, 1 and 2 */
      break;
    }
  }
  uv_process_options_t uo;
  memset(&uo, 0, sizeof uo);
  uo.exit_cb = on_uv_exit;
  uo.file = o->file;
  uo.args = o->args;
  uo.env = o->env;
  uo.cwd = o->cwd;
  uo.stdio_count = 3;
  uo.stdio = stdio;
  p->h.process.data = p;
  err = uv_spawn(&loop->uv, &p->h.process, &uo);
  p->handle = 1; /* to close even when the spawn failed */
  if (err < 0) {
    close_pipes(pipes);
    return err;
  }
  p->pid = p->h.process.pid;
  return 0;
}

/* ---- posix_spawn and a pidfd --------------------------------------------- */

#ifdef LOOM_PIDFD
extern char **environ;

static uv_once_t probe_once = UV_ONCE_INIT;
static int have_pidfd;

/* pidfd_open came with Linux 5.3; a seccomp filter may refuse it too. */
static void probe(void) {
  int fd = (int)syscall(SYS_pidfd_open, getpid(), 0);
  if (fd >= 0) {
    have_pidfd = 1;
    close(fd);
  }
}

/* Whether posix_spawnp finds the file where uv_spawn would: glibc's looks
 * in this process's PATH, libuv's execvp in the child's. */
static int same_path(char **env) {
  if (env == NULL)
    return 1;
  const char *mine = getenv("PATH");
  for (char **e = env; *e; e++)
    if (strncmp(*e, "PATH=", 5) == 0)
      return mine && strcmp(*e + 5, mine) == 0;
  return mine == NULL;
}

static void pidfd_cb(uv_poll_t *h, int status, int events) {
  (void)events;
  loom_process_t *p = h->data;
  int ws = 0;
  pid_t r;
  do
    r = waitpid(p->pid, &ws, WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r == 0) {
    /* Not exited after all; libuv stops a poll that reports an error. */
    if (status < 0)
      uv_poll_start(h, UV_READABLE, pidfd_cb);
    return;
  }
  uv_poll_stop(h);
  p->exited = 1;
  if (r < 0) {
    /* Reaped by someone else (SIGCHLD set to SIG_IGN does that): the status
     * is lost. */
    p->code = -1;
  } else if (WIFSIGNALED(ws)) {
    p->term_signal = WTERMSIG(ws);
  } else {
    p->code = WEXITSTATUS(ws);
  }
  p->on_exit(p);
}

/* The child's end of a pipe: dup2'd onto 0, 1 or 2 in the child, so never
 * one of those itself (the parent's may be closed), or another's dup2 could
 * overwrite it first. */
static int child_end(int fd) {
  if (fd >= 3)
    return fd;
  int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  int e = errno;
  close(fd);
  errno = e;
  return moved;
}

/* What posix_spawn needs: the file actions and attributes, the pipes'
 * child ends (closed in the parent once the child started). */
typedef struct spawn_setup {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  int child_fd[3];
} spawn_setup;

static int setup(loom_loop_t *loop, spawn_setup *s, const loom_process_options_t *o,
                 loom_stream_t *pipes[3]) {
  int err = 0;
  for (int i = 0; i < 3 && !err; i++) {
    if (o->stdio[i] == LOOM_STDIO_PIPE) {
      int sv[2];
      if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return -errno;
      s->child_fd[i] = child_end(sv[1]);
      if (s->child_fd[i] < 0)
        err = -errno;
      else if ((pipes[i] = loom_stream_new(loop, LOOM_STREAM_PIPE, &err)) != NULL)
        err = uv_pipe_open(&pipes[i]->h.pipe, sv[0]);
      if (err) {
        close(sv[0]);
        return err;
      }
      err = posix_spawn_file_actions_adddup2(&s->fa, s->child_fd[i], i);
    } else if (o->stdio[i] == LOOM_STDIO_NULL) {
      err = posix_spawn_file_actions_addopen(&s->fa, i, "/dev/null", i == 0 ? O_RDONLY : O_RDWR, 0);
    } else {
      /* uv_spawn's child makes an inherited 0, 1 or 2 blocking, for
       * programs that do not expect EAGAIN; the file description is
       * shared, so doing it here is the same. */
      int fl = fcntl(i, F_GETFL);
      if (fl >= 0 && (fl & O_NONBLOCK))
        fcntl(i, F_SETFL, fl & ~O_NONBLOCK);
    }
  }
  if (!err && o->cwd)
    err = posix_spawn_file_actions_addchdir_np(&s->fa, o->cwd);
#if __GLIBC_PREREQ(2, 34)
  /* The child gets 0, 1 and 2 and nothing else, as Python's subprocess
   * does by default: what other code in this process opened without
   * close-on-exec (Lua's io.open, a driver's socket) would otherwise live
   * on in the child, holding a file or a database connection open after
   * this process closed it. Added after the dup2s, whose sources it closes. */
  if (!err)
    err = posix_spawn_file_actions_addclosefrom_np(&s->fa, 3);
#endif
  if (err)
    return -err;
  /* What uv_spawn's child does before execvp: signals 1 to 31 to their
   * defaults (those above are glibc's own), none blocked. */
  sigset_t set;
  sigemptyset(&set);
  err = posix_spawnattr_setsigmask(&s->attr, &set);
  for (int n = 1; n < 32; n++)
    if (n != SIGKILL && n != SIGSTOP)
      sigaddset(&set, n);
  if (!err)
    err = posix_spawnattr_setsigdefault(&s->attr, &set);
  if (!err)
    err = posix_spawnattr_setflags(&s->attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  return -err;
}

static int spawn_pidfd(loom_loop_t *loop, loom_process_t *p, const loom_process_options_t *o,
                       loom_stream_t *pipes[3]) {
  spawn_setup s = {.child_fd = {-1, -1, -1}};
  int err = -posix_spawn_file_actions_init(&s.fa);
  if (err)
    return err;
  err = -posix_spawnattr_init(&s.attr);
  if (err) {
    posix_spawn_file_actions_destroy(&s.fa);
    return err;
  }
  err = setup(loop, &s, o, pipes);
  pid_t pid = 0;
  if (!err) {
    char **env = o->env ? o->env : environ;
    err = -(strchr(o->file, '/') ? posix_spawn(&pid, o->file, &s.fa, &s.attr, o->args, env)
                                 : posix_spawnp(&pid, o->file, &s.fa, &s.attr, o->args, env));
  }
  posix_spawn_file_actions_destroy(&s.fa);
  posix_spawnattr_destroy(&s.attr);
  for (int i = 0; i < 3; i++)
    if (s.child_fd[i] >= 0)
      close(s.child_fd[i]);
  if (err) {
    close_pipes(pipes);
    return err;
  }
  p->pid = pid;
  int fd = (int)syscall(SYS_pidfd_open, pid, 0); /* close-on-exec always */
  err = fd < 0 ? -errno : uv_poll_init(&loop->uv, &p->h.poll, fd);
  if (!err) {
    p->pidfd = fd;
    p->handle = 1;
    p->h.poll.data = p;
    err = uv_poll_start(&p->h.poll, UV_READABLE, pidfd_cb);
  } else if (fd >= 0) {
    close(fd);
  }
  if (err) {
    /* Out of descriptors or memory, rarely: the child must not outlive the
     * failure unwatched. */
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    p->exited = 1;
    close_pipes(pipes);
  }
  return err;
}
#endif

/* ---- either -------------------------------------------------------------- */

int loom_process_spawn(loom_loop_t *loop, loom_process_t *p, const loom_process_options_t *o,
                       loom_stream_t *pipes[3], loom_process_cb on_exit) {
  void *data = p->data;
  memset(p, 0, sizeof *p);
  p->data = data;
  p->loop = loop;
  p->pidfd = -1;
  p->on_exit = on_exit;
  for (int i = 0; i < 3; i++)
    pipes[i] = NULL;
#ifdef LOOM_PIDFD
  uv_once(&probe_once, probe);
  if (have_pidfd && (strchr(o->file, '/') || same_path(o->env))) {
    int rc = spawn_pidfd(loop, p, o, pipes);
    /* execvp runs a file without "#!" with /bin/sh; posix_spawn refuses it. */
    if (rc != -ENOEXEC)
      return rc;
  }
#endif
  return spawn_uv(loop, p, o, pipes);
}

int loom_process_kill(loom_process_t *p, int sig) {
  if (p->exited)
    return UV_ESRCH;
#ifdef LOOM_PIDFD
  /* Through the pidfd: never another process that got the number. */
  if (p->pidfd >= 0)
    return syscall(SYS_pidfd_send_signal, p->pidfd, sig, NULL, 0) == 0 ? 0 : -errno;
#endif
  return uv_process_kill(&p->h.process, sig);
}

/* A child still running when its handle closes (its state closed, say,
 * while a daemon-like child ran on) has nobody left to reap it, and would
 * stay a zombie once it exits until this process ends: a detached thread
 * waits for it instead. Rare, and cheaper than a reaper kept for it. */
static void *reap_later(void *arg) {
  pid_t pid = (pid_t)(intptr_t)arg;
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
  }
  return NULL;
}

/* The reaper outlives the state, and with it the module: Lua unloads a C
 * module (dlclose) as the state that loaded it closes, and a reaper still
 * starting, or still in waitpid when the process exits, would then run
 * code no longer mapped (seen as a crash at exit, about one run in
 * twelve). Once a reaper exists, the module it runs in stays loaded. */
static void keep_module_loaded(void) {
  static atomic_int kept;
  if (atomic_exchange(&kept, 1))
    return;
  Dl_info info;
  if (dladdr((void *)reap_later, &info) && info.dli_fname)
    /* Never closed: the handle is the pin. */
    // cppcheck-suppress leakReturnValNotUsed
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

static void reap_in_background(pid_t pid) {
  pthread_attr_t attr;
  pthread_t thread;
  keep_module_loaded();
  if (pthread_attr_init(&attr) != 0)
    return;
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  (void)pthread_create(&thread, &attr, reap_later, (void *)(intptr_t)pid);
  pthread_attr_destroy(&attr);
}

void loom_process_close(loom_process_t *p, loom_process_cb on_closed) {
  p->on_closed = on_closed;
  if (!p->handle) {
    if (on_closed)
      on_closed(p);
    return;
  }
  if (uv_is_closing((uv_handle_t *)&p->h))
    return;
  /* A child that exited while nobody looked is reaped now, one still
   * running once it exits: no zombie either way. */
  if (!p->exited && p->pid > 0) {
    if (waitpid(p->pid, NULL, WNOHANG) == p->pid)
      p->exited = 1;
    else
      reap_in_background(p->pid);
  }
  uv_close((uv_handle_t *)&p->h, closed_cb);
}
