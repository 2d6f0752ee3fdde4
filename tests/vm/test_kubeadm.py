"""cluster: kubeadm for real: the program's own stack forms a two-arch cluster on the tier's VMs.

The VMs are the tier's (booted once, on one LAN); the stack lists them as
existing machines reached over SSH, as a user lists hosts, with their LAN
addresses as privateAddress. Kubernetes comes from the set-up's own builds
(`releaseDir`, tests/toolchain/make-kubernetes-dir.sh), gVisor from the
tier's mirror; nothing is fetched from outside. The engine, the command
provider and the kubernetes provider are the real ones.

They run on the host layer test_vms.py put on the VMs (conftest.py orders
the tier): the stack's first `up` finds gVisor installed and verifies it
again, as it would on hosts a previous stack set up. In order (each test
needs the one before):
0. kubeadm's floor for a control plane, refused on the 1024 MB VM by the
   node script's preflight, which changes nothing.
1. `up` with the worker's kubelet port taken: the control plane forms
   (kubeadm init on the emulated x86_64 VM), the join fails at once with
   kubeadm's own reason, the control plane stays up with itself as its only
   node.
2. `up` again once the port is free: the worker joins, the sample pods of
   both arches run under runsc on their nodes, the verification passes for
   amd64 and arm64, as the stack's outputs say.
3. `destroy`: drained, reset, the host layer restored: both VMs exactly as
   they were booted, before the tier changed anything (`pristine`).

Each `up` writes how long every step took to step-seconds.json in the
stack's logs folder (docs/testing.md has the figures).
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from components.kube.kubeadm import KubeadmNode, install_command, node_script
from components.kube.settings import KubeadmSettings
from tests.e2e.pulumi_stack import Run, Stack
from tests.support import toolchain
from tests.support.paths import CACHE
from tests.vm.qemu_vms import API_PORT_ON_HOST, LAN, USER, Vm, differences, snapshot

NAMESPACE = "gvisor-sandbox"
# Holds the worker's kubelet port, so kubeadm join's preflight refuses at once.
HOLD_KUBELET_PORT = "setsid busybox nc -l -p 10250 </dev/null >/dev/null 2>&1 & echo $!"


def machine(vm: Vm) -> dict[str, object]:
    return {
        "name": vm.name, "address": "127.0.0.1", "port": vm.port, "user": USER, "arch": vm.arch,
        "hostKey": vm.host_key.public_key, "privateAddress": LAN[vm.arch].split("/")[0],
    }  # fmt: skip


def kubectl(kubeconfig: Path, *args: str) -> Any:
    """The set-up's own kubectl (amd64 build), reading the stack's kubeconfig output."""
    binary = CACHE / "kubernetes-v1.37.2" / "bin" / "kubectl"
    out = subprocess.run(
        [str(binary), f"--kubeconfig={kubeconfig}", *args, "-o", "json"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


class Flow:
    """What the steps share."""

    stack: Stack
    before: dict[str, str]
    kubeconfig: Path


@pytest.fixture(scope="module")
def flow(
    vms: dict[str, Vm], pristine: dict[str, str], mirror: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Flow:
    base_url, release = mirror
    toolchain.build_pulumi()  # the engine and its plugins, cached after the first build
    f = Flow()
    f.before = pristine
    f.stack = Stack(tmp_path_factory.mktemp("kubeadm"), name="kubeadm")
    f.kubeconfig = f.stack.work / "kubeconfig"
    config = {
        "machines": [machine(vms["x86_64"]), machine(vms["aarch64"])],
        "baseUrl": base_url,
        "release": release,
        "kubernetes": {
            "cluster": "kubeadm",
            "verifyTimeoutSeconds": 1200,  # an emulated node starts a gVisor pod in minutes
            "kubeadm": {
                "releaseDir": str(toolchain.kubernetes_release_dir()),
                "addons": [],  # no kube-proxy or CoreDNS images offline
                "apiUrl": f"https://127.0.0.1:{API_PORT_ON_HOST}",
                "timeoutSeconds": 900,  # kubeadm init on an emulated x86_64 VM sharing 2 cores
            },
        },
    }
    f.stack.init(config, vms["x86_64"].login.private_key)
    return f


def test_a_control_plane_with_too_little_memory_is_refused_before_any_change(vms: dict[str, Vm]):
    vm = vms["aarch64"]  # 1024 MB: a worker's size
    before = snapshot(vm)
    node = KubeadmNode(vm.name, vm.arch, "control-plane", sudo=True, pod_cidr="10.244.1.0/24", address=None)
    out = vm.ssh(install_command(node, KubeadmSettings()), stdin=node_script())
    assert out.returncode != 0
    assert "a kubeadm control plane needs at least 1700 MB: give it more (qemu: memory: 2048)" in out.stderr, out.stderr
    after = snapshot(vm)
    assert after == before, differences(before, after)


def up(flow: Flow, label: str) -> Run:
    """`pulumi up` with the engine's event log; each step's time is kept beside the stack's logs."""
    run = flow.stack.pulumi("up", "--yes", "--skip-preview", timeout=3600, events=True)
    times = flow.stack.logs / "step-seconds.json"
    recorded = json.loads(times.read_text()) if times.exists() else {}
    recorded[label] = {"total": round(run.seconds), **run.step_seconds()}
    times.write_text(json.dumps(recorded, indent=1) + "\n")
    return run


def test_a_worker_that_cannot_join_says_why_and_leaves_the_control_plane_up(flow: Flow, vms: dict[str, Vm]):
    worker, cp = vms["aarch64"], vms["x86_64"]
    held = worker.ssh(f"sudo -n sh -c {shlex.quote(HOLD_KUBELET_PORT)}")
    assert held.returncode == 0 and held.stdout.strip().isdigit(), held.stderr
    try:
        run = up(flow, "failed join")
    finally:
        assert worker.ssh(f"sudo -n kill {held.stdout.strip()}").returncode == 0
    assert run.returncode != 0, "up passed although the worker's kubelet port was taken"
    errors = run.errors()
    assert f"kubeadm join of {worker.name} failed:" in errors, errors or run.output[-6000:]
    assert "Port-10250" in errors and "the control plane is untouched" in errors, errors
    # The control plane answers, with itself as its only node.
    out = cp.ssh("sudo -n kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes -o name")
    assert out.returncode == 0 and out.stdout.split() == [f"node/{cp.name}"], out.stdout + out.stderr
    # The worker was reset by its failed join.
    assert worker.ssh("test ! -e /etc/kubernetes/kubelet.conf").returncode == 0
    # The join token the control plane made is nowhere in what the engine showed, plain or base64.
    listed = cp.ssh("sudo -n kubeadm token list --kubeconfig /etc/kubernetes/admin.conf")
    tokens = re.findall(r"^([a-z0-9]{6}\.[a-z0-9]{16})\s", listed.stdout, re.MULTILINE)
    assert tokens, listed.stdout + listed.stderr
    shown = run.output + "".join(base64.b64decode(b + "=" * (-len(b) % 4)).decode(errors="replace")
                                 for b in re.findall(r"[A-Za-z0-9+/]{40,}", run.output))  # fmt: skip
    assert not [t for t in tokens if t in shown], "a join token is in the engine's output"


def cluster_diagnostics(vms: dict[str, Vm]) -> str:
    """What a person would look at when the cluster's `up` fails: pods, events, kubelet and containerd logs."""
    admin = "sudo -n kubectl --kubeconfig /etc/kubernetes/admin.conf"
    looks = [
        (vms["x86_64"], f"{admin} get nodes,pods -A -o wide; {admin} describe pods -n {NAMESPACE};"
                        f" {admin} get events -A --sort-by=.lastTimestamp | tail -n 40"),
        *[(vm, "sudo -n journalctl -u kubelet -u containerd -n 80 --no-pager") for vm in vms.values()],
    ]  # fmt: skip
    shown = []
    for vm, command in looks:
        out = vm.ssh(command, timeout=300)
        shown.append(f"--- {vm.name}: {command}\n{out.stdout[-8000:]}{out.stderr[-2000:]}")
    return "\n".join(shown)


def test_once_the_worker_can_join_gvisor_pods_run_on_both_arches(flow: Flow, vms: dict[str, Vm]):
    run = up(flow, "cluster")
    if run.returncode != 0:
        looks = cluster_diagnostics(vms)
        (flow.stack.logs / "cluster-diagnostics.txt").write_text(looks)
        pytest.fail(f"up failed: {run.errors() or run.output[-6000:]}\n{looks}")
    outputs = json.loads(flow.stack.pulumi("stack", "output", "--json", "--show-secrets").check().stdout)
    verification = outputs["kubernetesVerification"]
    for arch in ("amd64", "arm64"):
        assert verification[arch]["passed"] is True, verification
    flow.kubeconfig.write_text(outputs["kubeconfig"])
    nodes = {n["metadata"]["name"]: n for n in kubectl(flow.kubeconfig, "get", "nodes")["items"]}
    assert set(nodes) == {vm.name for vm in vms.values()}
    for vm in vms.values():
        node = nodes[vm.name]
        assert node["metadata"]["labels"]["kubernetes.io/arch"] == {"x86_64": "amd64", "aarch64": "arm64"}[vm.arch]
        internal = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
        assert internal == [LAN[vm.arch].split("/")[0]], internal
    pods = kubectl(flow.kubeconfig, "get", "pods", "-n", NAMESPACE)["items"]
    samples = [p for p in pods if "job-name" not in p["metadata"].get("labels", {})]
    assert sorted(p["spec"]["nodeSelector"]["kubernetes.io/arch"] for p in samples) == ["amd64", "arm64"], pods
    for pod in samples:
        assert pod["status"]["phase"] == "Running", pod["status"]
        assert pod["spec"]["runtimeClassName"] == "gvisor"
        node = nodes[pod["spec"]["nodeName"]]
        assert node["metadata"]["labels"]["kubernetes.io/arch"] == pod["spec"]["nodeSelector"]["kubernetes.io/arch"]
    # Each sample's sandbox is a runsc sandbox on its node.
    for vm in vms.values():
        out = vm.ssh("pgrep -c -f '[r]unsc-sandbox'")
        assert out.returncode == 0 and int(out.stdout.strip() or 0) >= 1, f"{vm.name}: no runsc sandbox running"
    # What the stack reports is what the cluster shows.
    assert outputs["kubernetesVerification"] == verification


def test_destroy_drains_resets_and_leaves_both_vms_as_they_were_booted(flow: Flow, vms: dict[str, Vm]):
    flow.stack.pulumi("destroy", "--yes", "--skip-preview", timeout=1800).check()
    for arch, vm in vms.items():
        after = snapshot(vm)
        assert after == flow.before[arch], f"{vm.name} differs after destroy:\n{differences(flow.before[arch], after)}"
