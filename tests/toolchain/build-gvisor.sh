#!/bin/sh
# Builds a current runsc and containerd-shim-runsc-v1 for x86_64 and aarch64 from
# gVisor's synthetic `go` branch, for the test suite. The proxy no longer answers the
# `@go` branch query, so the build pins one of the branch's pseudo-versions it serves
# (override with GVISOR_GO_VERSION; `go list -m gvisor.dev/gvisor@latest` names the newest).
# Debian's runsc is from 2022; the tests need a current one too.
#
#   sh tests/toolchain/build-gvisor.sh              build (skips what is cached)
#   sh tests/toolchain/build-gvisor.sh --print-dir  print the output directory only
#
# Output: $GVISOR_FLEET_CACHE/gvisor-go/<arch>/{runsc,containerd-shim-runsc-v1},
# $GVISOR_FLEET_CACHE/gvisor-go/VERSION (the module pseudo-version) and
# RUNSC_VERSION (what `runsc --version` prints: go-<commit time>-<commit>).
set -eu

cache=${GVISOR_FLEET_CACHE:-$HOME/.cache/gvisor-fleet}
out="$cache/gvisor-go"
if [ "${1:-}" = "--print-dir" ]; then
    echo "$out"
    exit 0
fi

command -v go >/dev/null 2>&1 || { echo "build-gvisor: Go is required (apt-get install golang or use the Go toolchain)" >&2; exit 1; }

pin=${GVISOR_GO_VERSION:-v0.0.0-20260905035102-160fafc42237}
done_all=true
for arch in x86_64 aarch64; do
    for bin in runsc containerd-shim-runsc-v1; do
        [ -x "$out/$arch/$bin" ] || done_all=false
    done
done
if $done_all && [ "$(cat "$out/VERSION" 2>/dev/null)" = "$pin" ] && [ -s "$out/RUNSC_VERSION" ]; then
    echo "build-gvisor: cached $(cat "$out/VERSION") in $out"
    exit 0
fi

work="$cache/gvisor-go-module"
# Binaries of another pin are stale; a build cut short (no VERSION yet) resumes.
if [ -s "$out/VERSION" ] && [ "$(cat "$out/VERSION")" != "$pin" ]; then rm -rf "$out"; fi
# A finished build whose runsc predates the version stamp (VERSION_MISSING).
if [ -s "$out/VERSION" ] && ! [ -s "$out/RUNSC_VERSION" ]; then rm -f "$out"/*/runsc; fi
mkdir -p "$work" "$out"
cd "$work"
[ -f go.mod ] || go mod init gvisor-fleet.test/gvisor-build >/dev/null 2>&1
echo "build-gvisor: resolving gvisor.dev/gvisor@$pin from the Go module proxy"
GOFLAGS=-mod=mod go get "gvisor.dev/gvisor@$pin" >/dev/null 2>&1 ||
    GOFLAGS=-mod=mod go get "gvisor.dev/gvisor@$pin"
version=$(go list -m -f '{{.Version}}' gvisor.dev/gvisor)
src=$(go list -m -f '{{.Dir}}' gvisor.dev/gvisor)
# Upstream stamps `git describe` into runsc/version.version (Bazel x_defs, e.g.
# release-20261116.0); a go-branch build names its commit time and commit.
runsc_version="go-$(echo "$version" | cut -d- -f2-)"

# The shim lowers its own OOM score to -999 and gives up when it may not.
# That needs CAP_SYS_RESOURCE, which some CI sandboxes (this project's
# included) drop; real hosts have it. The test build ignores that failure (its stdout is a protocol, so no log line),
# like containerd's own runc shim does in user namespaces. Nothing else changes.
shim_module="$cache/gvisor-go-shim-module"
if ! [ -f "$shim_module/patched-2-$version" ]; then
    rm -rf "$shim_module"
    mkdir -p "$shim_module"
    cp -r "$src" "$shim_module/gvisor"
    chmod -R u+w "$shim_module/gvisor"
    cp go.mod go.sum "$shim_module/"
    manager="$shim_module/gvisor/pkg/shim/v1/manager.go"
    grep -q 'failed to set OOM Score on shim: %w' "$manager" ||
        { echo "build-gvisor: $manager changed upstream; update the OOM score patch" >&2; exit 1; }
    sed -i 's|return shim.BootstrapParams{}, fmt.Errorf("failed to set OOM Score on shim: %w", err)|_ = err // tolerated: see build-gvisor.sh|' "$manager"
    (cd "$shim_module" && go mod edit -replace gvisor.dev/gvisor=./gvisor)
    touch "$shim_module/patched-2-$version"
fi

for arch in x86_64 aarch64; do
    case $arch in
        x86_64) goarch=amd64 ;;
        aarch64) goarch=arm64 ;;
    esac
    mkdir -p "$out/$arch"
    for pair in "runsc:gvisor.dev/gvisor/runsc:$work" "containerd-shim-runsc-v1:gvisor.dev/gvisor/shim:$shim_module"; do
        bin=${pair%%:*}
        rest=${pair#*:}
        pkg=${rest%%:*}
        module=${rest#*:}
        if [ -x "$out/$arch/$bin" ]; then
            echo "build-gvisor: cached $arch/$bin"
            continue
        fi
        echo "build-gvisor: building $arch/$bin ($version; about a minute each on 2 cores)"
        (cd "$module" && CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOFLAGS=-mod=mod \
            go build -trimpath -ldflags "-s -w -X gvisor.dev/gvisor/runsc/version.version=$runsc_version" \
            -o "$out/$arch/$bin.tmp" "$pkg")
        mv "$out/$arch/$bin.tmp" "$out/$arch/$bin"
    done
done
echo "$version" > "$out/VERSION"
echo "$runsc_version" > "$out/RUNSC_VERSION"
echo "build-gvisor: built $runsc_version in $out"
