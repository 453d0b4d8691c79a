#!/usr/bin/env bash
# Runs a command with LOOM_PG_URL set: to the server already given (as
# scripts/test.sh exports it), or else to a throwaway server started here
# and stopped when the command ends. No server is a failure, never a skip.
#   with_pg.sh COMMAND [ARGS...]
set -uo pipefail
if [ -n "${LOOM_PG_URL:-}" ]; then
  exec "$@"
fi
here=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -u /tmp/loom-pg.XXXXXX)
trap 'bash "$here/spec/support/pg_server.sh" stop "$dir" >/dev/null 2>&1' EXIT
if ! bash "$here/spec/support/pg_server.sh" start "$dir" >&2; then
  echo "FAIL: no PostgreSQL test server could be started (see above)" >&2
  exit 1
fi
LOOM_PG_URL=$(cat "$dir/url")
export LOOM_PG_URL
"$@"
