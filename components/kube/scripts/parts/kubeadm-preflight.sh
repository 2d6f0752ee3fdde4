# shellcheck shell=sh
# Preflight: what kubeadm would refuse, refused before anything changes, with the fix.

kube_arch() {
    case $(uname -m) in
        x86_64) echo amd64 ;;
        aarch64) echo arm64 ;;
        *) die "unsupported architecture '$(uname -m)'; kubeadm nodes with gVisor need x86_64 or aarch64" ;;
    esac
}

memory_mb() { awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo; }

# The kernel release as MAJOR*1000+MINOR.
kernel_number() { uname -r | awk -F. '{ print $1 * 1000 + $2 }'; }

# ROLE
preflight() {
    kube_arch >/dev/null
    { [ -d /run/systemd/system ] && have systemctl; } ||
        die "this machine does not run systemd; the kubelet runs as a systemd service: use a machine with systemd"
    if [ "$1" = control-plane ]; then
        [ "$(memory_mb)" -ge "$CONTROL_PLANE_MIN_MEMORY_MB" ] ||
            die "this machine has $(memory_mb) MB of memory; a kubeadm control plane needs at least ${CONTROL_PLANE_MIN_MEMORY_MB} MB: give it more (qemu: memory: 2048) or name another machine in gvisor-fleet:kubernetes.kubeadm.controlPlane"
        [ "$(nproc)" -ge 2 ] ||
            die "this machine has $(nproc) CPU; a kubeadm control plane needs 2: give it more (cpus: 2) or name another machine in gvisor-fleet:kubernetes.kubeadm.controlPlane"
    fi
    [ "$(kernel_number)" -ge 4019 ] ||
        die "kernel $(uname -r) is older than 4.19, the oldest the kubelet supports: upgrade the kernel"
    [ -f /sys/fs/cgroup/cgroup.controllers ] ||
        die "this machine mounts cgroup v1, which the kubelet refuses since Kubernetes 1.35: boot it with systemd.unified_cgroup_hierarchy=1 (cgroup v2)"
    systemctl is-active --quiet containerd ||
        die "containerd is not running; the host layer configures it first (gvisor-fleet:containerd must not be off)"
    if [ -e /etc/kubernetes/kubelet.conf ] && [ ! -f "$STATE_DIR/installed" ]; then
        die "this machine already belongs to a Kubernetes cluster (/etc/kubernetes/kubelet.conf exists); take it out of that cluster (kubeadm reset) or out of gvisor-fleet:machines"
    fi
}
