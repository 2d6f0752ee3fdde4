#!/bin/sh
# Builds containerd 2.x (containerd, ctr, containerd-shim-runc-v2) from the Go
# module proxy for the host tests and the VM images: Debian ships only
# containerd 1.6, and the current gVisor shim speaks containerd 2's shim
# bootstrap protocol.
#
#   sh tests/toolchain/build-containerd.sh [--arch ARCH]              build (skips what is cached)
#   sh tests/toolchain/build-containerd.sh [--arch ARCH] --print-dir  print the bin directory only
#
# ARCH is x86_64 or aarch64 (default: this machine's). This machine's arch
# goes to containerd-<version>/bin, another one to containerd-<version>/bin-<arch>.
set -eu

version=${GVISOR_FLEET_CONTAINERD_VERSION:-v2.4.2}
cache=${GVISOR_FLEET_CACHE:-$HOME/.cache/gvisor-fleet}
arch=$(uname -m)
if [ "${1:-}" = "--arch" ]; then
    arch=${2:?build-containerd: --arch needs x86_64 or aarch64}
    shift 2
fi
case $arch in
    x86_64) goarch=amd64 ;;
    aarch64) goarch=arm64 ;;
    *) echo "build-containerd: unknown architecture '$arch' (x86_64 or aarch64)" >&2; exit 1 ;;
esac
out="$cache/containerd-$version/bin"
[ "$arch" = "$(uname -m)" ] || out="$out-$arch"
if [ "${1:-}" = "--print-dir" ]; then
    echo "$out"
    exit 0
fi
if [ -x "$out/containerd" ] && [ -x "$out/ctr" ] && [ -x "$out/containerd-shim-runc-v2" ]; then
    echo "build-containerd: cached containerd $version ($arch) in $out"
    exit 0
fi
command -v go >/dev/null 2>&1 || { echo "build-containerd: Go is required" >&2; exit 1; }

work="$cache/containerd-$version-module"
mkdir -p "$work" "$out"
cd "$work"
[ -f go.mod ] || go mod init gvisor-fleet.test/containerd-build >/dev/null 2>&1
echo "build-containerd: fetching github.com/containerd/containerd/v2@$version"
GOFLAGS=-mod=mod go get "github.com/containerd/containerd/v2@$version" >/dev/null 2>&1 ||
    GOFLAGS=-mod=mod go get "github.com/containerd/containerd/v2@$version"
tags="no_btrfs no_devmapper no_zfs no_aufs"
for bin in containerd ctr containerd-shim-runc-v2; do
    [ -x "$out/$bin" ] && continue
    echo "build-containerd: building $bin $version for $arch (a few minutes on 2 cores)"
    CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOFLAGS=-mod=mod go build -trimpath -tags "$tags" \
        -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$version" \
        -o "$out/$bin.tmp" "github.com/containerd/containerd/v2/cmd/$bin"
    mv "$out/$bin.tmp" "$out/$bin"
done
echo "build-containerd: built containerd $version ($arch) in $out"
