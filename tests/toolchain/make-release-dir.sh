#!/bin/sh
# Files the set-up's gVisor build (runsc and containerd-shim-runsc-v1 from
# tests/toolchain/build-gvisor.sh, both arches) as a local release directory
# laid out like gVisor's bucket, for gvisor-fleet:releaseDir:
#   DIR/RELEASE/<arch>/gvisor.tar.bz2 and gvisor.tar.bz2.sha512
#
#   sh tests/toolchain/make-release-dir.sh [RELEASE [DIR]]
#
# RELEASE defaults to the release stacks/Pulumi.local.yaml pins (the build is
# filed under that name; `runsc --version` on a host still says what it is),
# DIR to ${GVISOR_FLEET_CACHE:-~/.cache/gvisor-fleet}/local-releases, which
# stacks/Pulumi.local.yaml names. The archives are reproducible (fixed order,
# owner and time), so running it again changes nothing. Prints DIR.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
stack="$here/../../stacks/Pulumi.local.yaml"
release=${1:-$(sed -n 's/^ *gvisor-fleet:release: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$stack")}
dir=${2:-${GVISOR_FLEET_CACHE:-$HOME/.cache/gvisor-fleet}/local-releases}
src=$(sh "$here/build-gvisor.sh" --print-dir)
case $release in
    latest | [0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9] | [0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9].[0-9]*) ;;
    *) echo "make-release-dir: '$release' is not a release name (YYYYMMDD, YYYYMMDD.N or latest)" >&2; exit 1 ;;
esac
for arch in x86_64 aarch64; do
    for bin in runsc containerd-shim-runsc-v1; do
        [ -x "$src/$arch/$bin" ] ||
            { echo "make-release-dir: $src/$arch/$bin is missing; run sh tests/setup.sh first (it builds gVisor)" >&2; exit 1; }
    done
done
for arch in x86_64 aarch64; do
    out="$dir/$release/$arch"
    mkdir -p "$out"
    # Packed already from these very binaries: nothing to do (bzip2 takes minutes).
    from=$(cd "$src/$arch" && sha512sum runsc containerd-shim-runsc-v1)
    if [ -f "$out/gvisor.tar.bz2.sha512" ] && [ "$(cat "$out/.built-from" 2>/dev/null)" = "$from" ] &&
        (cd "$out" && sha512sum -c gvisor.tar.bz2.sha512 >/dev/null 2>&1); then
        continue
    fi
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$src/$arch" \
        -cf - runsc containerd-shim-runsc-v1 | bzip2 -9 > "$out/gvisor.tar.bz2.tmp"
    mv -f "$out/gvisor.tar.bz2.tmp" "$out/gvisor.tar.bz2"
    (cd "$out" && sha512sum gvisor.tar.bz2 > gvisor.tar.bz2.sha512.tmp && mv -f gvisor.tar.bz2.sha512.tmp gvisor.tar.bz2.sha512)
    printf '%s\n' "$from" > "$out/.built-from"
done
echo "$dir"
