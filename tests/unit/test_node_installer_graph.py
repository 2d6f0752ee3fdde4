"""The node installer in the resource graph, under Pulumi mocks: what is made, and the destroy order.

Each test returns the Output it checks, so a check that never ran fails, or checks
after `settled` what needs every registration done.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pytest

from components.gvisor.settings import GvisorSettings
from components.kube import node_installer as plan
from components.kube.settings import parse_kube_settings
from tests.unit.kube_mocks import KUBECONFIG, KubeMocks, by_name, deploy, kube
from tests.unit.mocks import RecordingMonitor, settled

PREFIX = "kubernetes-installer"


@pytest.fixture
def kmocks() -> KubeMocks:
    m = KubeMocks()
    pulumi.runtime.set_mocks(m, project="gvisor-fleet", stack="unit", preview=False, monitor=RecordingMonitor(m))
    return m


def installer_deploy(m: KubeMocks, gv: GvisorSettings | None = None, **raw: Any) -> Any:
    s = kube(nodeInstaller={"arches": ["x86_64", "aarch64"]}, **raw)
    # No machines: the nodes install themselves.
    return deploy(m, s, gv, hosts={}, kubeconfig=pulumi.Output.secret(KUBECONFIG))


@pulumi.runtime.test
def test_the_installer_replaces_ssh_and_node_patches(kmocks):
    dep = installer_deploy(kmocks)

    def check(verification):
        # Nothing over SSH, no label patched by the program: the nodes label themselves.
        assert kmocks.of_type("command:remote:Command") == []
        assert kmocks.of_type("kubernetes:core/v1:NodePatch") == []
        assert dep.node_labels == {}
        daemonsets = by_name(kmocks, "kubernetes:apps/v1:DaemonSet")
        assert set(daemonsets) == {f"{PREFIX}-daemonset", f"{PREFIX}-cleanup"}
        assert daemonsets[f"{PREFIX}-daemonset"].inputs["metadata"]["name"] == plan.NAME
        (vap,) = kmocks.of_type("kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicy")
        assert vap.inputs["spec"]["matchConditions"][0]["expression"].endswith(
            '"system:serviceaccount:gvisor-fleet-installer:gvisor-fleet-node-installer"'
        )
        (cm,) = kmocks.of_type("kubernetes:core/v1:ConfigMap")
        assert set(cm.inputs["data"]) >= {"gvisor-host.sh", "node-installer.sh", "steps-x86_64", "restore"}
        namespaces = {n.inputs["metadata"]["name"] for n in kmocks.of_type("kubernetes:core/v1:Namespace")}
        assert namespaces == {"gvisor-sandbox", "gvisor-fleet-installer"}
        # Samples and verification per architecture of the setting, pinned to it.
        assert set(by_name(kmocks, "kubernetes:core/v1:Pod")) == {"kubernetes-sample-amd64", "kubernetes-sample-arm64"}
        assert set(verification) == {"amd64", "arm64"}
        jobs = by_name(kmocks, "kubernetes:batch/v1:Job")
        digest = plan.config_digest(cm.inputs["data"])
        for job in jobs.values():
            assert job.inputs["spec"]["template"]["metadata"]["annotations"]["gvisor-fleet/runtime"] == digest
        for r in kmocks.resources:
            if r.typ.startswith("kubernetes:") and r.name.startswith(PREFIX):
                assert kmocks.parents[r.name] == PREFIX and "kubernetes-provider" in (r.provider or ""), r.name

    return dep.verification.apply(check)


def test_destroy_order_sandboxes_then_cleanup_then_installer_then_permissions(kmocks):
    # The sample pods are not behind the verification: checked once all is registered.
    settled(lambda: installer_deploy(kmocks).verification)
    deps = kmocks.depends_on
    # Pulumi deletes a resource before what it depends on.
    for workload in ("kubernetes-sample-amd64", "kubernetes-verify-arm64"):
        assert {f"{PREFIX}-cleanup", f"{PREFIX}-daemonset"} <= deps[workload], deps[workload]
    assert f"{PREFIX}-daemonset" in deps[f"{PREFIX}-cleanup"]
    needed = {f"{PREFIX}-namespace", f"{PREFIX}-account", f"{PREFIX}-node-binding", f"{PREFIX}-binding",
              f"{PREFIX}-event-binding", f"{PREFIX}-node-policy-binding", f"{PREFIX}-config"}  # fmt: skip
    for ds in (f"{PREFIX}-daemonset", f"{PREFIX}-cleanup"):
        assert needed <= deps[ds], needed - deps[ds]


@pulumi.runtime.test
def test_a_new_release_changes_the_pods_and_reruns_the_verification(kmocks):
    old = installer_deploy(kmocks, GvisorSettings(release="20261116.0"))

    def first(_):
        (job,) = [j for j in kmocks.of_type("kubernetes:batch/v1:Job") if j.name.endswith("amd64")]
        return job.inputs["spec"]["template"]["metadata"]["annotations"]["gvisor-fleet/runtime"]

    def compare(before):
        s = kube(nodeInstaller=True)
        new = plan.config_digest(plan.config_data(s, GvisorSettings(release="20261201.0")))
        old_digest = plan.config_digest(plan.config_data(s, GvisorSettings(release="20261116.0")))
        assert before == old_digest != new

    return old.verification.apply(first).apply(compare)


def test_release_fetch_once_is_refused_at_preview():
    gv = GvisorSettings(release_fetch="once")
    problems: list[str] = []
    s = parse_kube_settings({"nodeInstaller": True}, gv.runtime_name, problems)
    assert s is not None
    from components.kube.deploy import deployment_problems

    (problem,) = deployment_problems(s, {}, gv)
    assert problem.startswith("gvisor-fleet:releaseFetch: 'once'")
