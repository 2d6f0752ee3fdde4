"""The program's own stack on a live one-node cluster, for the cluster tier and the benchmark.

One SSH test machine (tests/e2e/ssh_machines.py) is made the node of a real
cluster (tests/cluster/node.py) with its host layer left undone. The stack,
`cluster: existing` with the cluster's kubeconfig as a secret, converges the
host over SSH and deploys the Kubernetes layer with the upstream
pulumi-kubernetes provider (tests/toolchain/build-pulumi.sh builds it into
the offline plugin directory).
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.kube.manifests import verify_job, verify_job_name
from components.kube.settings import KubeSettings
from tests.cluster.node import NODE, RUNTIME, SAMPLE_IMAGE, Binaries, Cluster, kubernetes_bin
from tests.e2e import pulumi_stack, ssh_machines
from tests.e2e.pulumi_stack import Stack
from tests.e2e.ssh_machines import Machine
from tests.support import toolchain
from tests.support.image import make_image_tar
from tests.support.mirror import MIRROR_ROOT, Releases
from tests.support.paths import REPO
from tests.support.wait import wait_until

NAMESPACE = "gvisor-sandbox"
MACHINE = "node1"
WATCHED = ("/etc/containerd/config.toml", "/etc/containerd/runsc.toml", "/usr/local/bin/runsc")
KUBE_CONFIG = {"cluster": "existing", "nodeNames": {MACHINE: NODE}, "sampleImage": SAMPLE_IMAGE}


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


@contextmanager
def live_stack(work: Path, releases: Releases, containerd2: Path) -> Iterator[Deployment]:
    """A node with its cluster up and a stack initialised on it (not yet `pulumi up`); all stopped at the end."""
    client = ssh_machines.make_key(work / "client" / "id_ed25519", "gvisor-fleet-cluster")
    image_tar = make_image_tar(work / "busybox-rootfs.tar")
    bins = Binaries(kubernetes=kubernetes_bin(REPO), containerd=containerd2, etcd=Path("/usr/bin/etcd"))
    machine = ssh_machines.start_machine(MACHINE, work / MACHINE, client, image_tar)
    cluster = Cluster(work / "cluster", bins, MIRROR_ROOT, releases.current, sandbox=machine.sandbox)
    try:
        cluster.start(converge_host=False)
        stack = Stack(work / "stack")
        overrides = {"kubernetes": KUBE_CONFIG}
        config = pulumi_stack.stack_config([machine], releases, containerd=True, overrides=overrides)
        stack.init(config, client.private_text)
        stack.pulumi("config", "set", "--secret", "kubeconfig", stdin=cluster.kubeconfig).check()
        d = Deployment(machine, cluster, stack)
        d.as_found = {p: machine.read(p) for p in WATCHED}
        d.labels_as_found = cluster.kubectl_json("get", "node", NODE)["metadata"]["labels"]
        yield d
    finally:
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
