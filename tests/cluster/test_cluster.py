"""A real single-node Kubernetes cluster whose containerd the host agent configured.

The node (tests/cluster/node.py) is a host-tier sandbox: containerd 2 set up
by the agent's install (after its preflight checks), containerd and verify
steps, then etcd and Kubernetes 1.37 built from source. These tests prove the
cluster itself: the node is Ready, a pod whose RuntimeClass names the agent's runtime runs under
gVisor's kernel, the same pod without it runs on the node's kernel, and a
RuntimeClass whose handler containerd does not know leaves the pod unstarted.
"""

from __future__ import annotations

import subprocess
from typing import Any

from tests.cluster import pki
from tests.cluster.node import NODE, RUNTIME, Cluster
from tests.cluster.probe_pods import apply, probe_pod, runtime_class
from tests.support.wait import wait_until


def pod(cluster: Cluster, name: str) -> dict[str, Any]:
    result: dict[str, Any] = cluster.kubectl_json("get", "pod", name, "-n", "default")
    return result


def wait_running_with_output(cluster: Cluster, name: str, timeout: float = 180) -> list[str]:
    """The pod's first log lines once it runs (its kernel release, then its boot banner)."""

    def output_once_running() -> list[str]:
        if pod(cluster, name)["status"].get("phase") != "Running":
            return []
        return cluster.kubectl("logs", "-n", "default", name, check=False).stdout.splitlines()

    lines = wait_until(output_once_running, timeout, 1)
    if lines:
        return lines
    events = cluster.kubectl("get", "events", "-n", "default", "--field-selector", f"involvedObject.name={name}",
                             check=False).stdout  # fmt: skip
    raise AssertionError(f"pod {name} not running: {pod(cluster, name)['status']}\n{events}\n{cluster.log('kubelet')}")


def test_the_agent_converged_the_nodes_containerd(cluster: Cluster):
    verify = cluster.host_facts["verify"]
    assert verify["runsc_ok"] == "true" and verify["containerd_ok"] == "true", verify
    assert cluster.host_facts["containerd"]["containerd_config_version"] == "3"
    dump = cluster.sh("containerd config dump")
    assert f"runtimes.{RUNTIME}]" in dump and "io.containerd.runsc.v1" in dump
    # The node's own settings survived the agent's edit.
    assert "gvisor-fleet.test/pause:1" in dump and "restrict_oom_score_adj = true" in dump


def test_node_is_ready(cluster: Cluster):
    node = cluster.kubectl_json("get", "node", NODE)
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert ready["Ready"] == "True", node["status"]["conditions"]
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://2.")
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.37.2"


def test_gvisor_pod_runs_the_sandbox_kernel_and_runc_pod_the_nodes(cluster: Cluster):
    node_kernel = cluster.sh("uname -r").strip()
    apply(cluster, runtime_class("runsc", RUNTIME), probe_pod("under-gvisor", "runsc"), probe_pod("under-runc", None))
    try:
        gvisor = wait_running_with_output(cluster, "under-gvisor")
        runc = wait_running_with_output(cluster, "under-runc")
        assert gvisor[0] != node_kernel, gvisor
        assert "Starting gVisor" in "\n".join(gvisor[1:]), gvisor
        assert runc[0] == node_kernel, runc
        # The same answer through the API server's exec path (kubelet streaming, containerd CRI).
        exec_kernel = cluster.kubectl("exec", "-n", "default", "under-gvisor", "--", "uname", "-r").stdout.strip()
        assert exec_kernel == gvisor[0]
    finally:
        cluster.kubectl("delete", "pod", "-n", "default", "under-gvisor", "under-runc", "--wait=false", check=False)


def test_a_handler_containerd_does_not_know_leaves_the_pod_unstarted(cluster: Cluster):
    apply(cluster, runtime_class("unknown-runtime", "no-such-runtime"), probe_pod("unknown-handler", "unknown-runtime"))
    try:
        messages = [""]

        def the_runtime_is_named() -> bool:
            events = cluster.kubectl_json("get", "events", "-n", "default",
                                          "--field-selector", "involvedObject.name=unknown-handler")  # fmt: skip
            messages[0] = " ".join(e.get("message", "") for e in events["items"])
            return "no-such-runtime" in messages[0]

        wait_until(the_runtime_is_named, 120, 1)
        message = messages[0]
        assert "no-such-runtime" in message, message
        assert pod(cluster, "unknown-handler")["status"].get("phase") == "Pending"
    finally:
        cluster.kubectl("delete", "pod", "-n", "default", "unknown-handler", "--wait=false", check=False)
        cluster.kubectl("delete", "runtimeclass", "unknown-runtime", check=False)


def test_the_machine_reaches_the_api_server_with_the_per_run_kubeconfig(cluster: Cluster):
    """What the Pulumi provider gets: a kubeconfig for a loopback port on the machine itself."""
    kubeconfig = cluster.pki / "admin.conf"
    assert f"https://127.0.0.1:{cluster.port}" in kubeconfig.read_text()
    kubectl = [str(cluster.bins.kubernetes / "kubectl"), f"--kubeconfig={kubeconfig}"]
    nodes = subprocess.run([*kubectl, "get", "nodes", "-o", "name"], capture_output=True, text=True, timeout=60)
    assert nodes.stdout.split() == [f"node/{NODE}"], nodes.stderr
    # A client certificate from another run's CA is refused.
    other = cluster.work / "other-ca.conf"
    ca = pki.CertificateAuthority()
    server_ca = (cluster.pki / "ca.crt").read_bytes()
    other.write_text(pki.kubeconfig(f"https://127.0.0.1:{cluster.port}", server_ca, ca.issue("x", "system:masters")))
    refused = subprocess.run([str(kubectl[0]), f"--kubeconfig={other}", "get", "nodes"], capture_output=True, text=True,
                             timeout=60)  # fmt: skip
    assert refused.returncode != 0 and "Unauthorized" in refused.stderr, refused.stderr
