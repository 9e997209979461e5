#!/usr/bin/env sh
# apt-install.sh PACKAGE WHAT-FOR: install a Debian package with apt-get (as root, or through
# sudo), or say how to get it where there is no apt-get. For the programs the tests and the
# benchmarks run that do not come from PyPI.
set -eu
package="$1"
what_for="$2"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "$what_for needs Debian's $package package, or its programs on PATH (apt-get install $package)." >&2
  exit 1
fi
as_root=""
[ "$(id -u)" -eq 0 ] || as_root="sudo"
echo "installing Debian's $package package for $what_for ..."
$as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >/dev/null
