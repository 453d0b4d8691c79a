#!/usr/bin/env bash
# Installs (as root) or names (otherwise) the Debian packages loom needs to
# build, test and benchmark. Quiet and quick when everything is present.
set -euo pipefail

packages=(
  gcc make cmake pkg-config           # the build
  lua5.4 liblua5.4-dev libuv1-dev     # loom itself
  libpq-dev                           # the PostgreSQL driver
  libsqlite3-dev                      # the SQLite driver
  libmariadb-dev                      # the MySQL/MariaDB driver
  lua-busted luarocks                 # tests and install checks
  lua-luv                             # a host owning the loop, in the embedding spec
  postgresql postgresql-contrib       # the test server (contrib has pgbench)
  openssl                             # throwaway TLS certificates for the test servers
  mariadb-server mariadb-client       # the MariaDB test server (and mariadb-slap)
)
if [ "${LOOM_DEPS_BENCH:-}" = 1 ]; then
  packages+=(lua-cqueues lua-sql-postgres lua-sql-mysql lua-sql-sqlite3 python3-asyncpg)
fi

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "loom needs these Debian packages:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
