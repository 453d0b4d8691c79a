/* TLS for the I/O binding (lua/io/tls.c): the `tls` option of
 * loom.tcp.connect and loom.tcp.listen, the handshake, s:alpn(), and TLS
 * failures as loom's errors of kind `tls`. */
#ifndef LM_TLS_H
#define LM_TLS_H

#include "lm_io.h"

/* Raises err from s's read or write: a TLS failure as kind `tls` (code
 * "verify", "truncated"..., message OpenSSL's reason), anything else as
 * lm_io_error does. */
int lm_stream_error(lua_State *L, const loom_stream_t *s, int err, const char *what);

/* After lm_open_stream: the context and handshake classes, s:alpn(). */
void lm_open_tls(lua_State *L);
/* core._tls_context and core._starttls (tls.c says what they take). */
int lm_tls_context(lua_State *L);
int lm_tls_start(lua_State *L);

#endif
