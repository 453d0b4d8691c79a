/* The one part of core/spin.h that needs a system header's extensions. */
#define _GNU_SOURCE
#include <sched.h>
#include "spin.h"

int loom_spin_cpu(void) {
#ifdef __linux__
  return sched_getcpu();
#else
  return -1;
#endif
}
