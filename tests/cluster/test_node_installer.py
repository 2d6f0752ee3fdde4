"""The in-cluster node installer (kubernetes.nodeInstaller) on a live one-node cluster.

A node whose containerd has no gVisor runtime (the cluster tier's node with
its host layer left undone), a stack with no machines at all: `pulumi up`
deploys the installer, whose pod runs the host agent in the node's namespaces,
labels the node, and the sample pod and verification Job then run under
runsc. The installer's own token is refused by the API server when it
patches another node, another label or the node's spec. Destroy puts the node
back byte for byte before the installer goes. The steps run in order, each
on what the one before left.

No kube-proxy runs here: the one iptables rule that sends the `kubernetes`
Service's address to the API server is a stand-in for it, named as one. The
node's systemctl is the host tier's stand-in, which starts containerd as a
child of its caller; systemd starts a unit in a cgroup of its own, so a
daemon restarted from a pod outlives the pod. A wrapper gives the stand-in
that too: it joins the node's root cgroups before it starts anything.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from components.kube import node_installer as plan
from components.kube.manifests import verify_job
from components.kube.settings import KubeSettings
from tests.cluster.live_stack import kubernetes_plugin, missing_prerequisites
from tests.cluster.node import (
    API_PORT,
    NODE,
    NODE_IP,
    RUNTIME,
    SAMPLE_IMAGE,
    SERVICE_RANGE,
    Binaries,
    Cluster,
    kubelet_args,
    kubernetes_bin,
    log_values,
)
from tests.e2e.pulumi_stack import Stack
from tests.support import oci
from tests.support.mirror import MIRROR_PORT, MIRROR_ROOT, MIRROR_URL, Releases
from tests.support.paths import REPO
from tests.support.wait import wait_until

INSTALLER_IMAGE = "gvisor-fleet.test/installer:1"
INSTALLER_NS = "gvisor-fleet-installer"
SANDBOX_NS = "gvisor-sandbox"
SERVICE_IP = "10.96.0.1"  # the `kubernetes` Service: the first address of the tier's service range
PREFIX = "/usr/local/bin"
WATCHED = ("/etc/containerd/config.toml", "/etc/containerd/runsc.toml", f"{PREFIX}/runsc",
           f"{PREFIX}/containerd-shim-runsc-v1")  # fmt: skip
OTHER_NODE = "other-node"
SYSTEMCTL_IN_OWN_CGROUP = """#!/bin/sh
for f in /sys/fs/cgroup/*/cgroup.procs; do echo $$ > "$f"; done 2>/dev/null
exec /usr/local/sbin/systemctl-sandbox "$@"
"""


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


def require(live: Live, step: str) -> None:
    if step not in live.done:
        pytest.skip(f"needs the '{step}' step, which failed or did not run")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, releases: Releases, containerd2_bin: Path) -> Iterator[Live]:
    why = missing_prerequisites()
    if why:
        pytest.skip(why)
    if kubernetes_plugin() is None:
        pytest.skip("the upstream pulumi-kubernetes provider is not built")
    if shutil.which("etcd") is None or shutil.which("iptables") is None:
        pytest.skip("the cluster tier needs etcd and iptables")
    work = tmp_path_factory.mktemp("node-installer")
    kube_bin = kubernetes_bin(REPO)
    bins = Binaries(kubernetes=kube_bin, containerd=containerd2_bin, etcd=Path(shutil.which("etcd") or "etcd"))
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


def installer_log(c: Cluster) -> str:
    return c.kubectl("logs", "-n", INSTALLER_NS, f"daemonset/{plan.NAME}", check=False).stdout


def test_up_installs_verifies_and_labels_the_node(live: Live):
    c = live.cluster
    config = live.as_found["/etc/containerd/config.toml"] or b""
    assert b"runsc" not in config and live.as_found[f"{PREFIX}/runsc"] is None, "the node must start without gVisor"
    run = live.stack.pulumi("up", "--yes", "--skip-preview", timeout=1200)
    assert run.returncode == 0, f"{run.output}\n--- installer:\n{installer_log(c)}"
    live.figures["up_seconds"] = run.seconds
    outputs = live.stack.outputs()
    assert outputs["kubernetesVerification"]["amd64"]["passed"] is True, outputs  # type: ignore[index]
    n = node(c)
    labels, annotations = n["metadata"]["labels"], n["metadata"].get("annotations", {})
    assert labels["gvisor-fleet/gvisor"] == "verified" and labels[plan.RELEASE_LABEL] == live.releases.current, labels
    assert annotations[plan.STATE_ANNOTATION] == "verified" and plan.REASON_ANNOTATION not in annotations
    # The agent did on the node what the SSH path does: runsc, the shim, containerd's runtime table.
    assert c.node.read(f"{PREFIX}/runsc") and c.node.read(f"{PREFIX}/containerd-shim-runsc-v1")
    assert f"runtimes.{RUNTIME}]".encode() in (c.node.read("/etc/containerd/config.toml") or b"")
    pod = c.kubectl_json("get", "pod", "-n", SANDBOX_NS, "gvisor-sample-amd64")
    assert pod["spec"]["nodeSelector"]["gvisor-fleet/gvisor"] == "verified" and pod["status"]["phase"] == "Running"
    sample = log_values(c.kubectl("logs", "-n", SANDBOX_NS, "gvisor-sample-amd64").stdout)
    assert sample["kernel_release"] != c.sh("uname -r").strip(), sample
    events = c.kubectl_json("get", "events", "-n", "default", "--field-selector", "reason=GvisorVerified")
    assert [e["involvedObject"]["name"] for e in events["items"]] == [NODE], events
    ds = c.kubectl_json("get", "daemonset", "-n", INSTALLER_NS, plan.NAME)
    created = ds["metadata"]["creationTimestamp"]
    verified = events["items"][0]["firstTimestamp"]
    live.figures["daemonset_to_verified_seconds"] = _seconds(verified) - _seconds(created)
    print(f"pulumi up: {run.seconds:.1f}s; DaemonSet created to node verified: "
          f"{live.figures['daemonset_to_verified_seconds']:.0f}s (whole seconds)")  # fmt: skip
    live.stack.pulumi("up", "--yes", "--expect-no-changes", timeout=600).check()
    live.done.add("up")


def _seconds(stamp: str) -> float:
    return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))


def installer_kubectl(c: Cluster, token: str, *args: str, stdin: str | None = None) -> Any:
    """kubectl as the installer's service account: the token only, no client certificate."""
    argv = [str(c.bins.kubernetes / "kubectl"), f"--server=https://{NODE_IP}:{API_PORT}",
            f"--certificate-authority={c.pki / 'ca.crt'}", f"--token={token}", *args]  # fmt: skip
    return c.node.run(argv, stdin=stdin, timeout=60)


def test_the_installers_token_patches_only_its_own_node_and_labels(live: Live):
    require(live, "up")
    c = live.cluster
    pods = c.kubectl_json("get", "pods", "-n", INSTALLER_NS, "-l", "app.kubernetes.io/component=node-installer")
    pod = pods["items"][0]
    token = c.kubectl(
        "create", "token", plan.NAME, "-n", INSTALLER_NS, "--bound-object-kind=Pod",
        f"--bound-object-name={pod['metadata']['name']}", f"--bound-object-uid={pod['metadata']['uid']}",
    ).stdout.strip()  # fmt: skip
    # A second Node object (no kubelet; not Linux, so no DaemonSet pod lands on it).
    other = {"apiVersion": "v1", "kind": "Node",
             "metadata": {"name": OTHER_NODE, "labels": {"kubernetes.io/os": "windows"}}}  # fmt: skip
    c.kubectl("create", "-f", "-", stdin=json.dumps(other))
    try:
        own = installer_kubectl(c, token, "label", "node", NODE, "--overwrite", "gvisor-fleet/gvisor=verified")
        assert own.returncode == 0, own.stderr
        elsewhere = installer_kubectl(c, token, "label", "node", OTHER_NODE, "gvisor-fleet/gvisor=verified")
        assert elsewhere.returncode != 0
        assert f"may change only its own node ({NODE}), not {OTHER_NODE}" in elsewhere.stderr, elsewhere.stderr
        foreign = installer_kubectl(c, token, "label", "node", NODE, "example.com/other=x")
        assert foreign.returncode != 0 and "may change only the labels" in foreign.stderr, foreign.stderr
        annotation = installer_kubectl(c, token, "annotate", "node", NODE, "example.com/note=x")
        assert annotation.returncode != 0 and "may change only the annotations" in annotation.stderr
        # (kubectl cordon exits 0 even when refused: its message and the node say it.)
        cordon = installer_kubectl(c, token, "cordon", NODE)
        assert "may not change a node's spec" in cordon.stderr, cordon.stderr
        # RBAC alone: no deleting nodes, no reading secrets.
        assert installer_kubectl(c, token, "delete", "node", OTHER_NODE).returncode != 0
        assert installer_kubectl(c, token, "get", "secrets", "-A").returncode != 0
        assert "example.com/other" not in node(c)["metadata"]["labels"]
        assert not node(c)["spec"].get("unschedulable")
    finally:
        c.kubectl("delete", "node", OTHER_NODE, check=False)
    live.done.add("policy")


def node_state(c: Cluster) -> tuple[str | None, str | None, str | None]:
    meta = node(c)["metadata"]
    annotations = meta.get("annotations", {})
    return (
        meta["labels"].get("gvisor-fleet/gvisor"),
        annotations.get(plan.STATE_ANNOTATION),
        annotations.get(plan.REASON_ANNOTATION),
    )


def restart_installer(c: Cluster) -> None:
    c.kubectl("delete", "pod", "-n", INSTALLER_NS, "-l", "app.kubernetes.io/component=node-installer", "--wait=true")


def test_a_broken_node_stays_unlabelled_says_why_and_recovers_without_up(live: Live):
    require(live, "up")
    c = live.cluster
    block = f"OUTPUT -p tcp --dport {MIRROR_PORT} -j REJECT"
    c.sh(f"iptables -I {block}")  # the release cannot be fetched on this node any more
    try:
        restart_installer(c)
        assert wait_until(lambda: node_state(c)[1] == "failed", 180, 1), (node_state(c), installer_log(c))
        label, _, reason = node_state(c)
        assert label is None and reason, (label, reason)
        events = c.kubectl_json("get", "events", "-n", "default", "--field-selector", "reason=GvisorInstallFailed")
        messages = [e["message"] for e in events["items"]]
        assert messages and messages[-1] == f"gVisor not installed on node {NODE}: {reason}", messages
        assert f"node {NODE} NOT verified: {reason}" in installer_log(c)
        pods = c.kubectl_json("get", "pods", "-n", INSTALLER_NS, "-l", "app.kubernetes.io/component=node-installer")
        (ready,) = [cond for cond in pods["items"][0]["status"]["conditions"] if cond["type"] == "Ready"]
        assert ready["status"] == "False"
        # The node's runtime keeps working: the sandbox started before is still running.
        pod = c.kubectl_json("get", "pod", "-n", SANDBOX_NS, "gvisor-sample-amd64")
        assert pod["status"]["phase"] == "Running"
        print(f"broken node: unlabelled, reason: {reason}")
    finally:
        c.sh(f"iptables -D {block}")
    start = time.monotonic()
    restart_installer(c)
    assert wait_until(lambda: node_state(c) == ("verified", "verified", None), 180, 1), node_state(c)
    live.figures["recovered_seconds"] = time.monotonic() - start
    print(f"recovered without `up`: {live.figures['recovered_seconds']:.0f}s")


def test_a_new_release_rolls_and_running_sandboxes_keep_running(live: Live):
    require(live, "up")
    c = live.cluster
    before = c.kubectl_json("get", "pod", "-n", SANDBOX_NS, "gvisor-sample-amd64")
    # The same builds under another release name (the loose layout): a new release to roll out.
    newer = live.releases.current_loose
    live.stack.set_config({**live.config, "release": newer})
    run = live.stack.pulumi("up", "--yes", "--skip-preview", timeout=1200)
    assert run.returncode == 0, f"{run.output}\n--- installer:\n{installer_log(c)}"
    live.figures["upgrade_up_seconds"] = run.seconds
    ds = c.kubectl_json("get", "daemonset", "-n", INSTALLER_NS, plan.NAME)
    assert ds["metadata"]["generation"] == 2 and ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == 1
    assert wait_until(lambda: node(c)["metadata"]["labels"].get(plan.RELEASE_LABEL) == newer, 180, 1), node(c)
    assert node_state(c) == ("verified", "verified", None)
    outputs = live.stack.outputs()
    assert outputs["kubernetesVerification"]["amd64"]["passed"] is True, outputs  # type: ignore[index]
    # The sandbox started before the upgrade is the same pod, still running and answering.
    after = c.kubectl_json("get", "pod", "-n", SANDBOX_NS, "gvisor-sample-amd64")
    assert after["metadata"]["uid"] == before["metadata"]["uid"] and after["status"]["phase"] == "Running"
    assert after["status"]["containerStatuses"][0]["restartCount"] == 0
    answer = c.kubectl("exec", "-n", SANDBOX_NS, "gvisor-sample-amd64", "--", "uname", "-r").stdout.strip()
    assert answer != c.sh("uname -r").strip(), answer
    print(f"upgrade up: {run.seconds:.1f}s")


def test_a_node_that_joins_later_is_installed_and_labelled_without_up(live: Live):
    """The one node made new: put back as found by hand, its Node object deleted, its kubelet started
    again, so a Node object the installer has never seen registers on a host without gVisor."""
    require(live, "up")
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
    live.figures["joined_to_verified_seconds"] = time.monotonic() - joined
    assert node_state(c) == ("verified", "verified", None)
    assert c.node.read(f"{PREFIX}/runsc") and f"runtimes.{RUNTIME}]".encode() in (
        c.node.read("/etc/containerd/config.toml") or b""
    )
    # A sandboxed pod schedules onto it and runs under gVisor.
    job = verify_job(KubeSettings(handler=RUNTIME, sample_image=SAMPLE_IMAGE), "x86_64")
    job["metadata"]["name"] = "joined-verify"
    c.kubectl("apply", "-f", "-", stdin=json.dumps(job))
    try:
        done = wait_until(
            lambda: c.kubectl_json("get", "job", "-n", SANDBOX_NS, "joined-verify").get("status", {}).get("succeeded"),
            180,
            1,
        )
        assert done, c.kubectl("describe", "job", "-n", SANDBOX_NS, "joined-verify", check=False).stdout
    finally:
        c.kubectl("delete", "job", "-n", SANDBOX_NS, "joined-verify", "--cascade=foreground", check=False)
    later = live.figures["joined_to_verified_seconds"]
    print(f"node joined after up: Ready in {joined - start:.0f}s, verified {later:.0f}s later")


def test_destroy_puts_the_node_back_before_the_installer_goes(live: Live):
    require(live, "up")
    c = live.cluster
    run = live.stack.pulumi("destroy", "--yes", "--skip-preview", timeout=900, events=True)
    assert run.returncode == 0, run.output
    # The engine's own record: the cleanup DaemonSet was gone (its pods had put the
    # node back) before the installer's delete began.
    order = []
    for event in run.events:
        for kind in ("resourcePreEvent", "resOutputsEvent"):
            body: Any = event.get(kind)
            meta = body.get("metadata", {}) if isinstance(body, dict) else {}
            if meta.get("op") == "delete":
                order.append((kind, str(meta.get("urn", "")).rsplit("::", 1)[-1]))
    cleanup_done = order.index(("resOutputsEvent", "kubernetes-installer-cleanup"))
    assert cleanup_done < order.index(("resourcePreEvent", "kubernetes-installer-daemonset")), order
    live.figures["destroy_seconds"] = run.seconds
    after = {p: c.node.read(p) for p in WATCHED}
    assert after == live.as_found, {p: (live.as_found[p] is not None, after[p] is not None) for p in WATCHED}
    n = node(c)
    assert n["metadata"]["labels"] == live.labels_as_found
    ours = {plan.STATE_ANNOTATION, plan.REASON_ANNOTATION}
    assert not ours & set(n["metadata"].get("annotations", {}))
    assert c.sh(f"ls {plan.NODE_DIR} 2>/dev/null || true").strip() == ""
    wait_until(lambda: c.kubectl("get", "namespace", INSTALLER_NS, check=False).returncode != 0, 120, 1)
    assert c.kubectl("get", "namespace", INSTALLER_NS, check=False).returncode != 0
    print(f"pulumi destroy: {run.seconds:.1f}s")
