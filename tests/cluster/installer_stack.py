"""The node installer's stack on a live one-node cluster, for the cluster tier and its benchmark.

The cluster tier's node (tests/cluster/node.py) with its host layer left
undone, so its containerd has no gVisor runtime, and a stack with no machines
at all and `kubernetes.nodeInstaller` on: `pulumi up` deploys the installer,
whose pod runs the host agent in the node's namespaces.

No kube-proxy runs here: the one iptables rule that sends the `kubernetes`
Service's address to the API server is a stand-in for it, named as one. The
node's systemctl is the host tier's stand-in, which starts containerd as a
child of its caller; systemd starts a unit in a cgroup of its own, so a
daemon restarted from a pod outlives the pod. A wrapper gives the stand-in
that too: it joins the node's root cgroups before it starts anything.
"""

from __future__ import annotations

import calendar
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.kube import node_installer as plan
from tests.cluster.node import (
    API_PORT,
    NODE,
    NODE_IP,
    SAMPLE_IMAGE,
    SERVICE_RANGE,
    Binaries,
    Cluster,
    kubelet_args,
    kubernetes_bin,
)
from tests.e2e.pulumi_stack import Stack
from tests.support import oci
from tests.support.mirror import MIRROR_ROOT, MIRROR_URL, Releases
from tests.support.paths import REPO
from tests.support.wait import wait_until

INSTALLER_IMAGE = "gvisor-fleet.test/installer:1"
INSTALLER_NS = "gvisor-fleet-installer"
SANDBOX_NS = "gvisor-sandbox"
SERVICE_IP = "10.96.0.1"  # the `kubernetes` Service: the first address of the tier's service range
PREFIX = "/usr/local/bin"
WATCHED = ("/etc/containerd/config.toml", "/etc/containerd/runsc.toml", f"{PREFIX}/runsc",
           f"{PREFIX}/containerd-shim-runsc-v1")  # fmt: skip
SYSTEMCTL_IN_OWN_CGROUP = """#!/bin/sh
for f in /sys/fs/cgroup/*/cgroup.procs; do echo $$ > "$f"; done 2>/dev/null
exec /usr/local/sbin/systemctl-sandbox "$@"
"""


def missing_tools() -> str | None:
    """What the installer's cluster needs beyond the live stack's prerequisites, or None."""
    if shutil.which("etcd") is None or shutil.which("iptables") is None:
        return "the cluster tier needs etcd and iptables"
    return None


def installer_image(path: Path, kubectl: Path) -> Path:
    """sh, nsenter, sha256sum (a static busybox with every applet) and kubectl: what the installer needs."""
    busybox = shutil.which("busybox")
    assert busybox, "the cluster tier needs a static busybox (Debian package busybox-static)"
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    entries = [
        oci.Entry(d, "dir", 0o1777 if d == "tmp" else 0o755) for d in ("bin", "tmp", "proc", "dev", "sys", "etc")
    ]
    entries.append(oci.Entry("bin/busybox", "file", 0o755, source=Path(busybox)))
    entries.append(oci.Entry("bin/kubectl", "file", 0o755, source=kubectl))
    entries += [
        oci.Entry(f"bin/{a}", "symlink", 0o777, target="busybox") for a in applets if a not in ("busybox", "kubectl")
    ]
    layer = oci.make_layer(oci.layer_tar(entries))
    return oci.write_image(path, [INSTALLER_IMAGE], "amd64", [layer], ["/bin/sh"], env=["PATH=/bin"])


@dataclass
class Live:
    cluster: Cluster
    stack: Stack
    releases: Releases
    config: dict[str, Any]
    as_found: dict[str, bytes | None] = field(default_factory=dict)
    labels_as_found: dict[str, str] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    figures: dict[str, float] = field(default_factory=dict)


@contextmanager
def installer_stack(work: Path, releases: Releases, containerd2: Path) -> Iterator[Live]:
    """The cluster up without gVisor on its node, the stack initialised (not yet `up`); all stopped at the end."""
    kube_bin = kubernetes_bin(REPO)
    bins = Binaries(kubernetes=kube_bin, containerd=containerd2, etcd=Path(shutil.which("etcd") or "etcd"))
    cluster = Cluster(work / "cluster", bins, MIRROR_ROOT, releases.current)
    try:
        cluster.start(converge_host=False)  # containerd without any gVisor runtime
        cluster.sh("mv /usr/local/sbin/systemctl /usr/local/sbin/systemctl-sandbox")
        cluster.node.write("/usr/local/sbin/systemctl", SYSTEMCTL_IN_OWN_CGROUP)
        cluster.sh("chmod 755 /usr/local/sbin/systemctl")
        # Stand-in for kube-proxy: the `kubernetes` Service's address reaches the API server.
        cluster.sh(
            f"ip route add {SERVICE_RANGE} dev node0 && iptables -t nat -A OUTPUT -d {SERVICE_IP}/32 -p tcp "
            f"--dport 443 -j DNAT --to-destination {NODE_IP}:{API_PORT}"
        )
        archive = installer_image(work / "installer.oci.tar", (kube_bin / "kubectl").resolve())
        cluster.sh(f"ctr -n k8s.io images import {archive} >/dev/null")
        stack = Stack(work / "stack")
        stack.pulumi("stack", "init", stack.name, "--secrets-provider", "passphrase").check()
        config: dict[str, Any] = {
            "machines": [],
            "baseUrl": MIRROR_URL,
            "release": releases.current,
            "verifyImage": SAMPLE_IMAGE,
            "containerd": "required",
            "kubernetes": {
                "cluster": "existing",
                "sampleImage": SAMPLE_IMAGE,
                "nodeInstaller": {"image": INSTALLER_IMAGE},
            },
        }
        stack.set_config(config)
        stack.pulumi("config", "set", "--secret", "kubeconfig", stdin=cluster.kubeconfig).check()
        live = Live(cluster, stack, releases, config)
        live.as_found = {p: cluster.node.read(p) for p in WATCHED}
        live.labels_as_found = cluster.kubectl_json("get", "node", NODE)["metadata"]["labels"]
        yield live
    finally:
        cluster.close()


def node(c: Cluster) -> dict[str, Any]:
    result: dict[str, Any] = c.kubectl_json("get", "node", NODE)
    return result


def node_state(c: Cluster) -> tuple[str | None, str | None, str | None]:
    """(the label the RuntimeClass selects, the state annotation, the reason annotation) of the node."""
    meta = node(c)["metadata"]
    annotations = meta.get("annotations", {})
    return (
        meta["labels"].get("gvisor-fleet/gvisor"),
        annotations.get(plan.STATE_ANNOTATION),
        annotations.get(plan.REASON_ANNOTATION),
    )


def installer_log(c: Cluster) -> str:
    return c.kubectl("logs", "-n", INSTALLER_NS, f"daemonset/{plan.NAME}", check=False).stdout


def api_seconds(stamp: str) -> float:
    """An API server timestamp (whole seconds, UTC) as seconds since the epoch."""
    return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))


def daemonset_created(c: Cluster) -> float:
    """When the installer's DaemonSet was created (the API server's clock, whole seconds)."""
    ds = c.kubectl_json("get", "daemonset", "-n", INSTALLER_NS, plan.NAME)
    return api_seconds(ds["metadata"]["creationTimestamp"])


def verified_at(c: Cluster, since: float) -> float:
    """When the installer first reported the node verified (its GvisorVerified Event) at or after `since`."""
    events = c.kubectl_json("get", "events", "-n", "default", "--field-selector", "reason=GvisorVerified")
    stamps = [api_seconds(e["firstTimestamp"]) for e in events["items"] if e["involvedObject"]["name"] == NODE]
    return min(t for t in stamps if t >= since)


def created_to_verified_seconds(c: Cluster) -> float:
    """From the installer DaemonSet's creation to the node's GvisorVerified Event."""
    created = daemonset_created(c)
    return verified_at(c, created) - created


def node_joins_anew(live: Live) -> tuple[float, float]:
    """The one node made new: put back as found by hand, its Node object deleted, its kubelet started
    again, so a Node object the installer has never seen registers on a host without gVisor.

    Returns (seconds to Ready, seconds from Ready to verified and labelled by the installer).
    """
    c = live.cluster
    old_uid = node(c)["metadata"]["uid"]
    # The sandboxes go first, stopped by the kubelet (a new host has none).
    c.kubectl("delete", "pod", "-n", SANDBOX_NS, "--all", "--wait=true")
    c.sh("kill $(pgrep -x kubelet)")  # this cluster's kubelet, inside its own sandbox
    # Gone, or a zombie: the sandbox's init does not reap.
    running = "for p in $(pgrep -x kubelet); do grep -q '^State:.*Z' /proc/$p/status || echo $p; done"
    assert wait_until(lambda: c.sh(running).strip() == "", 30, 0.5)
    c.kubectl("delete", "node", NODE)
    # The old node's pods go with it (pod GC would, after its quarantine): the new node gets new ones.
    c.kubectl("delete", "pods", "-A", f"--field-selector=spec.nodeName={NODE}", "--force", "--grace-period=0")
    for step in (("containerd-restore", "/etc/containerd/runsc.toml"), ("uninstall", PREFIX)):
        c.agent(*step)
    assert {p: c.node.read(p) for p in WATCHED} == live.as_found, "the host must be as found before it joins"
    start = time.monotonic()
    c.daemon("kubelet", [str(c.bins.kubernetes / "kubelet"), *kubelet_args(c.pki)])
    c.wait_node_ready()
    joined = time.monotonic()

    def verified() -> bool:
        meta = c.kubectl_json("get", "node", NODE)["metadata"]
        return meta["labels"].get("gvisor-fleet/gvisor") == "verified" and meta["uid"] != old_uid

    assert wait_until(verified, 240, 1), (node_state(c), installer_log(c))
    return joined - start, time.monotonic() - joined
