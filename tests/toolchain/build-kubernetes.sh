#!/bin/sh
# Builds the Kubernetes control plane and node for the cluster test tier from
# the Go module proxy (Debian 12 ships no kubelet or kube-apiserver): one
# multi-call binary (tests/toolchain/kubernetes/main.go) linked as
# kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kubectl.
# etcd and the CNI plugins come from Debian (etcd-server,
# containernetworking-plugins; tests/setup.sh installs them).
#
# k8s.io/kubernetes replaces its staging modules (k8s.io/api, client-go, ...)
# with directories of its own tree, which a module cannot do from the proxy;
# the wrapper module below requires it and points each staging module at its
# published v0.<minor>.<patch> instead.
#
#   sh tests/toolchain/build-kubernetes.sh              build (skips what is cached)
#   sh tests/toolchain/build-kubernetes.sh --print-dir  print the bin directory only
set -eu

version=${GVISOR_FLEET_KUBERNETES_VERSION:-v1.37.2}
cache=${GVISOR_FLEET_CACHE:-$HOME/.cache/gvisor-fleet}
src="$(cd "$(dirname "$0")" && pwd)/kubernetes"
out="$cache/kubernetes-$version/bin"
programs="kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl"
if [ "${1:-}" = "--print-dir" ]; then
    echo "$out"
    exit 0
fi
# The cache key includes the multi-call main, so a change to it rebuilds.
main_sum=$(sha256sum "$src/main.go" | cut -c1-12)
if [ -x "$out/kubernetes" ] && [ "$(cat "$out/.main-sha256" 2>/dev/null)" = "$main_sum" ]; then
    echo "build-kubernetes: cached Kubernetes $version in $out"
    exit 0
fi
command -v go >/dev/null 2>&1 || { echo "build-kubernetes: Go is required" >&2; exit 1; }

work="$cache/kubernetes-$version-module"
mkdir -p "$work" "$out"
cp "$src/main.go" "$work/main.go"
cd "$work"
if [ ! -f go.mod ]; then
    echo "build-kubernetes: resolving k8s.io/kubernetes@$version from the Go module proxy"
    go mod init gvisor-fleet.test/kubernetes >/dev/null 2>&1
    go mod edit -require "k8s.io/kubernetes@$version"
    staging_version="v0.${version#v1.}"
    # The staging modules are the ones k8s.io/kubernetes replaces with ./staging/ paths.
    go mod download -json "k8s.io/kubernetes@$version" >/dev/null
    modfile=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
    sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$modfile" |
        grep -v '^k8s.io/sample-' | while read -r module; do
        go mod edit -replace "$module=$module@$staging_version"
    done
fi
echo "build-kubernetes: building $programs $version as one binary (about 15-20 min cold on 2 cores)"
# nice: the machine building this is usually shared with other work.
CGO_ENABLED=0 GOFLAGS=-mod=mod nice -n 10 go build -trimpath \
    -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/client-go/pkg/version.gitVersion=$version" \
    -o "$out/kubernetes.tmp" .
mv "$out/kubernetes.tmp" "$out/kubernetes"
for program in $programs; do
    ln -sf kubernetes "$out/$program"
done
echo "$main_sum" >"$out/.main-sha256"
echo "build-kubernetes: built Kubernetes $version in $out"
