#!/usr/bin/env sh
# Programs the tests run that do not come from PyPI: Prometheus and promtool (Debian's
# `prometheus` package). Installed with apt-get when missing (as root, or through sudo).
set -eu
missing=""
command -v prometheus >/dev/null 2>&1 || missing="prometheus"
command -v promtool >/dev/null 2>&1 || missing="prometheus"
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "The tests need Prometheus and promtool on PATH (Debian/Ubuntu: apt-get install prometheus)." >&2
  exit 1
fi
as_root=""
[ "$(id -u)" -eq 0 ] || as_root="sudo"
echo "installing Debian's prometheus package for the tests ..."
$as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
