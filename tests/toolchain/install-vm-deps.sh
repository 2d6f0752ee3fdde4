#!/bin/sh
# Installs what the VM tests (tests/vm/) and the VM benchmark need, from
# Debian's packages: QEMU for both architectures, the image builder, the
# NoCloud seed ISO writer and the SSH client. Safe to run again.
#
#   sh tests/toolchain/install-vm-deps.sh
set -eu

packages="qemu-system-x86 qemu-system-arm qemu-utils qemu-user-static mmdebstrap arch-test
    genisoimage openssh-client e2fsprogs curl ca-certificates python3"
# shellcheck disable=SC2086 # a list of package names
exec sh "$(dirname "$0")/apt-install.sh" $packages
