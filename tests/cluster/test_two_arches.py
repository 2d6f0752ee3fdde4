"""Both architectures in one cluster through the program's own stack.

The live stack of tests/cluster/live_stack.py with the aarch64 test VM as a
second node (tests/cluster/vm_node.py) and a second machine: `pulumi up`
converges both hosts and deploys the Kubernetes layer, whose sample pod and
verification Job per architecture must run under gVisor on the node of that
architecture; `pulumi destroy` must leave both hosts as they were.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.kube.manifests import job_result, sample_pod_name, verify_job_name
from tests.cluster import node, vm_node
from tests.cluster.live_stack import (
    MACHINE,
    NAMESPACE,
    VM_MACHINE,
    WATCHED,
    Deployment,
    job_on_runc,
    live_stack,
    missing_prerequisites,
)
from tests.cluster.node import log_values
from tests.support.mirror import Releases
from tests.support.wait import wait_until
from tests.vm.qemu_vms import ensure_images, missing_prerequisite

NODES = {"x86_64": node.NODE, "aarch64": vm_node.NODE}
RUNSC_PROCESSES = "pgrep -c -f '[r]unsc-sandbox|[r]unsc-gofer|[c]ontainerd-shim-runsc' || true"


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, releases: Releases, containerd2_bin: Path
) -> Iterator[Deployment]:
    why = missing_prerequisites() or missing_prerequisite()
    if why:
        pytest.skip(why)
    vm_images = ensure_images(("aarch64",))["aarch64"]
    with live_stack(tmp_path_factory.mktemp("two-arches"), releases, containerd2_bin, vm_images) as d:
        yield d


def sandbox_kernel(d: Deployment, arch: str) -> str:
    """The kernel release the arch's sample pod printed."""
    pod = sample_pod_name(arch)
    if arch == "aarch64":
        assert d.vm is not None
        return log_values(d.vm.pod_log(pod, NAMESPACE))["kernel_release"]
    return log_values(d.cluster.kubectl("logs", "-n", NAMESPACE, pod).stdout)["kernel_release"]


def node_kernel(d: Deployment, arch: str) -> str:
    if arch == "aarch64":
        assert d.vm is not None
        return d.vm.sh("uname -r").strip()
    return d.cluster.sh("uname -r").strip()


def test_up_runs_the_sample_and_verifies_gvisor_on_each_arch(deployment: Deployment):
    d = deployment
    run = d.stack.pulumi("up", "--yes", "--skip-preview", timeout=3000).check()
    outputs: Any = d.stack.outputs()
    assert outputs["allChecksPassed"] is True, outputs
    for machine in (MACHINE, VM_MACHINE):
        assert outputs["machines"][machine]["containerd_ok"] == "true", outputs["machines"]
    verification = outputs["kubernetesVerification"]
    assert sorted(verification) == ["amd64", "arm64"], verification
    c = d.cluster
    for arch, name in NODES.items():
        ka = {"x86_64": "amd64", "aarch64": "arm64"}[arch]
        assert verification[ka]["passed"] is True, verification
        assert c.node_ready(name), f"{name} is not Ready"
        labels = c.kubectl_json("get", "node", name)["metadata"]["labels"]
        assert labels["kubernetes.io/arch"] == ka and labels["gvisor-fleet/gvisor"] == "verified", labels
        pod = c.kubectl_json("get", "pod", "-n", NAMESPACE, sample_pod_name(arch))
        assert pod["spec"]["nodeName"] == name, f"{pod['metadata']['name']} runs on {pod['spec']['nodeName']}"
        assert pod["spec"]["runtimeClassName"] == "gvisor" and pod["status"]["phase"] == "Running", pod["status"]
        assert sandbox_kernel(d, arch) != node_kernel(d, arch), f"the {ka} sample ran on the node's kernel"
        job = c.kubectl_json("get", "job", "-n", NAMESPACE, verify_job_name(arch))
        assert job_result(job["status"])["passed"] is True, job["status"]
        job_pods = c.kubectl_json("get", "pod", "-n", NAMESPACE, "-l", f"job-name={verify_job_name(arch)}")
        assert {p["spec"]["nodeName"] for p in job_pods["items"]} == {name}, job_pods["items"]
    d.done.add("up")
    print(f"pulumi up (two nodes, one emulated): {run.seconds:.1f}s")


def test_the_arm64_job_forced_onto_runc_reports_failed(deployment: Deployment):
    """The arm64 verification can fail: on the node's own kernel its pod says so, and the Job fails."""
    d = deployment
    if "up" not in d.done:
        pytest.skip("needs the 'up' step, which failed or did not run")
    assert d.vm is not None
    with job_on_runc(d.cluster, "aarch64", timeout=900) as (name, status):
        result = job_result(status)
        assert result["passed"] is False and result.get("reason"), status
        pods = d.cluster.kubectl_json("get", "pod", "-n", NAMESPACE, "-l", f"job-name={name}")["items"]
        assert [p["spec"]["nodeName"] for p in pods] == [vm_node.NODE], pods
        assert log_values(d.vm.pod_log(pods[0]["metadata"]["name"], NAMESPACE))["gvisor_verified"] == "false"


def test_destroy_restores_both_hosts_and_leaves_nothing_running(deployment: Deployment):
    d = deployment
    if "up" not in d.done:
        pytest.skip("needs the 'up' step, which failed or did not run")
    assert d.vm is not None
    run = d.stack.pulumi("destroy", "--yes", "--skip-preview", timeout=1800).check()
    c = d.cluster
    wait_until(lambda: c.kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0, 300, 2)
    assert c.kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0, "namespace still there"
    assert {p: d.machine.read(p) for p in WATCHED} == d.as_found
    assert {p: d.vm.read(p) for p in WATCHED} == d.vm_as_found
    # The kubelets stop the pods' sandboxes once their objects are gone.
    for where, sh in (("amd64", c.sh), ("arm64", d.vm.sh)):
        wait_until(lambda sh=sh: sh(RUNSC_PROCESSES).strip() == "0", 180, 5)
        assert sh(RUNSC_PROCESSES).strip() == "0", f"a gVisor sandbox still runs on the {where} node"
    print(f"pulumi destroy (two nodes): {run.seconds:.1f}s")
