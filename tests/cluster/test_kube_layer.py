"""The program's Kubernetes layer through the real Pulumi engine and the upstream provider.

The stack of tests/cluster/live_stack.py (one SSH test machine that is also
the node of a real cluster, `cluster: existing`). The steps run in order,
each on what the one before left: up, a no-op up, the policy pack on a live
preview, Pod Security and a Job forced onto runc, destroy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.kube.manifests import job_result, sample_pod
from components.kube.settings import KubeSettings
from tests.cluster.live_stack import (
    MACHINE,
    NAMESPACE,
    WATCHED,
    Deployment,
    job_on_runc,
    live_stack,
    missing_prerequisites,
)
from tests.cluster.node import NODE, RUNTIME, SAMPLE_IMAGE, Cluster, log_values
from tests.support.mirror import Releases
from tests.support.wait import wait_until

KUBE_SETTINGS = KubeSettings(handler=RUNTIME, sample_image=SAMPLE_IMAGE, node_names={MACHINE: NODE})
POLICY_PACK = ("--policy-pack", "components/policy")
# What a stack's owner might add to the program: a workload of their own in the
# sandbox namespace, through a provider of their own on the same cluster.
OWN_POD_PROGRAM = """
import json as _json

import pulumi_kubernetes as _k8s

_pod = _json.loads({manifest!r})
_k8s.core.v1.Pod(
    "own-workload",
    metadata=_pod["metadata"],
    spec=_pod["spec"],
    opts=pulumi.ResourceOptions(
        provider=_k8s.Provider("own-workloads", kubeconfig=pulumi.Config().require_secret("kubeconfig"))
    ),
)
"""


def require(d: Deployment, step: str) -> None:
    if step not in d.done:
        pytest.skip(f"needs the '{step}' step, which failed or did not run")


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, releases: Releases, containerd2_bin: Path
) -> Iterator[Deployment]:
    why = missing_prerequisites()
    if why:
        pytest.skip(why)
    with live_stack(tmp_path_factory.mktemp("kube-layer"), releases, containerd2_bin) as d:
        yield d


def sample_log(cluster: Cluster) -> dict[str, str]:
    return log_values(cluster.kubectl("logs", "-n", NAMESPACE, "gvisor-sample-amd64").stdout)


def test_up_converges_the_node_and_deploys_the_kubernetes_layer(deployment: Deployment):
    d = deployment
    run = d.stack.pulumi("up", "--yes", "--skip-preview", timeout=1200).check()
    outputs = d.stack.outputs()
    # 1. The host layer converged the node (runsc, containerd runtime table, verify passed).
    assert outputs["allChecksPassed"] is True, outputs
    facts: Any = outputs["machines"]
    assert facts[MACHINE]["containerd_ok"] == "true", facts
    # 2. Every object exists, the sample runs under gVisor, the Job passed.
    assert outputs["kubernetesVerification"]["amd64"]["passed"] is True, outputs["kubernetesVerification"]
    c = d.cluster
    rc = c.kubectl_json("get", "runtimeclass", "gvisor")
    assert rc["handler"] == RUNTIME
    ns = c.kubectl_json("get", "namespace", NAMESPACE)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    c.kubectl("get", "networkpolicy", "-n", NAMESPACE, "default-deny-all")
    node = c.kubectl_json("get", "node", NODE)
    assert node["metadata"]["labels"]["gvisor-fleet/gvisor"] == "verified"
    pod = c.kubectl_json("get", "pod", "-n", NAMESPACE, "gvisor-sample-amd64")
    assert pod["spec"]["runtimeClassName"] == "gvisor" and pod["status"]["phase"] == "Running"
    assert sample_log(c)["kernel_release"] != c.sh("uname -r").strip()
    job = c.kubectl_json("get", "job", "-n", NAMESPACE, "gvisor-verify-amd64")
    assert job_result(job["status"])["passed"] is True
    d.done.add("up")
    print(f"pulumi up: {run.seconds:.1f}s")


def test_a_second_up_changes_nothing(deployment: Deployment):
    require(deployment, "up")
    deployment.stack.pulumi("up", "--yes", "--expect-no-changes", timeout=600).check()


def unsandboxed_pod() -> dict[str, Any]:
    """The sample pod as a user's own: Pod Security `restricted` admits it, but it sets no RuntimeClass."""
    pod = sample_pod(KUBE_SETTINGS, "x86_64")
    pod["metadata"] = {"name": "own-workload", "namespace": NAMESPACE, "labels": {"app": "own-workload"}}
    del pod["spec"]["runtimeClassName"]
    return pod


def test_policy_pack_stops_a_preview_that_adds_a_pod_without_the_runtime_class(deployment: Deployment):
    require(deployment, "up")
    d = deployment
    # The deployed stack as it is passes the pack, against the live cluster.
    same = d.stack.pulumi("preview", *POLICY_PACK, timeout=600).check()
    assert "gvisor-fleet@v0.1.0" in same.output and "sandbox-workloads-use-gvisor" not in same.output, same.output
    pod = unsandboxed_pod()
    program = d.stack.dir / "__main__.py"
    original = program.read_text()
    program.write_text(original + OWN_POD_PROGRAM.format(manifest=json.dumps(pod)))
    try:
        stopped = d.stack.pulumi("preview", *POLICY_PACK, timeout=600)
        unchecked = d.stack.pulumi("preview", timeout=600)
    finally:
        program.write_text(original)
    assert stopped.returncode != 0, stopped.output
    violation = r"\[mandatory\]\s+sandbox-workloads-use-gvisor\s+\(kubernetes:core/v1:Pod: own-workload\)"
    assert re.search(violation, stopped.output), stopped.output
    assert (
        f"Pod '{NAMESPACE}/own-workload' is in sandbox namespace '{NAMESPACE}' but spec.runtimeClassName is not set"
        in stopped.output
    ), stopped.output
    # Only the pack stops it: the same preview without it passes, and the cluster would admit the pod.
    assert unchecked.returncode == 0 and "own-workload" in unchecked.output, unchecked.output
    d.cluster.kubectl("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(pod))
    assert d.cluster.kubectl("get", "pod", "-n", NAMESPACE, "own-workload", check=False).returncode != 0


def test_restricted_namespace_rejects_a_privileged_pod(deployment: Deployment):
    require(deployment, "up")
    privileged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged", "namespace": NAMESPACE},
        "spec": {"containers": [{"name": "c", "image": SAMPLE_IMAGE, "securityContext": {"privileged": True}}]},
    }
    result = deployment.cluster.kubectl("apply", "-f", "-", stdin=json.dumps(privileged), check=False)
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in result.stderr and "privileged" in result.stderr


def test_a_job_forced_onto_runc_reports_failed(deployment: Deployment):
    require(deployment, "up")
    c = deployment.cluster
    with job_on_runc(c, "x86_64", timeout=180) as (name, status):
        result = job_result(status)
        assert result["passed"] is False and result.get("reason"), status
        logs = c.kubectl("logs", "-n", NAMESPACE, f"job/{name}", check=False).stdout
        assert "gvisor_verified=false" in logs, logs


def test_destroy_removes_every_object_and_restores_the_node(deployment: Deployment):
    d = deployment
    require(d, "up")
    d.stack.pulumi("destroy", "--yes", "--skip-preview", timeout=900).check()
    c = d.cluster
    assert c.kubectl("get", "runtimeclass", "gvisor", check=False).returncode != 0
    wait_until(lambda: c.kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0, 120, 1)
    assert c.kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0, "namespace still there"
    assert c.kubectl_json("get", "node", NODE)["metadata"]["labels"] == d.labels_as_found
    assert {p: d.machine.read(p) for p in WATCHED} == d.as_found
