"""cluster: kubeadm's node script on the tier's VMs (booted once, on one LAN).

The preflight refuses the 1024 MB aarch64 VM as a control plane with the fix
before anything changes: `snapshot` takes what a destroy must also give back
byte for byte. The whole flow through the engine (a control plane formed, a
failed join, destroy) is in docs/testing.md's vm tier notes.
"""

from __future__ import annotations

import shlex

from components.kube.kubeadm import KubeadmNode, install_command, node_script
from components.kube.settings import KubeadmSettings
from tests.vm.qemu_vms import Vm

SNAPSHOT = r"""
for p in /etc /usr/local/bin /opt /var/lib/kubelet /var/lib/etcd /var/lib/cni /var/lib/gvisor-fleet; do
    [ -e "$p" ] || { echo "absent $p"; continue; }
    find "$p" -xdev -type f ! -path '/etc/ld.so.cache' -print0 | sort -z | xargs -0r sha256sum 2>/dev/null
    find "$p" -xdev -type l -printf '%p -> %l\n' | sort
    find "$p" -xdev -type d | sort
done
ip -4 route show table main | grep -v 'proto dhcp'
iptables -S; iptables -t nat -S
sysctl -n net.ipv4.ip_forward
ctr -n k8s.io images ls -q | sort
systemctl is-enabled kubelet 2>&1 || true
"""


def snapshot(vm: Vm) -> str:
    out = vm.ssh(f"sudo -n sh -c {shlex.quote(SNAPSHOT)}", timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout


def differences(before: str, after: str) -> str:
    a, b = set(before.splitlines()), set(after.splitlines())
    return "\n".join([*(f"- {line}" for line in sorted(a - b)), *(f"+ {line}" for line in sorted(b - a))][:60])


def test_a_control_plane_with_too_little_memory_is_refused_before_any_change(vms: dict[str, Vm]):
    vm = vms["aarch64"]  # 1024 MB: a worker's size
    before = snapshot(vm)
    node = KubeadmNode(vm.name, vm.arch, "control-plane", sudo=True, pod_cidr="10.244.1.0/24", address=None)
    out = vm.ssh(install_command(node, KubeadmSettings()), stdin=node_script())
    assert out.returncode != 0
    assert "a kubeadm control plane needs at least 1700 MB: give it more (qemu: memory: 2048)" in out.stderr, out.stderr
    after = snapshot(vm)
    assert after == before, differences(before, after)
