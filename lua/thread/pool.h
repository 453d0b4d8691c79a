/* What loom.thread's pools share between the side that submits jobs
 * (pool.c, the pool object on its state's thread) and the side that runs
 * them (worker.c, a Lua state on each worker thread). */
#ifndef LM_THREAD_POOL_H
#define LM_THREAD_POOL_H

#include "lm.h"
#include "workers.h"
#include "codec.h"
#include "xstream.h"

typedef struct tpool tpool;
typedef struct tjob tjob;

/* What the worker states are made from: shared by every thread, read only
 * once the pool exists. */
typedef struct tconfig {
  char *path, *cpath;
  char *setup;
  size_t setup_len;
  /* Held by the pool object and by the core pool (until its destroy). */
  _Atomic int refs;
  /* Threads whose state is not yet closed: the object's collection waits
   * for them. */
  _Atomic int live;
} tconfig;

struct tjob {
  loom_work_t work;
  tpool *pool;       /* NULL once the pool object is gone */
  lm_request *rq;    /* NULL once nobody waits */
  tjob *next, *prev; /* in the pool's list of jobs out */
  char *fn, *args;
  size_t fn_len, args_len;
  char *out;         /* results, or the error and its traceback */
  size_t out_len;
  /* Large values cross as streams (xstream.h), decoded as they are
   * encoded: the arguments, which the worker reads while the caller still
   * writes them, and the results, which the worker writes after the job's
   * done went back (in after_job) while the caller reads them. The job
   * holds a reference to each. */
  lm_xstream *args_stream;
  lm_xstream *out_stream;
  int fn_shared;     /* fn has no upvalue but _ENV: a worker may reuse it */
  int slice;         /* a map's job: the worker runs fn over args' items */
  int ok;            /* out holds results */
  int given_up;      /* its caller gave up on it: stuck in a blocking call */
  int stopped;       /* the job was stopped by a cancel */
  int status;        /* done's status */
  int finished;      /* done ran */
};

/* The hooks that make, interrupt and close a worker's state; the pool's
 * hooks_data is its tconfig. */
extern const loom_workers_hooks_t lm_worker_hooks;
/* On a worker thread: runs a job (loom_work_t.run). */
void lm_tjob_run(loom_work_t *work, void *data);
/* Frees a job and the messages it holds. */
void lm_tjob_free(tjob *j);
void lm_tconfig_unref(tconfig *cfg);

#endif
