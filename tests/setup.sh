#!/bin/sh
# Installs everything the program and its tests need on a Debian 12 machine,
# as root; safe to run again (each step skips what is already there).
#
#   sh tests/setup.sh                   Debian packages, Python venv, Go-built toolchain
#   sh tests/setup.sh --no-kubernetes   all but the Kubernetes builds and the local
#                                       Kubernetes directory (tests/run.sh makes those
#                                       beside the first tiers)
#
# First run on a fresh machine: 36 min on 2 cores with --no-kubernetes, and
# about 30 more for the Kubernetes builds and the local Kubernetes directory,
# nearly all of it Go builds (docs/testing.md, "Set-up", has the measured
# time of each); later runs: a minute.
set -eu
cd "$(dirname "$0")/.."

kubernetes=yes
case ${1:-} in
    --no-kubernetes) kubernetes=no ;;
    "") ;;
    *) echo "usage: sh tests/setup.sh [--no-kubernetes]" >&2; exit 2 ;;
esac

say() { printf '\n== setup: %s\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "setup: run as root (apt-get, namespaces)" >&2; exit 1; }

say "Debian packages"
packages="runsc docker.io containerd runc busybox-static openssh-server openssh-client socat
    shellcheck curl wget sudo ca-certificates bzip2 iproute2 util-linux python3-venv gpg dpkg-dev
    etcd-server containernetworking-plugins chromium"
# The Go builds need a recent Go; this machine kind ships one in /usr/local/go.
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null 2>&1 || packages="$packages golang-go"
# shellcheck disable=SC2086 # a list of package names
sh tests/toolchain/apt-install.sh $packages
sh tests/toolchain/install-vm-deps.sh

say "Python virtualenv (.venv)"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt

say "containerd 2 for x86_64 and aarch64 (Debian ships 1.6)"
sh tests/toolchain/build-containerd.sh --arch x86_64
sh tests/toolchain/build-containerd.sh --arch aarch64

# The VM images build while the Go builds below run: the aarch64 one runs its
# packages' scripts under emulation on one core, so it would otherwise add
# its whole time to a first run. Its output goes to a log, shown at the end.
# A failed step below stops the set-up and the image build with it (which
# removes its half-built folder).
say "VM images (x86_64, aarch64) for the vm and cluster tiers: building in the background"
# shellcheck source=tests/toolchain/background.sh
. tests/toolchain/background.sh
background_start vm-images sh tests/toolchain/build-vm-images.sh
trap background_stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "current runsc and containerd-shim-runsc-v1 (x86_64, aarch64) from gVisor's go branch"
sh tests/toolchain/build-gvisor.sh
say "Pulumi engine and the upstream language host, command and kubernetes plugins"
sh tests/toolchain/build-pulumi.sh >/dev/null
say "actionlint (GitHub Actions workflow linter)"
sh tests/toolchain/build-actionlint.sh >/dev/null
if [ "$kubernetes" = yes ]; then
    say "Kubernetes 1.37, etcd and CNI plugins (one multi-call binary; the cluster tier, kubeadm)" &&
        sh tests/toolchain/build-kubernetes.sh
    say "kubelet, kubeadm, kubectl and CNI plugins for arm64 (aarch64 nodes)" && sh tests/toolchain/build-kubernetes.sh --arch arm64
    say "the local Kubernetes directory (kubeadm's binaries and images, both arches)" &&
        sh tests/toolchain/make-kubernetes-dir.sh >/dev/null
fi

say "VM images (x86_64, aarch64)"
background_wait "setup: the VM image build"
