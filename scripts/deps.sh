#!/usr/bin/env bash
# Installs (as root) or names (otherwise) the Debian packages loom needs.
# Quiet and quick when everything is present.
#   deps.sh [GROUP...]   build   compile loom (what the demo and the luarocks install need)
#                        pg      a throwaway PostgreSQL server (scripts/example.sh)
#                        mysql   a throwaway MariaDB server (scripts/example.sh)
#                        test    everything scripts/test.sh runs (the default)
#   LOOM_DEPS_BENCH=1    also the peers bench/ compares loom with
set -euo pipefail

build=(
  gcc make cmake pkg-config           # the build (cmake's default generator runs make)
  lua5.4 liblua5.4-dev libuv1-dev     # loom itself
  libpq-dev                           # the PostgreSQL driver (LOOM_WITH_POSTGRES)
  libsqlite3-dev                      # the SQLite driver (LOOM_WITH_SQLITE)
  libmariadb-dev                      # the MySQL/MariaDB driver (LOOM_WITH_MYSQL)
  lua-cjson                           # loom.jobs' JSON payloads
)
pg=(postgresql openssl)               # openssl: throwaway TLS certificates
mysql=(mariadb-server mariadb-client openssl)
test=(
  "${build[@]}"
  lua-busted luarocks                 # specs and the rockspec install check
  lua-check cppcheck                  # scripts/lint.sh
  lua-luv                             # a host owning the loop, in the embedding spec
  "${pg[@]}" postgresql-contrib       # contrib has pgbench
  "${mysql[@]}"                       # mariadb-client has mariadb-slap
)

[ $# -gt 0 ] || set -- test
packages=()
for group in "$@"; do
  case "$group" in
  build) packages+=("${build[@]}") ;;
  pg) packages+=("${pg[@]}") ;;
  mysql) packages+=("${mysql[@]}") ;;
  test) packages+=("${test[@]}") ;;
  *) echo "deps.sh: unknown group '$group' (build, pg, mysql, test)" >&2; exit 2 ;;
  esac
done
if [ "${LOOM_DEPS_BENCH:-}" = 1 ]; then
  packages+=("${test[@]}" lua-cqueues lua-sql-postgres lua-sql-mysql lua-sql-sqlite3 python3-asyncpg)
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
