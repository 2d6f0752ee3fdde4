#!/bin/sh
# Files the set-up's Kubernetes build (tests/toolchain/build-kubernetes.sh,
# both arches) as a local directory of kubeadm's binaries and images, laid out
# for the kubeadm cluster's local source (gvisor-fleet:kubeadm.releaseDir):
#   DIR/VERSION/<goarch>/kubeadm kubelet kubectl   (static; each a real file)
#   DIR/VERSION/<goarch>/cni-plugins.tgz           bridge host-local loopback portmap, v1.7.1
#   DIR/VERSION/<goarch>/images/<name>.tar         OCI archives for `ctr -n k8s.io images import`
#                                                  (control-plane.tar: the three images of one layer)
#   DIR/VERSION/<goarch>/SHA512SUMS                every file above
#
#   sh tests/toolchain/make-kubernetes-dir.sh              build what is missing, write DIR, print it
#   sh tests/toolchain/make-kubernetes-dir.sh --print-dir  print DIR only
#
# VERSION is v1.37.2 (GVISOR_FLEET_KUBERNETES_VERSION), DIR
# ${GVISOR_FLEET_CACHE:-~/.cache/gvisor-fleet}/local-kubernetes. The images are
# those `kubeadm config images list` names for VERSION but kube-proxy and
# coredns (the offline stack runs neither addon), built from the same binaries:
# amd64 (the control plane) kube-apiserver, kube-controller-manager,
# kube-scheduler (one layer, the multi-call binary under each name), etcd and
# pause; arm64 pause only. Each runs /usr/local/bin/<program>. The pause image
# also carries containerd's default sandbox image name when that differs.
#
# etcd: kubeadm v1.37.2 names registry.k8s.io/etcd:3.7.0-0, and the image of
# that name holds etcd v3.7.0 from the Go module proxy (the newest there is
# v3.7.4, then v3.8.0-alpha.0). pause is a static program of its own
# (kubernetes/pause/main.go), not the upstream one.
#
# The three binaries are hard links to the build's multi-call binary where the
# file system allows, copies otherwise. The archives are reproducible (fixed
# order, owner and time), and the directory is written again only when what it
# is made from changed or a file no longer matches SHA512SUMS.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
version=${GVISOR_FLEET_KUBERNETES_VERSION:-v1.37.2}
cache=${GVISOR_FLEET_CACHE:-$HOME/.cache/gvisor-fleet}
dir=$cache/local-kubernetes
if [ "${1:-}" = "--print-dir" ]; then
    echo "$dir"
    exit 0
fi
# One writer at a time (tests/run.sh writes it in the background while a test
# may ask for it): a second caller waits, then finds it up to date.
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
python=python3 # the image writer needs only the standard library
[ ! -x "$repo/.venv/bin/python" ] || python=$repo/.venv/bin/python
containerd=$(sh "$here/build-containerd.sh" --print-dir)/containerd

# The builds skip what is cached (a second each).
sh "$here/build-kubernetes.sh" >&2
sh "$here/build-kubernetes.sh" --arch arm64 >&2
amd64_bin=$(sh "$here/build-kubernetes.sh" --print-dir)
arm64_bin=$(sh "$here/build-kubernetes.sh" --arch arm64 --print-dir)

# kubeadm's own list, less the addons; each name's last part says which program it is.
images=$("$amd64_bin/kubeadm" config images list --kubernetes-version "$version" | grep -v -e /kube-proxy: -e /coredns:) ||
    { echo "make-kubernetes-dir: $amd64_bin/kubeadm config images list failed" >&2; exit 1; }
image_of() { echo "$images" | grep "/$1:" || { echo "make-kubernetes-dir: kubeadm names no $1 image" >&2; exit 1; }; }
for program in pause etcd kube-apiserver kube-controller-manager kube-scheduler; do
    image_of "$program" >/dev/null
done
pause_names=$(image_of pause)
if [ -x "$containerd" ]; then
    sandbox=$("$containerd" config default 2>/dev/null | sed -n "s/^ *sandbox = '\(.*\)'$/\1/p")
    [ -z "$sandbox" ] || [ "$sandbox" = "$pause_names" ] || pause_names="$pause_names,$sandbox"
fi
etcd=$amd64_bin/etcd/etcd

# write_arch GOARCH BIN: the directory of one arch from the build in BIN.
write_arch() {
    goarch=$1
    bin=$2
    out="$dir/$version/$goarch"
    cni="$bin/cni-plugins"
    inputs="$bin/kubernetes $bin/pause $cni/bridge $cni/host-local $cni/loopback $cni/portmap $here/make-kubernetes-dir.sh $repo/tests/support/oci.py"
    [ "$goarch" != amd64 ] || inputs="$inputs $etcd"
    for file in $inputs; do
        [ -f "$file" ] || { echo "make-kubernetes-dir: $file is missing after the build" >&2; exit 1; }
    done
    # shellcheck disable=SC2086 # a list of paths without spaces
    from=$(sha512sum $inputs | sed "s# $repo/# #; s# $bin/# #"; echo "$images"; echo "$pause_names")
    if [ "$(cat "$out/.built-from" 2>/dev/null)" = "$from" ] && (cd "$out" && sha512sum -c --quiet SHA512SUMS >/dev/null 2>&1); then
        echo "make-kubernetes-dir: up to date: $out" >&2
        return 0
    fi
    echo "make-kubernetes-dir: writing $out" >&2
    rm -rf "$out"
    mkdir -p "$out/images"
    for program in kubeadm kubelet kubectl; do
        ln -f "$bin/kubernetes" "$out/$program" 2>/dev/null || cp "$bin/kubernetes" "$out/$program"
    done
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$cni" -cf - ./bridge ./host-local ./loopback ./portmap |
        gzip -n -9 >"$out/cni-plugins.tgz"
    stage=$(mktemp -d "$dir/.stage.XXXXXX")
    # One root file system per program group, the binary at /usr/local/bin/<program>, a /tmp as images have.
    make_root() {
        rm -rf "$stage/root"
        mkdir -p "$stage/root/usr/local/bin" "$stage/root/tmp"
        chmod 1777 "$stage/root/tmp"
        ln -f "$1" "$stage/root/usr/local/bin/$2" 2>/dev/null || cp "$1" "$stage/root/usr/local/bin/$2"
    }
    oci() { (cd "$repo" && "$python" -m tests.support.oci --rootfs "$stage/root" --arch "$goarch" --gzip "$@"); }
    make_root "$bin/pause" pause
    oci --image "$out/images/pause.tar" /usr/local/bin/pause "$pause_names"
    if [ "$goarch" = amd64 ]; then
        make_root "$etcd" etcd
        oci --image "$out/images/etcd.tar" /usr/local/bin/etcd "$(image_of etcd)"
        make_root "$bin/kubernetes" kubernetes
        set --
        for program in kube-apiserver kube-controller-manager kube-scheduler; do
            ln -s kubernetes "$stage/root/usr/local/bin/$program"
            set -- "$@" --image "$out/images/control-plane.tar" "/usr/local/bin/$program" "$(image_of "$program")"
        done
        oci "$@"
    fi
    rm -rf "$stage"
    (cd "$out" && find . -type f ! -name 'SHA512SUMS*' ! -name '.*' | sed 's#^\./##' | LC_ALL=C sort |
        xargs sha512sum >SHA512SUMS.tmp && mv -f SHA512SUMS.tmp SHA512SUMS)
    printf '%s\n' "$from" >"$out/.built-from"
}

trap 'rm -rf "$dir"/.stage.*' EXIT
write_arch amd64 "$amd64_bin"
write_arch arm64 "$arm64_bin"
echo "$dir"
