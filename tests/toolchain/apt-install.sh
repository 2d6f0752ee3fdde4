#!/bin/sh
# Installs the Debian packages named as arguments that are not installed yet
# (as root); prints what it did. Safe to run again.
#   sh tests/toolchain/apt-install.sh PACKAGE...
set -eu
[ "$(id -u)" = 0 ] || { echo "apt-install: run as root (apt-get)" >&2; exit 1; }
missing=""
for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing="$missing $p"
done
if [ -z "$missing" ]; then
    echo "apt-install: all present"
    exit 0
fi
echo "apt-install: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086 # a list of package names
apt-get install -y -qq --no-install-recommends $missing >/dev/null
