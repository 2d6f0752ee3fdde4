"""cluster: kubeadm for real: the program's own stack forms a two-arch cluster on the two VMs.

The VMs are the tier's (booted once, on one LAN); the stack lists them as
existing machines reached over SSH, as a user lists hosts, with their LAN
addresses as privateAddress. Kubernetes comes from the set-up's own builds
(`releaseDir`, tests/toolchain/make-kubernetes-dir.sh), gVisor from the
tier's mirror; nothing is fetched from outside. The engine, the command
provider and the kubernetes provider are the real ones.

One flow, in order (each test needs the one before):
0. kubeadm's floor for a control plane, refused on the 1024 MB VM by the
   node script's preflight, which changes nothing.
1. `up` with the worker unable to reach the API server: the control plane
   forms (kubeadm init on the emulated x86_64 VM), the join fails with
   kubeadm's reason, the control plane stays up with itself as its node.
2. `destroy` after that half-formed cluster: both VMs exactly as found.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from components.kube.kubeadm import KubeadmNode, install_command, node_script
from components.kube.settings import KubeadmSettings
from tests.e2e.pulumi_stack import Stack
from tests.support import toolchain
from tests.support.paths import TOOLCHAIN
from tests.vm.qemu_vms import API_PORT_ON_HOST, LAN, USER, Vm

# What the VMs must get back byte for byte: every path the kubeadm step or
# kubeadm writes, the engines' configs, units, kernel settings, the routes,
# the firewall rules, and containerd's images for the kubelet.
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
BLOCK_API = "iptables -I OUTPUT -p tcp -d {ip} --dport 6443 -j REJECT --reject-with tcp-reset"


def release_dir() -> Path:
    """The local Kubernetes release the set-up files (built if missing)."""
    script = TOOLCHAIN / "make-kubernetes-dir.sh"
    subprocess.run(["sh", str(script)], check=True)
    out = subprocess.run(["sh", str(script), "--print-dir"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def snapshot(vm: Vm) -> str:
    out = vm.ssh(f"sudo -n sh -c {shlex.quote(SNAPSHOT)}", timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout


def differences(before: str, after: str) -> str:
    a, b = set(before.splitlines()), set(after.splitlines())
    return "\n".join([*(f"- {line}" for line in sorted(a - b)), *(f"+ {line}" for line in sorted(b - a))][:60])


def machine(vm: Vm) -> dict[str, object]:
    return {
        "name": vm.name, "address": "127.0.0.1", "port": vm.port, "user": USER, "arch": vm.arch,
        "hostKey": vm.host_key.public_key, "privateAddress": LAN[vm.arch].split("/")[0],
    }  # fmt: skip


class Flow:
    """What the steps share."""

    stack: Stack
    before: dict[str, str]


@pytest.fixture(scope="module")
def flow(vms: dict[str, Vm], mirror: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Flow:
    base_url, release = mirror
    toolchain.build_pulumi()  # the engine and its plugins, cached after the first build
    f = Flow()
    for vm in vms.values():
        # The samples' image, where a user's registry would be: in containerd for the kubelet.
        out = vm.ssh("sudo -n sh -c 'docker save docker.io/library/busybox:1.37 | ctr -n k8s.io images import -'")
        assert out.returncode == 0, out.stderr
    f.before = {arch: snapshot(vm) for arch, vm in vms.items()}
    f.stack = Stack(tmp_path_factory.mktemp("kubeadm"), name="kubeadm")
    config = {
        "machines": [machine(vms["x86_64"]), machine(vms["aarch64"])],
        "baseUrl": base_url,
        "release": release,
        "kubernetes": {
            "cluster": "kubeadm",
            "verifyTimeoutSeconds": 1200,  # an emulated node starts a gVisor pod in minutes
            "kubeadm": {
                "releaseDir": str(release_dir()),
                "addons": [],  # no kube-proxy or CoreDNS images offline
                "apiUrl": f"https://127.0.0.1:{API_PORT_ON_HOST}",
                "timeoutSeconds": 300,
            },
        },
    }
    f.stack.init(config, vms["x86_64"].login.private_key)
    return f


def test_a_control_plane_with_too_little_memory_is_refused_before_any_change(flow: Flow, vms: dict[str, Vm]):
    vm = vms["aarch64"]  # 1024 MB: a worker's size
    node = KubeadmNode(vm.name, vm.arch, "control-plane", sudo=True, pod_cidr="10.244.1.0/24", address=None)
    out = vm.ssh(install_command(node, KubeadmSettings()), stdin=node_script())
    assert out.returncode != 0
    assert "a kubeadm control plane needs at least 1700 MB: give it more (qemu: memory: 2048)" in out.stderr, out.stderr
    after = snapshot(vm)
    assert after == flow.before[vm.arch], differences(flow.before[vm.arch], after)


def test_a_worker_that_cannot_join_says_why_and_leaves_the_control_plane_up(flow: Flow, vms: dict[str, Vm]):
    worker, cp_ip = vms["aarch64"], LAN["x86_64"].split("/")[0]
    block = BLOCK_API.format(ip=cp_ip)
    assert worker.ssh(f"sudo -n {block}").returncode == 0
    try:
        up = flow.stack.pulumi("up", "--yes", "--skip-preview", timeout=3000)
    finally:
        assert worker.ssh(f"sudo -n {block.replace(' -I ', ' -D ')}").returncode == 0
    assert up.returncode != 0, "up passed although the worker could not reach the API server"
    assert f"kubeadm join of {worker.name} failed:" in up.output, up.output[-4000:]
    assert "the control plane is untouched" in up.output
    # The control plane answers, with itself as its only node.
    cp = vms["x86_64"]
    out = cp.ssh("sudo -n kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes -o name")
    assert out.returncode == 0 and out.stdout.split() == [f"node/{cp.name}"], out.stdout + out.stderr
    # The worker was reset by its failed join.
    assert worker.ssh("test ! -e /etc/kubernetes/kubelet.conf").returncode == 0


def test_destroy_after_a_half_formed_cluster_leaves_both_vms_as_found(flow: Flow, vms: dict[str, Vm]):
    flow.stack.pulumi("destroy", "--yes", "--skip-preview", timeout=1800).check()
    for arch, vm in vms.items():
        after = snapshot(vm)
        assert after == flow.before[arch], f"{vm.name} differs after destroy:\n{differences(flow.before[arch], after)}"
