/* A child process and the parent's ends of its stdio pipes. It knows
 * nothing of Lua; its owner (lua/io/process.c) is told when the child
 * exited and when the process may be freed.
 *
 * Two ways to start and watch a child, one behavior:
 * - Linux: posix_spawn (glibc runs it as clone(CLONE_VM | CLONE_VFORK):
 *   no copy of the parent's page tables, which fork pays for in proportion
 *   to the parent's heap; the child's exec failure is its return code) and
 *   a pidfd watched on the loop: readable once the child exited, then
 *   waitpid reaps it. No SIGCHLD handler.
 * - Elsewhere, or when the kernel lacks pidfds (Linux < 5.3), or for what
 *   posix_spawn does differently from libuv's fork + execvp: uv_spawn.
 * Either way the child starts with every signal at its default and none
 * blocked (loom ignores SIGPIPE; its children must not), its stdio as
 * asked, and a pipe is a Unix socket pair, as uv_spawn makes them. */
#ifndef LOOM_PROCESS_H
#define LOOM_PROCESS_H

#include "loom.h"
#include "stream.h"

/* What a child's fd 0, 1 or 2 is. */
enum loom_stdio { LOOM_STDIO_PIPE, LOOM_STDIO_INHERIT, LOOM_STDIO_NULL };

typedef struct loom_process loom_process_t;
typedef void (*loom_process_cb)(loom_process_t *p);

typedef struct loom_process_options {
  const char *file;  /* looked up in the child's PATH unless it holds a slash */
  char **args;       /* args[0] first, NULL-ended */
  char **env;        /* NULL-ended "name=value"s; NULL: this process's */
  const char *cwd;   /* NULL: this process's */
  int stdio[3];      /* enum loom_stdio, for fds 0, 1 and 2 */
} loom_process_options_t;

struct loom_process {
  union {
    uv_process_t process; /* started by uv_spawn */
    uv_poll_t poll;       /* watches pidfd */
  } h;
  loom_loop_t *loop;
  int pidfd;         /* -1: uv_spawn's child (libuv reaps it) */
  int pid;
  int handle;        /* h holds an open handle */
  int exited;        /* reaped: code and term_signal hold */
  int64_t code;
  int term_signal;
  loom_process_cb on_exit;
  loom_process_cb on_closed;
  void *data;        /* the owner's */
};

/* Starts o->file in a child. pipes[i] gets a new stream (the parent's end)
 * for every LOOM_STDIO_PIPE, else NULL. on_exit runs once the child exited
 * and was reaped. Returns 0, or a libuv error: then no child runs and no
 * pipe was made. Either way, loom_process_close must follow. */
int loom_process_spawn(loom_loop_t *loop, loom_process_t *p, const loom_process_options_t *o,
                       loom_stream_t *pipes[3], loom_process_cb on_exit);

/* Sends sig. 0, UV_ESRCH when the child is gone, or another error. */
int loom_process_kill(loom_process_t *p, int sig);

/* Stops watching: on_exit never runs after it, and on_closed (may be NULL)
 * runs once p may be freed (right away when no handle was open). A child
 * still running is let go: nobody reaps it once it exits (as with libuv,
 * whose uv_close of a process handle does the same). */
void loom_process_close(loom_process_t *p, loom_process_cb on_closed);

#endif
