/* loom's I/O binding, opened with loom.core: the classes and the hidden
 * constructors (core._connect, core._listen, core._dns_resolve) that
 * lua/loom/tcp.lua, unix.lua and dns.lua wrap. */
#include "lm_io.h"

void lm_open_io(lua_State *L) {
  lm_open_stream(L);
  lm_open_connect(L);
  lm_open_listener(L);
  lm_open_dns(L);
}

const luaL_Reg lm_io_funcs[] = {
  {"_connect", lm_io_connect},
  {"_listen", lm_io_listen},
  {"_dns_resolve", lm_io_dns_resolve},
  {NULL, NULL}
};
