#!/bin/sh
# Installs what the VM tests (tests/vm/) and the VM benchmark need, from
# Debian's packages: QEMU for both architectures, the image builder, the
# NoCloud seed ISO writer and the SSH client. Safe to run again.
#
#   sh tests/toolchain/install-vm-deps.sh
set -eu

[ "$(id -u)" = 0 ] || { echo "install-vm-deps: run as root (apt-get)" >&2; exit 1; }

packages="qemu-system-x86 qemu-system-arm qemu-utils qemu-user-static mmdebstrap arch-test
    genisoimage openssh-client e2fsprogs curl ca-certificates python3"

missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing="$missing $p"
done
if [ -z "$missing" ]; then
    echo "install-vm-deps: all present"
    exit 0
fi
echo "install-vm-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086 # a list of package names
apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "install-vm-deps: done"
