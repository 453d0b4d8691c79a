#!/usr/bin/env bash
# The quick start's demo: builds loom (installing what the build needs when
# run as root) and runs examples/demo.lua. Needs no database server.
set -euo pipefail
exec bash "$(dirname "$0")/example.sh" "$(dirname "$0")/../examples/demo.lua"
