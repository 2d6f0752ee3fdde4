"""A real single-node Kubernetes cluster whose containerd the host agent configured.

The node (tests/cluster/node.py) is a host-tier sandbox: containerd 2 set up
by the agent's install (after its preflight checks), containerd and verify
steps, then etcd and Kubernetes 1.37 built from source. These tests prove the
cluster itself: the node is Ready, a pod whose RuntimeClass names the agent's runtime runs under
gVisor's kernel, the same pod without it runs on the node's kernel, and a
RuntimeClass whose handler containerd does not know leaves the pod unstarted.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from tests.cluster import pki
from tests.cluster.node import NODE, RUNTIME, SAMPLE_IMAGE, Cluster

PROBE = "uname -r; dmesg 2>/dev/null | head -n 1; sleep 3600"


def runtime_class(name: str, handler: str) -> dict[str, Any]:
    return {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": name}, "handler": handler}


def probe_pod(name: str, runtime_class_name: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 1,
        "automountServiceAccountToken": False,
        "containers": [{"name": "probe", "image": SAMPLE_IMAGE, "imagePullPolicy": "Never",
                        "command": ["sh", "-c", PROBE]}],
    }  # fmt: skip
    if runtime_class_name:
        spec["runtimeClassName"] = runtime_class_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def apply(cluster: Cluster, *objects: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))


def pod(cluster: Cluster, name: str) -> dict[str, Any]:
    result: dict[str, Any] = cluster.kubectl_json("get", "pod", name, "-n", "default")
    return result


def wait_running_with_output(cluster: Cluster, name: str, timeout: float = 180) -> list[str]:
    """The pod's first log lines once it runs (its kernel release, then its boot banner)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pod(cluster, name)["status"].get("phase") == "Running":
            lines = cluster.kubectl("logs", "-n", "default", name, check=False).stdout.splitlines()
            if lines:
                return lines
        time.sleep(1)
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
        deadline = time.monotonic() + 120
        message = ""
        while time.monotonic() < deadline and "no-such-runtime" not in message:
            events = cluster.kubectl_json("get", "events", "-n", "default",
                                          "--field-selector", "involvedObject.name=unknown-handler")  # fmt: skip
            message = " ".join(e.get("message", "") for e in events["items"])
            time.sleep(1)
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
