/* Throwaway TLS certificates for the C tests: test/tls_certs.sh (the
 * openssl command) run into a fresh directory under /tmp. */
#ifndef LOOM_TEST_CERTS_H
#define LOOM_TEST_CERTS_H

#include <stddef.h>

/* Makes the directory and the certificates; dir gets its path. */
void loom_test_certs_make(char *dir, size_t len);
/* Removes the directory and everything in it. */
void loom_test_certs_remove(const char *dir);

#endif
