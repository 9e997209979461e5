#!/usr/bin/env sh
# Programs the tests run that do not come from PyPI: Prometheus and promtool (Debian's
# `prometheus` package). Installed with apt-get when missing (as root, or through sudo).
set -eu
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 && exit 0
exec "$(dirname "$0")/apt-install.sh" prometheus "the tests"
