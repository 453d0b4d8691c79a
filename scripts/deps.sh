#!/usr/bin/env bash
# Installs (as root) or names (otherwise) the Debian packages loom needs.
# Quiet and quick when everything is present.
#   deps.sh [GROUP...]   build   compile loom (what the demo and the luarocks install need)
#                        pg      a throwaway PostgreSQL server (scripts/example.sh)
#                        mysql   a throwaway MariaDB server (scripts/example.sh)
#                        http    a throwaway nginx for loom.http (scripts/example.sh)
#                        test    everything scripts/test.sh runs (the default)
#   LOOM_DEPS_BENCH=1    also the peers bench/ compares loom with
set -euo pipefail

build=(
  gcc make cmake pkg-config           # the build (cmake's default generator runs make)
  lua5.4 liblua5.4-dev libuv1-dev     # loom itself
  libssl-dev                          # TLS (core/tls.c)
  libpq-dev                           # the PostgreSQL driver (LOOM_WITH_POSTGRES)
  libsqlite3-dev                      # the SQLite driver (LOOM_WITH_SQLITE)
  libmariadb-dev                      # the MySQL/MariaDB driver (LOOM_WITH_MYSQL)
  libcurl4-openssl-dev                # loom.http (LOOM_WITH_HTTP)
  ca-certificates                     # the CAs loom.http and TLS streams verify servers with
  lua-cjson                           # loom.jobs' JSON payloads
)
pg=(postgresql openssl)               # openssl: throwaway TLS certificates
mysql=(mariadb-server mariadb-client openssl)
http=(nginx libnginx-mod-http-lua openssl)
test=(
  "${build[@]}"
  lua-busted luarocks                 # specs and the rockspec install check
  lua-check cppcheck                  # scripts/lint.sh
  lua-luv                             # a host owning the loop, in the embedding spec
  openssl                             # throwaway certificates for the TLS tests (test/tls_certs.sh)
  lua-cqueues lua-http                # loom.cqueues under a lua-http server (cqueues_host_spec)
  libh2o-dev curl wrk                 # examples/embed/h2o_host and its spec
  "${pg[@]}" postgresql-contrib       # contrib has pgbench
  "${mysql[@]}"                       # mariadb-client has mariadb-slap
  "${http[@]}"                        # the HTTP client's throwaway server
)

[ $# -gt 0 ] || set -- test
packages=()
for group in "$@"; do
  case "$group" in
  build) packages+=("${build[@]}") ;;
  pg) packages+=("${pg[@]}") ;;
  mysql) packages+=("${mysql[@]}") ;;
  http) packages+=("${http[@]}") ;;
  test) packages+=("${test[@]}") ;;
  *) echo "deps.sh: unknown group '$group' (build, pg, mysql, http, test)" >&2; exit 2 ;;
  esac
done
if [ "${LOOM_DEPS_BENCH:-}" = 1 ]; then
  packages+=("${test[@]}" lua-cqueues lua-luaossl lua-sql-postgres lua-sql-mysql lua-sql-sqlite3 python3-asyncpg socat lua-http)
  # bench/host.sh and bench/http.sh: nginx with the Lua module, and Node (its
  # npm may come from the nodejs package, as NodeSource's does, or from
  # Debian's npm)
  packages+=(nginx libnginx-mod-http-lua nodejs)
fi

missing=()
for p in $(printf '%s\n' "${packages[@]}" | sort -u); do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "loom needs these Debian packages:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing Debian packages (a few minutes the first time): ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
