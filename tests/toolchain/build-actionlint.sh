#!/bin/sh
# Builds actionlint, the GitHub Actions workflow linter, from the Go module
# proxy (module github.com/rhysd/actionlint) into a cache outside the repo, so
# lint checks .github/workflows/ offline once it is built.
#
#   sh tests/toolchain/build-actionlint.sh               build if missing, print the binary's path
#   sh tests/toolchain/build-actionlint.sh --print-path  print the path only (builds nothing)
#
# Then: "$(sh tests/toolchain/build-actionlint.sh --print-path)" .github/workflows/*.yml
# actionlint also runs shellcheck over every `run:` script when shellcheck is on PATH.
#
# GVISOR_FLEET_ACTIONLINT_VERSION picks another release; GVISOR_FLEET_CACHE
# moves the cache (default ~/.cache/gvisor-fleet). First build: about a minute
# on 2 cores with an empty module cache; later runs: instant (skipped).
set -eu

version=${GVISOR_FLEET_ACTIONLINT_VERSION:-1.7.12}
cache=${GVISOR_FLEET_CACHE:-$HOME/.cache/gvisor-fleet}
bin_dir=$cache/actionlint-$version/bin
bin=$bin_dir/actionlint

say() { echo "build-actionlint: $*" >&2; }

case ${1:-} in
    --print-path)
        printf '%s\n' "$bin"
        exit 0
        ;;
    "") ;;
    *)
        echo "usage: sh $0 [--print-path]" >&2
        exit 2
        ;;
esac

if [ -x "$bin" ]; then
    say "cached: $bin ($("$bin" -version 2>/dev/null | head -n 1))"
    printf '%s\n' "$bin"
    exit 0
fi

# This machine kind ships Go in /usr/local/go; Debian's golang-go works too if new enough.
PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null 2>&1 || {
    say "Go is required (go1.24 or newer): apt-get install golang-go, or put go on PATH"
    exit 1
}

say "building actionlint v$version with $(go version | cut -d' ' -f3)..."
start=$(date +%s)
mkdir -p "$bin_dir"
scratch=$(mktemp -d "$bin_dir/.build.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# GOTOOLCHAIN=local: never download another Go toolchain; fail instead.
build() {
    CGO_ENABLED=0 GOTOOLCHAIN=local GOBIN=$scratch \
        go install -trimpath -ldflags "-s -w" "github.com/rhysd/actionlint/cmd/actionlint@v$version"
}
if ! build; then
    # Offline: the Go module cache answers like a proxy for what it already holds.
    say "retrying from the Go module cache only"
    GOPROXY="file://$(go env GOMODCACHE)/cache/download" GOSUMDB=off build
fi
mv "$scratch/actionlint" "$bin"
say "built $bin in $(($(date +%s) - start))s"
printf '%s\n' "$bin"
