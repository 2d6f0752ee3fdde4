#!/bin/sh
# Builds upstream Kubernetes from the Go module proxy (Debian 12 ships no
# kubelet or kube-apiserver), for the cluster tier and for the local directory
# of kubeadm binaries and images (tests/toolchain/make-kubernetes-dir.sh):
#   bin/kubernetes   one multi-call binary (tests/toolchain/kubernetes/main.go)
#                    linked as kube-apiserver, kube-controller-manager,
#                    kube-scheduler, kubelet, kubectl and kubeadm
#   bin/pause        a pod sandbox's process (kubernetes/pause/main.go)
#   bin/etcd/etcd    etcd (kubernetes/etcd/main.go) at the version kubeadm's
#                    etcd image names (its tag 3.7.0-0: etcd v3.7.0)
#   bin/cni-plugins/ the CNI plugins kubeadm's nodes use (bridge, host-local,
#                    loopback, portmap), v1.7.1
# (the last two each with a .version file saying what is there).
# The cluster tier's node takes etcd and the CNI plugins from Debian
# (etcd-server, containernetworking-plugins; tests/setup.sh installs them).
#
# k8s.io/kubernetes replaces its staging modules (k8s.io/api, client-go, ...)
# with directories of its own tree, which a module cannot do from the proxy;
# the wrapper module below requires it and points each staging module at its
# published v0.<minor>.<patch> instead.
#
# --arch arm64 cross-builds what kubeadm's aarch64 nodes run (the local
# directory's arm64 half), in a directory of its own: the multi-call binary
# without the control plane (tag nodeonly: kubelet, kubectl, kubeadm), pause
# and the CNI plugins v1.7.1. The control plane stays amd64.
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
etcd_version=v3.7.0   # kubeadm v1.37.2's etcd image is 3.7.0-0 (`kubeadm config images list`)
cni_version=v1.7.1    # the CNI plugins of kubeadm's nodes
cache=${GVISOR_FLEET_CACHE:-$HOME/.cache/gvisor-fleet}
src="$(cd "$(dirname "$0")" && pwd)/kubernetes"
out="$cache/kubernetes-$version/bin"
programs="kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kubeadm"
tags=""
if [ "$arch" != amd64 ]; then
    out="$cache/kubernetes-$version-$arch/bin"
    programs="kubelet kubectl kubeadm"
    tags=nodeonly
fi
if [ "${1:-}" = "--print-dir" ]; then
    echo "$out"
    exit 0
fi
# One build at a time (the arches share a module; tests/run.sh builds in the
# background while a test may ask for the same): a second caller waits.
mkdir -p "$cache"
exec 9>"$cache/.build-kubernetes.lock"
flock 9
need_go() { command -v go >/dev/null 2>&1 || { echo "build-kubernetes: Go is required" >&2; exit 1; }; }
# nice: the machine building this is usually shared with other work.
go_build() { CGO_ENABLED=0 GOARCH=$arch GOFLAGS=-mod=mod nice -n 10 go build -trimpath "$@"; }

# The CNI plugins VERSION into DIR, from a module of their own; DIR/.version
# says the version.
cni_plugins="bridge host-local loopback portmap"
build_cni() {
    missing=""
    for plugin in $cni_plugins; do
        [ -x "$2/$plugin" ] || missing=yes
    done
    [ "$(cat "$2/.version" 2>/dev/null)" = "$1" ] || missing=yes
    [ -n "$missing" ] || return 0
    need_go
    mkdir -p "$cache/cni-plugins-$1-module" "$2"
    packages=""
    for plugin in $cni_plugins; do
        case $plugin in
        host-local) packages="$packages github.com/containernetworking/plugins/plugins/ipam/$plugin" ;;
        portmap) packages="$packages github.com/containernetworking/plugins/plugins/meta/$plugin" ;;
        *) packages="$packages github.com/containernetworking/plugins/plugins/main/$plugin" ;;
        esac
    done
    echo "build-kubernetes: building the CNI plugins $1 ($cni_plugins) for $arch"
    # shellcheck disable=SC2086 # one word per package
    (cd "$cache/cni-plugins-$1-module" && { [ -f go.mod ] || go mod init gvisor-fleet.test/cni-plugins >/dev/null 2>&1; } &&
        go mod edit -require "github.com/containernetworking/plugins@$1" &&
        go_build -ldflags "-s -w" -o "$2/" $packages)
    echo "$1" >"$2/.version"
}
build_cni "$cni_version" "$out/cni-plugins"

if [ "$arch" = amd64 ] && { [ ! -x "$out/etcd/etcd" ] || [ "$(cat "$out/etcd/.version" 2>/dev/null)" != "$etcd_version" ]; }; then
    need_go
    work="$cache/etcd-$etcd_version-module"
    mkdir -p "$work" "$out/etcd"
    cp "$src/etcd/main.go" "$work/main.go"
    echo "build-kubernetes: building etcd $etcd_version for $arch (about 1 min cold)"
    (cd "$work" && { [ -f go.mod ] || go mod init gvisor-fleet.test/etcd >/dev/null 2>&1; } &&
        go mod edit -require "go.etcd.io/etcd/server/v3@$etcd_version" &&
        go_build -ldflags "-s -w" -o "$out/etcd/etcd.tmp" . &&
        mv "$out/etcd/etcd.tmp" "$out/etcd/etcd")
    echo "$etcd_version" >"$out/etcd/.version"
fi

work="$cache/kubernetes-$version-module"
# The cache key is the sources (the multi-call main's and pause's) and the arch, so a change to either rebuilds.
main_sum=$(cat "$src"/*.go "$src/pause/main.go" | sha256sum | cut -c1-12)-$arch
if [ -x "$out/kubernetes" ] && [ -x "$out/pause" ] && [ "$(cat "$out/.main-sha256" 2>/dev/null)" = "$main_sum" ]; then
    echo "build-kubernetes: cached Kubernetes $version ($arch) in $out"
    exit 0
fi
need_go

mkdir -p "$work/pause" "$out"
rm -f "$work"/*.go
cp "$src"/*.go "$work/"
cp "$src/pause/main.go" "$work/pause/main.go"
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
go_build -ldflags "-s -w" -o "$out/pause" ./pause
cold="about 18 min cold on 2 busy cores"
[ "$arch" = amd64 ] || cold="about 10 min cold on 2 busy cores"
echo "build-kubernetes: building $programs $version for $arch as one binary ($cold)"
minor=${version#v1.}
minor=${minor%%.*}
versionflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    versionflags="$versionflags -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
done
go_build -tags "$tags" -ldflags "-s -w$versionflags" -o "$out/kubernetes.tmp" .
mv "$out/kubernetes.tmp" "$out/kubernetes"
for program in $programs; do
    ln -sf kubernetes "$out/$program"
done
echo "$main_sum" >"$out/.main-sha256"
echo "build-kubernetes: built Kubernetes $version ($arch) in $out"
