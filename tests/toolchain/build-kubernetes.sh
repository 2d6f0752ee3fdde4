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
# --arch arm64 cross-builds only what the cluster tier's second node (the
# aarch64 test VM) runs, in a directory of its own: the upstream kubelet, and
# into cni/ the CNI plugins of its pod network (bridge, host-local, loopback,
# portmap; the VM image has none) at Debian's version, which the amd64 node
# uses. The control plane stays amd64.
#
#   sh tests/toolchain/build-kubernetes.sh              build (skips what is cached)
#   sh tests/toolchain/build-kubernetes.sh --print-dir  print the bin directory only
#   sh tests/toolchain/build-kubernetes.sh --arch arm64 [--print-dir]
set -eu

arch=amd64
if [ "${1:-}" = "--arch" ]; then
    arch=${2:?build-kubernetes: --arch needs amd64 or arm64}
    shift 2
fi
case "$arch" in
amd64 | arm64) ;;
*) echo "build-kubernetes: unsupported --arch $arch (amd64 or arm64)" >&2; exit 2 ;;
esac

version=${GVISOR_FLEET_KUBERNETES_VERSION:-v1.37.2}
cache=${GVISOR_FLEET_CACHE:-$HOME/.cache/gvisor-fleet}
src="$(cd "$(dirname "$0")" && pwd)/kubernetes"
out="$cache/kubernetes-$version/bin"
programs="kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl"
if [ "$arch" != amd64 ]; then
    out="$cache/kubernetes-$version-$arch/bin"
    programs=kubelet
fi
if [ "${1:-}" = "--print-dir" ]; then
    echo "$out"
    exit 0
fi
# The cache key includes the multi-call main, so a change to it rebuilds.
main_sum=$(sha256sum "$src/main.go" | cut -c1-12)
if [ "$arch" != amd64 ]; then
    main_sum=upstream-kubelet
fi
need_go() { command -v go >/dev/null 2>&1 || { echo "build-kubernetes: Go is required" >&2; exit 1; }; }
cni_version=v1.1.1 # Debian 12's containernetworking-plugins, which the amd64 node uses
cni_plugins="bridge host-local loopback portmap"
cni_missing=""
for plugin in $cni_plugins; do
    [ -x "$out/cni/$plugin" ] || cni_missing=yes
done
if [ "$arch" != amd64 ] && [ -n "$cni_missing" ]; then
    need_go
    cni_work="$cache/cni-plugins-$cni_version-module"
    mkdir -p "$cni_work" "$out/cni"
    cd "$cni_work"
    [ -f go.mod ] || go mod init gvisor-fleet.test/cni-plugins >/dev/null 2>&1
    go mod edit -require "github.com/containernetworking/plugins@$cni_version"
    packages=""
    for plugin in $cni_plugins; do
        case $plugin in
        host-local) packages="$packages github.com/containernetworking/plugins/plugins/ipam/$plugin" ;;
        portmap) packages="$packages github.com/containernetworking/plugins/plugins/meta/$plugin" ;;
        *) packages="$packages github.com/containernetworking/plugins/plugins/main/$plugin" ;;
        esac
    done
    echo "build-kubernetes: building the CNI plugins $cni_version ($cni_plugins) for $arch"
    # shellcheck disable=SC2086 # one word per package
    CGO_ENABLED=0 GOARCH=$arch GOFLAGS=-mod=mod nice -n 10 go build -trimpath -ldflags "-s -w" -o "$out/cni/" $packages
    cd - >/dev/null
fi
if [ -x "$out/kubernetes" ] && [ "$(cat "$out/.main-sha256" 2>/dev/null)" = "$main_sum" ]; then
    echo "build-kubernetes: cached Kubernetes $version ($arch) in $out"
    exit 0
fi
need_go

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
package=. # the multi-call main
cold="about 11 min cold on 2 idle cores"
if [ "$arch" != amd64 ]; then
    package=k8s.io/kubernetes/cmd/kubelet
    cold="about 7 min cold on 2 idle cores"
fi
echo "build-kubernetes: building $programs $version for $arch as one binary ($cold)"
# nice: the machine building this is usually shared with other work.
CGO_ENABLED=0 GOARCH=$arch GOFLAGS=-mod=mod nice -n 10 go build -trimpath \
    -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/client-go/pkg/version.gitVersion=$version" \
    -o "$out/kubernetes.tmp" "$package"
mv "$out/kubernetes.tmp" "$out/kubernetes"
for program in $programs; do
    ln -sf kubernetes "$out/$program"
done
echo "$main_sum" >"$out/.main-sha256"
echo "build-kubernetes: built Kubernetes $version in $out"
