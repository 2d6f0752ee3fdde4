"""The policy rules on the node installer's objects: its privileged pods, its release, its runtime name."""

from __future__ import annotations

from typing import Any

import pytest

from components.gvisor.settings import GvisorSettings
from components.kube import node_installer as plan
from components.kube.manifests import runtime_class
from components.kube.settings import KubeSettings, parse_kube_settings
from components.policy import rules
from components.policy.rules import PolicyConfig, Resource


def _kube() -> KubeSettings:
    s = parse_kube_settings({"nodeInstaller": True}, "runsc", [])
    assert s is not None
    return s


KUBE = _kube()


def resource(manifest: dict[str, Any], stack: str = "prod") -> Resource:
    kind = manifest["kind"]
    group, _, version = manifest["apiVersion"].rpartition("/")
    typ = f"kubernetes:{group or 'core'}/{version}:{kind}"
    name = f"{kind.lower()}-{manifest['metadata']['name']}"
    return Resource(f"urn:pulumi:{stack}::gvisor-fleet::{typ}::{name}", typ, name, manifest)


def installer(gv: GvisorSettings | None = None, stack: str = "prod") -> list[Resource]:
    return [resource(m, stack) for m in plan.installer_manifests(KUBE, gv or GvisorSettings())]


def test_the_installers_daemonsets_are_allowed():
    assert rules.privileged_pods_only_for_the_node_installer(installer(), PolicyConfig()) == []


@pytest.mark.parametrize(
    ("change", "found"),
    [
        ({"hostPID": True}, "hostPID: true"),
        ({"hostNetwork": True}, "hostNetwork: true"),
        ({"hostIPC": True}, "hostIPC: true"),
        ({"containers": [{"name": "c", "image": "x", "securityContext": {"privileged": True}}]},
         "container 'c' privileged"),
        ({"initContainers": [{"name": "i", "image": "x", "securityContext": {"privileged": True}}]},
         "container 'i' privileged"),
        ({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}, "hostPath volume 'root'"),
    ],
)  # fmt: skip
def test_any_other_pod_reaching_into_its_node_is_refused(change, found):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "apps"},
           "spec": {"containers": [{"name": "c", "image": "x"}], **change}}  # fmt: skip
    (v,) = rules.privileged_pods_only_for_the_node_installer([*installer(), resource(pod)], PolicyConfig())
    assert v.message.startswith(f"Pod 'apps/p' reaches into its node ({found}")
    assert "only the gVisor node installer's DaemonSets may" in v.message


def test_the_installer_labels_alone_do_not_make_a_pod_the_installer():
    ds = plan.daemonset(KUBE, GvisorSettings())
    # Without the installer namespace the stack makes, the same DaemonSet is refused.
    (v,) = rules.privileged_pods_only_for_the_node_installer([resource(ds)], PolicyConfig())
    assert "DaemonSet 'gvisor-fleet-installer/gvisor-fleet-node-installer' reaches into its node" in v.message
    # Nor does a Deployment with the installer's labels in the installer's namespace.
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": ds["metadata"], "spec": ds["spec"]}
    (v,) = rules.privileged_pods_only_for_the_node_installer([*installer(), resource(deployment)], PolicyConfig())
    assert v.message.startswith("Deployment 'gvisor-fleet-installer/gvisor-fleet-node-installer'")


def test_an_unknown_pod_spec_is_reported_not_passed():
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": rules.UNKNOWN}
    (v,) = rules.privileged_pods_only_for_the_node_installer([resource(pod)], PolicyConfig())
    assert v.unknown


def test_the_installers_release_must_be_pinned_on_prod():
    (cm,) = [r for r in installer(GvisorSettings(release="latest")) if r.type == rules.CONFIG_MAP_TYPE]
    (v,) = rules.release_pinned(cm, PolicyConfig())
    assert "installs gVisor release 'latest' on stack 'prod'" in v.message
    (dev,) = [r for r in installer(GvisorSettings(release="latest"), "dev") if r.type == rules.CONFIG_MAP_TYPE]
    assert rules.release_pinned(dev, PolicyConfig()) == []
    (pinned,) = [r for r in installer() if r.type == rules.CONFIG_MAP_TYPE]
    assert rules.release_pinned(pinned, PolicyConfig()) == []


def test_the_installers_runtime_name_must_be_the_handler():
    rc = resource(runtime_class(KUBE))
    assert rules.runtime_names_match_handler([*installer(), rc], PolicyConfig()) == []
    other = resource({**runtime_class(KUBE), "handler": "kata"})
    (v,) = rules.runtime_names_match_handler([*installer(), other], PolicyConfig())
    assert "machine 'the node installer's nodes' registers gVisor in containerd as 'runsc'" in v.message
