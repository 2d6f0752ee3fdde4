"""The node installer's manifests: the Kubernetes schema, the agent they carry, least privilege."""

from __future__ import annotations

import hashlib
import shlex
from typing import Any

import kubernetes_validate
import pytest
from pulumi_command import remote

from components.fleet.machine import Machine
from components.gvisor.agent import SCRIPT_PATH, agent_sha256
from components.gvisor.host import host_commands
from components.gvisor.settings import GvisorSettings
from components.kube import node_installer as plan
from components.kube.manifests import runtime_class
from components.kube.settings import KubeSettings, parse_kube_settings

KUBE_VERSIONS = ("1.37.0", "1.36.0")
GV = GvisorSettings(sha512={"x86_64": "a" * 128, "aarch64": "b" * 128}, release="20261116.0")


def kube(**raw: object) -> KubeSettings:
    problems: list[str] = []
    s = parse_kube_settings({"nodeInstaller": True, **raw}, "runsc", problems)
    assert problems == [] and s is not None
    return s


VARIANTS = {
    "defaults": kube(),
    "custom": kube(nodeLabel="example.com/gvisor",
                   nodeInstaller={"image": "mirror.example.org/tools:2", "namespace": "nodes", "arches": ["aarch64"]}),
}  # fmt: skip
MANIFESTS = [
    (f"{variant}:{m['kind']}/{m['metadata']['name']}", m)
    for variant, s in VARIANTS.items()
    for m in plan.installer_manifests(s, GV)
]


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize(("name", "manifest"), MANIFESTS, ids=[n for n, _ in MANIFESTS])
def test_manifest_matches_the_kubernetes_schema(name, manifest, version):
    kubernetes_validate.validate(manifest, version, strict=True)


def test_every_kind_is_covered():
    assert {m["kind"] for _, m in MANIFESTS} == {
        "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
        "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ConfigMap", "DaemonSet",
    }  # fmt: skip


def test_off_without_the_setting():
    with pytest.raises(ValueError, match="nodeInstaller is off"):
        plan.installer_manifests(KubeSettings(handler="runsc"), GV)


def test_the_config_map_carries_the_ssh_paths_agent_and_the_daemonset_its_hash():
    s = kube()
    data = plan.config_map(s, GV)["data"]
    assert data["gvisor-host.sh"] == SCRIPT_PATH.read_text()
    assert data["node-installer.sh"] == plan.SCRIPT_PATH.read_text()
    for cleanup in (False, True):
        env = {e["name"]: e.get("value") for e in container(plan.daemonset(s, GV, cleanup))["env"]}
        assert env["AGENT_SHA256"] == agent_sha256() == hashlib.sha256(SCRIPT_PATH.read_bytes()).hexdigest()


def ssh_steps(arch: str) -> dict[str, tuple[str, str | None]]:
    """What GvisorHost runs over SSH on a root login with containerd only."""
    machine = Machine(name="n", arch=arch, user="root", connection=remote.ConnectionArgs(host="n"))
    gv = GvisorSettings(**{**GV.__dict__, "docker": "off", "containerd": "required"})
    return host_commands(machine, gv)


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_the_steps_are_the_ssh_paths_own_lines(arch):
    data = plan.config_data(kube(), GV)
    lines = data[f"steps-{arch}"].splitlines()
    ssh = ssh_steps(arch)
    assert [shlex.split(line) for line in lines] == [
        shlex.split(ssh[step][0])[2:] for step in ("install", "containerd", "verify")
    ]
    first = shlex.split(lines[0])
    # preflight ARCH PLATFORM DOCKER CONTAINERD, then the install from baseUrl with the arch's pin.
    assert first[:5] == ["preflight", arch, "systrap", "off", "required"]
    assert first[5:] == ["install", GV.base_url, GV.release, GV.install_dir, GV.sha512[arch]]
    restore = [shlex.split(line) for line in data["restore"].splitlines()]
    assert restore == [shlex.split(str(ssh[step][1]))[2:] for step in ("containerd", "install")]


def container(ds: dict[str, Any]) -> dict[str, Any]:
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    return c


def test_the_installer_daemonset_runs_privileged_on_every_node_one_at_a_time():
    s = kube(nodeInstaller={"image": "mirror.example.org/tools:2"})
    ds = plan.daemonset(s, GV)
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostPID"] is True and spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["serviceAccountName"] == plan.NAME
    c = container(ds)
    assert c["image"] == "mirror.example.org/tools:2" and c["securityContext"] == {"privileged": True}
    assert c["command"] == ["sh", "/etc/gvisor-fleet/node-installer.sh", "install"]
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    # Ready only once verified, so a rollout stops at a failing node.
    assert c["readinessProbe"]["exec"]["command"] == ["cat", plan.READY_FILE]
    # A node that joins later is not waited for by `up`.
    assert ds["metadata"]["annotations"] == {"pulumi.com/skipAwait": "true"}
    hostpath = {v["name"]: v for v in spec["volumes"]}["node-run"]["hostPath"]
    assert hostpath == {"path": plan.NODE_DIR, "type": "DirectoryOrCreate"}


def test_the_cleanup_daemonset_rolls_at_once_and_is_awaited():
    ds = plan.daemonset(kube(), GV, cleanup=True)
    assert ds["metadata"]["name"] == plan.CLEANUP_NAME
    # Its pods only sleep (and restore nothing when replaced): an update need not wait node by node.
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}}
    assert "annotations" not in ds["metadata"]  # Pulumi waits for its deletion
    assert container(ds)["command"][-1] == "cleanup"
    assert ds["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 2 * 60
    env = {e["name"]: e.get("value") for e in container(ds)["env"]}
    assert env["CLEANUP_DAEMONSET"] == plan.CLEANUP_NAME


def test_a_changed_release_or_agent_rolls_the_pods():
    s = kube()
    before = plan.daemonset(s, GV)["spec"]["template"]["metadata"]["annotations"]["gvisor-fleet/config"]
    newer = GvisorSettings(**{**GV.__dict__, "release": "20261201.0", "sha512": {}})
    after = plan.daemonset(s, newer)["spec"]["template"]["metadata"]["annotations"]["gvisor-fleet/config"]
    assert before != after


def test_rbac_is_nodes_get_and_patch_plus_events_and_its_own_daemonset():
    s = kube()
    assert plan.cluster_role(s)["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}]
    assert plan.role(s)["rules"] == [{"apiGroups": ["apps"], "resources": ["daemonsets"],
                                      "resourceNames": [plan.CLEANUP_NAME], "verbs": ["get"]}]  # fmt: skip
    events = plan.event_role(s)
    assert events["metadata"]["namespace"] == "default"  # where the API server keeps Events about nodes
    assert events["rules"] == [{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]
    assert plan.role_binding(s, "default")["metadata"]["namespace"] == "default"
    assert plan.role_binding(s)["subjects"] == [{"kind": "ServiceAccount", "name": plan.NAME,
                                                "namespace": "gvisor-fleet-installer"}]  # fmt: skip


def test_the_admission_policy_binds_the_installer_to_its_node_and_our_keys():
    s = kube(nodeLabel="example.com/gvisor")
    spec = plan.admission_policy(s)["spec"]
    (condition,) = spec["matchConditions"]
    assert condition["expression"] == (
        'request.userInfo.username == "system:serviceaccount:gvisor-fleet-installer:gvisor-fleet-node-installer"'
    )
    variables = {v["name"]: v["expression"] for v in spec["variables"]}
    assert '"authentication.kubernetes.io/node-name" in request.userInfo.extra' in variables["node_name"]
    assert variables["own_labels"] == '["example.com/gvisor", "gvisor-fleet/release"]'
    assert variables["own_annotations"] == '["gvisor-fleet/install-state", "gvisor-fleet/install-reason"]'
    expressions = [v["expression"] for v in spec["validations"]]
    assert "variables.node_name == object.metadata.name" in expressions[0]
    assert expressions[-1] == "object.spec == oldObject.spec"
    assert spec["failurePolicy"] == "Fail"
    assert plan.admission_policy_binding(s)["spec"] == {"policyName": plan.NAME, "validationActions": ["Deny"]}


def test_the_runtime_class_selects_the_label_the_installer_sets():
    s = kube(nodeLabel="example.com/gvisor")
    assert (
        runtime_class(s)["scheduling"]["nodeSelector"]
        == plan.verified_selector(s)
        == {"example.com/gvisor": "verified"}
    )


def test_only_the_installer_namespace_allows_privileged_pods():
    labels = plan.installer_namespace(kube())["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    assert labels["app.kubernetes.io/component"] == "installer-namespace"
