/* loom's I/O binding, opened with loom.core: the classes and the hidden
 * constructors (core._connect, core._listen, core._dns_resolve) that
 * lua/loom/tcp.lua, unix.lua and dns.lua wrap, and what every I/O call
 * hands out alike: its errors and socket addresses. */
#include <signal.h>
#include <string.h>
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

/* What a peer or the network did is `connection`; a resolver's failure
 * `dns`; a system call's `io`. */
static const char *kind_of(int err) {
  if (strncmp(uv_err_name(err), "EAI_", 4) == 0)
    return "dns";
  switch (err) {
  case UV_ETIMEDOUT:
    return "timeout";
  case UV_ECONNREFUSED: case UV_ECONNRESET: case UV_ECONNABORTED: case UV_EPIPE:
  case UV_ENETUNREACH: case UV_EHOSTUNREACH: case UV_ENOTCONN: case UV_ENETDOWN:
  case UV_EHOSTDOWN:
    return "connection";
  default:
    return "io";
  }
}

void lm_io_push_error(lua_State *L, int err, const char *what) {
  lm_push_error(L, kind_of(err), "%s: %s", what, uv_strerror(err));
  lua_pushstring(L, uv_err_name(err));
  lua_setfield(L, -2, "code");
}

const char *lm_io_shown(lua_State *L, const char *name) {
  /* A host name is at most 253 bytes; what is longer is no name, and an
   * error message need not carry all of it. */
  size_t len = strlen(name);
  if (len <= 256)
    return name;
  lua_pushinteger(L, (lua_Integer)len);
  const char *bytes = lua_tostring(L, -1);
  return lua_pushfstring(L, "%s... (%s bytes)", lua_pushlstring(L, name, 64), bytes);
}

int lm_io_error(lua_State *L, int err, const char *what) {
  lm_io_push_error(L, err, what);
  return lua_error(L);
}

void lm_io_push_sockaddr(lua_State *L, const struct sockaddr *sa) {
  char ip[INET6_ADDRSTRLEN] = "";
  int port;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    uv_ip4_name(in, ip, sizeof ip);
    port = ntohs(in->sin_port);
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    uv_ip6_name(in6, ip, sizeof ip);
    port = ntohs(in6->sin6_port);
  } else {
    lua_pushboolean(L, 0);
    return;
  }
  lua_createtable(L, 0, 3);
  lua_pushstring(L, ip);
  lua_setfield(L, -2, "address");
  lua_pushinteger(L, port);
  lua_setfield(L, -2, "port");
  lua_pushstring(L, sa->sa_family == AF_INET ? "inet" : "inet6");
  lua_setfield(L, -2, "family");
}
