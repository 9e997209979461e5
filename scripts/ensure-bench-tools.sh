#!/usr/bin/env sh
# Programs the benchmarks run that do not come from PyPI: wrk, the HTTP load generator.
set -eu
command -v wrk >/dev/null 2>&1 && exit 0
exec "$(dirname "$0")/apt-install.sh" wrk "the benchmarks"
