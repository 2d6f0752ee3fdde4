"""The in-cluster node installer (kubernetes.nodeInstaller) on a live one-node cluster.

A node whose containerd has no gVisor runtime (the cluster tier's node with
its host layer left undone), a stack with no machines at all: `pulumi up`
deploys the installer, whose pod runs the host agent in the node's namespaces,
labels the node, and the sample pod and verification Job then run under
runsc. The installer's own token is refused by the API server when it
patches another node, another label or the node's spec. Destroy puts the node
back byte for byte before the installer goes. The steps run in order, each
on what the one before left.

The cluster and the stack are tests/cluster/installer_stack.py's (its
docstring names the stand-ins).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.kube import node_installer as plan
from components.kube.manifests import verify_job
from components.kube.settings import KubeSettings
from tests.cluster.installer_stack import (
    INSTALLER_NS,
    PREFIX,
    SANDBOX_NS,
    WATCHED,
    Live,
    created_to_verified_seconds,
    installer_log,
    installer_stack,
    missing_tools,
    node,
    node_joins_anew,
    node_state,
)
from tests.cluster.live_stack import missing_prerequisites
from tests.cluster.node import API_PORT, NODE, NODE_IP, RUNTIME, SAMPLE_IMAGE, Cluster, log_values
from tests.support.mirror import MIRROR_PORT, Releases
from tests.support.wait import wait_until

OTHER_NODE = "other-node"


def require(live: Live, step: str) -> None:
    if step not in live.done:
        pytest.skip(f"needs the '{step}' step, which failed or did not run")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, releases: Releases, containerd2_bin: Path) -> Iterator[Live]:
    why = missing_prerequisites() or missing_tools()
    if why:
        pytest.skip(why)
    with installer_stack(tmp_path_factory.mktemp("node-installer"), releases, containerd2_bin) as live:
        yield live


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
    live.figures["daemonset_to_verified_seconds"] = created_to_verified_seconds(c)
    print(f"pulumi up: {run.seconds:.1f}s; DaemonSet created to node verified: "
          f"{live.figures['daemonset_to_verified_seconds']:.0f}s (whole seconds)")  # fmt: skip
    live.stack.pulumi("up", "--yes", "--expect-no-changes", timeout=600).check()
    live.done.add("up")


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

        def failure_events() -> list[str]:
            found = c.kubectl_json("get", "events", "-n", "default", "--field-selector", "reason=GvisorInstallFailed")
            return [e["message"] for e in found["items"]]

        # The installer annotates the node, then records the Event.
        messages = wait_until(failure_events, 30, 1)
        assert messages, "no GvisorInstallFailed Event"
        assert messages[-1] == f"gVisor not installed on node {NODE}: {reason}", messages
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
    """The one node made new (node_joins_anew): a Node object the installer has never seen, on a host without gVisor."""
    require(live, "up")
    c = live.cluster
    ready, later = node_joins_anew(live)
    live.figures["joined_to_verified_seconds"] = later
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
    print(f"node joined after up: Ready in {ready:.0f}s, verified {later:.0f}s later")


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
