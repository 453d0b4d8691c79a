/* test/certs.h. */
#include "certs.h"
#include <unistd.h>
#include "runner.h"

void loom_test_certs_make(char *dir, size_t len) {
  snprintf(dir, len, "/tmp/loom-tls.XXXXXX");
  ASSERT(mkdtemp(dir) != NULL);
  char cmd[512];
  snprintf(cmd, sizeof cmd, "bash %s/tls_certs.sh %s", LOOM_TEST_DIR, dir);
  ASSERT_EQ(system(cmd), 0);
}

void loom_test_certs_remove(const char *dir) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  ASSERT_EQ(system(cmd), 0);
}
