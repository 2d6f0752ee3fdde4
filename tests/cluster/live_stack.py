"""The program's own stack on a live one-node cluster, for the cluster tier and the benchmark.

One SSH test machine (tests/e2e/ssh_machines.py) is made the node of a real
cluster (tests/cluster/node.py) with its host layer left undone. The stack,
`cluster: existing` with the cluster's kubeconfig as a secret, converges the
host over SSH and deploys the Kubernetes layer with the upstream
pulumi-kubernetes provider (tests/toolchain/build-pulumi.sh builds it into
the offline plugin directory).

With `vm_images`, the aarch64 test VM joins as a second node
(tests/cluster/vm_node.py) and a second machine of the same stack, which
then converges both hosts and deploys the Kubernetes layer for both arches.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.fleet.keys import KeyPair
from components.kube.manifests import verify_job, verify_job_name
from components.kube.settings import KubeSettings
from tests.cluster import vm_node
from tests.cluster.node import NODE, RUNTIME, SAMPLE_IMAGE, Binaries, Cluster, kubernetes_bin
from tests.cluster.vm_node import VmNode, kubernetes_arm64_bin
from tests.e2e import pulumi_stack, ssh_machines
from tests.e2e.pulumi_stack import Stack
from tests.e2e.ssh_machines import Machine
from tests.support import toolchain
from tests.support.image import make_image_tar
from tests.support.mirror import MIRROR_ROOT, Releases
from tests.support.paths import REPO
from tests.support.wait import wait_until
from tests.vm.qemu_vms import USER, Vm, describe_failure

NAMESPACE = "gvisor-sandbox"
MACHINE = "node1"
WATCHED = ("/etc/containerd/config.toml", "/etc/containerd/runsc.toml", "/usr/local/bin/runsc")
VM_MACHINE = "arm1"
KUBE_CONFIG = {"cluster": "existing", "nodeNames": {MACHINE: NODE}, "sampleImage": SAMPLE_IMAGE}
# An emulated aarch64 node starts a gVisor pod in minutes, not seconds.
VM_KUBE_CONFIG: dict[str, object] = {
    **KUBE_CONFIG,
    "nodeNames": {MACHINE: NODE, VM_MACHINE: vm_node.NODE},
    "verifyTimeoutSeconds": 1200,
}


def kubernetes_plugin() -> Path | None:
    """The upstream provider for the pulumi-kubernetes SDK in the venv, if it is in the plugin directory."""
    version = importlib.metadata.version("pulumi-kubernetes")
    home = Path(toolchain.pulumi_env().get("PULUMI_HOME", ""))
    plugin = home / "plugins" / f"resource-kubernetes-v{version}" / "pulumi-resource-kubernetes"
    return plugin if plugin.exists() else None


def missing_prerequisites() -> str | None:
    """Why the live stack cannot run here (builds the engine if only that is missing), or None."""
    why = ssh_machines.missing_prerequisites()
    if why:
        return why
    toolchain.build_pulumi()
    if kubernetes_plugin() is None:
        version = importlib.metadata.version("pulumi-kubernetes")
        return (
            f"the upstream pulumi-kubernetes provider v{version} (the venv's SDK) is not in the offline plugin "
            "directory; tests/toolchain/build-pulumi.sh builds it"
        )
    return None


@dataclass
class Deployment:
    machine: Machine
    cluster: Cluster
    stack: Stack
    as_found: dict[str, bytes | None] = field(default_factory=dict)
    labels_as_found: dict[str, str] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    vm: VmNode | None = None
    vm_as_found: dict[str, bytes | None] = field(default_factory=dict)


def vm_spec(vm: Vm) -> dict[str, object]:
    """The VM's entry in gvisor-fleet:machines: an existing machine reached over SSH, as a user lists one."""
    return {"name": VM_MACHINE, "address": "127.0.0.1", "port": vm.port, "user": USER, "arch": vm.arch,
            "hostKey": vm.host_key.public_key}  # fmt: skip


@contextmanager
def live_stack(
    work: Path, releases: Releases, containerd2: Path, vm_images: Path | None = None
) -> Iterator[Deployment]:
    """A node with its cluster up and a stack initialised on it (not yet `pulumi up`); all stopped at the end.

    `vm_images`: the aarch64 VM image directory (tests/vm/qemu_vms.py) for a second node.
    """
    client = ssh_machines.make_key(work / "client" / "id_ed25519", "gvisor-fleet-cluster")
    image_tar = make_image_tar(work / "busybox-rootfs.tar")
    bins = Binaries(kubernetes=kubernetes_bin(REPO), containerd=containerd2, etcd=Path("/usr/bin/etcd"))
    vm = None
    if vm_images is not None:
        # The stack's one SSH key logs in to both machines.
        login = KeyPair(private_key=client.private_text, public_key=client.public_line)
        vm = Vm(name=VM_MACHINE, arch="aarch64", images=vm_images, work=work / VM_MACHINE, login=login)
    booted: list[subprocess.CompletedProcess[str]] = []
    # The emulated VM boots (minutes) while the cluster starts.
    boot = threading.Thread(target=lambda: booted.append(vm.start())) if vm else None
    machine = ssh_machines.start_machine(MACHINE, work / MACHINE, client, image_tar)
    cluster = Cluster(work / "cluster", bins, MIRROR_ROOT, releases.current, sandbox=machine.sandbox)
    node: VmNode | None = None
    try:
        if boot:
            boot.start()
        cluster.start(converge_host=False)
        machines: list[dict[str, object]] = [machine.spec()]
        kube: dict[str, object] = dict(KUBE_CONFIG)
        if vm and boot:
            boot.join()
            assert booted and booted[0].returncode == 0, describe_failure(vm, booted[0]) if booted else "no boot"
            node = VmNode(vm, cluster, kubernetes_arm64_bin(REPO), MIRROR_ROOT, releases.current).start()
            machines.append(vm_spec(vm))
            kube = VM_KUBE_CONFIG
        stack = Stack(work / "stack")
        overrides = {"kubernetes": kube, "machines": machines}
        config = pulumi_stack.stack_config([machine], releases, containerd=True, overrides=overrides)
        stack.init(config, client.private_text)
        stack.pulumi("config", "set", "--secret", "kubeconfig", stdin=cluster.kubeconfig).check()
        d = Deployment(machine, cluster, stack, vm=node)
        d.as_found = {p: machine.read(p) for p in WATCHED}
        d.labels_as_found = cluster.kubectl_json("get", "node", NODE)["metadata"]["labels"]
        if node:
            d.vm_as_found = {p: node.read(p) for p in WATCHED}
        yield d
    finally:
        if boot and boot.is_alive():
            boot.join()
        if node:
            node.close()
        if vm:
            vm.stop()
        cluster.close()
        machine.close()


@contextmanager
def job_on_runc(cluster: Cluster, arch: str, timeout: float) -> Iterator[tuple[str, dict[str, Any]]]:
    """The arch's verification Job without its RuntimeClass (so on runc), run to its end: (name, status).

    The Job is deleted, with its pod, when the block ends.
    """
    job = verify_job(KubeSettings(handler=RUNTIME, sample_image=SAMPLE_IMAGE), arch)
    name = f"{verify_job_name(arch)}-on-runc"
    job["metadata"]["name"] = name
    del job["spec"]["template"]["spec"]["runtimeClassName"]
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(job))
    try:
        statuses: list[dict[str, Any]] = [{}]

        def failed() -> bool:
            statuses[0] = cluster.kubectl_json("get", "job", "-n", NAMESPACE, name).get("status", {})
            return any(cond["type"] == "Failed" for cond in statuses[0].get("conditions") or [])

        wait_until(failed, timeout, 1)
        yield name, statuses[0]
    finally:
        cluster.kubectl("delete", "job", "-n", NAMESPACE, name, "--cascade=foreground", check=False)
