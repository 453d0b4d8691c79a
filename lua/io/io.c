/* loom's I/O binding, opened with loom.core: the classes and the hidden
 * constructors (core._connect, core._listen, core._dns_resolve) that
 * lua/loom/tcp.lua, unix.lua and dns.lua wrap. */
#include <signal.h>
#include "lm_io.h"
#include "lm_tls.h"

void lm_open_io(lua_State *L) {
  /* A write to a peer that has gone (a TLS alert or close_notify to a
   * closed socket, say) raises SIGPIPE, which ends the process; ignored,
   * the write fails with EPIPE instead, as libuv programs expect. A
   * handler the host installed stays. */
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
    signal(SIGPIPE, SIG_IGN);
  lm_open_stream(L);
  lm_open_connect(L);
  lm_open_listener(L);
  lm_open_dns(L);
  lm_open_tls(L);
}

const luaL_Reg lm_io_funcs[] = {
  {"_connect", lm_io_connect},
  {"_listen", lm_io_listen},
  {"_dns_resolve", lm_io_dns_resolve},
  {"_tls_context", lm_tls_context},
  {"_starttls", lm_tls_start},
  {NULL, NULL}
};
