"""The policy rules as pure functions over resource property dicts.

Host step command lines come from the product's own `host_commands` and
`runtime_commands`, and Kubernetes objects from its manifest builders, so a
change to either that the rules cannot read fails here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from pulumi_command import remote

from components.fleet.machine import Machine
from components.gvisor.host import host_commands
from components.gvisor.settings import GvisorSettings
from components.kube import k3s as k3s_plan
from components.kube.manifests import namespace, runtime_class, sample_pod, verify_job
from components.kube.settings import K3sSettings, KubeSettings
from components.policy import rules
from components.policy.rules import UNKNOWN, PolicyConfig, Resource

STACK = "prod"
CMD = rules.COMMAND_TYPE


def urn(typ: str, name: str, parent_type: str | None = None, stack: str = STACK) -> str:
    qualified = f"{parent_type}${typ}" if parent_type else typ
    return f"urn:pulumi:{stack}::gvisor-fleet::{qualified}::{name}"


def machine(name: str, user: str = "root") -> Machine:
    return Machine(name=name, arch="x86_64", user=user, connection=remote.ConnectionArgs(host="192.0.2.1"))


def host_resources(name: str, gv: GvisorSettings, user: str = "root", stack: str = STACK) -> list[Resource]:
    """The GvisorHost component and its steps, as the engine shows them to a policy."""
    host_urn = urn(rules.HOST_TYPE, name, stack=stack)
    out = [Resource(host_urn, rules.HOST_TYPE, name, {})]
    for step, (create, delete) in host_commands(machine(name, user), gv).items():
        out.append(
            Resource(
                urn(CMD, f"{name}-{step}", rules.HOST_TYPE, stack),
                CMD,
                f"{name}-{step}",
                {"create": create, "delete": delete, "stdout": UNKNOWN},
                parent=host_urn,
            )
        )
    return out


def k8s(manifest: dict[str, Any], name: str) -> Resource:
    api, kind = manifest["apiVersion"], manifest["kind"]
    group = "core/v1" if api == "v1" else api
    typ = f"kubernetes:{group}:{kind}"
    props = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind")}
    return Resource(urn(typ, name), typ, name, props)


def messages(violations: list[rules.Violation]) -> str:
    return "\n".join(v.message for v in violations)


# --- reading command lines and URNs ------------------------------------------------


def test_agent_call_reads_the_products_command_lines_with_and_without_sudo():
    gv = GvisorSettings(runtime_name="gv", default_runtime=True)
    for user in ("root", "admin"):
        steps = host_commands(machine("m", user), gv)
        docker = rules.agent_call(steps["docker"][0])
        assert docker is not None
        assert docker.subcommand == "docker-configure"
        assert docker.args[:3] == ("gv", "true", "/usr/local/bin")
        install = rules.agent_call(steps["install"][0])
        assert install is not None
        assert install.args[:2] == (gv.base_url, gv.release)


@pytest.mark.parametrize("line", [None, UNKNOWN, "", "echo hi", "sh -c 'x'", "sh -s --", "sh -s -- 'unterminated"])
def test_agent_call_ignores_other_command_lines(line: object):
    assert rules.agent_call(line) is None


def test_stack_and_name_come_from_the_urn():
    u = urn(CMD, "edge-docker", rules.HOST_TYPE, stack="prod-eu")
    assert rules.stack_of(u) == "prod-eu"
    assert rules.name_of(u) == "edge-docker"
    with pytest.raises(ValueError):
        rules.stack_of("edge-docker")


def test_machine_of_host_steps_and_k3s_steps():
    resources = host_resources("edge-1", GvisorSettings())
    docker = next(r for r in resources if r.name == "edge-1-docker")
    assert rules.machine_of(docker, "docker") == "edge-1"
    k3s_parent = urn("gvisor-fleet:kube:K3sCluster", "kubernetes-k3s", "gvisor-fleet:kube:KubeDeployment")
    k3s_step = Resource(urn(CMD, "kubernetes-k3s-edge-1-runtime"), CMD, "kubernetes-k3s-edge-1-runtime", {}, k3s_parent)
    assert rules.machine_of(k3s_step, "runtime") == "edge-1"
    orphan = Resource(urn(CMD, "edge-2-docker"), CMD, "edge-2-docker", {})
    assert rules.machine_of(orphan, "docker") == "edge-2"
    # Parent types may be qualified by their own parents' types.
    nested = urn(rules.HOST_TYPE, "edge-3", "pulumi:pulumi:Stack")
    step = Resource(urn(CMD, "edge-3-docker"), CMD, "edge-3-docker", {}, nested)
    assert rules.type_of(nested) == rules.HOST_TYPE
    assert rules.machine_of(step, "docker") == "edge-3"


def test_get_path_reports_missing_and_unknown_separately():
    props = {"spec": {"template": UNKNOWN, "x": 1}}
    assert rules.get_path(props, ("spec", "x")) == 1
    assert rules.get_path(props, ("spec", "missing", "y")) is None
    assert rules.get_path(props, ("spec", "template", "spec")) is UNKNOWN


def test_k8s_kind_reads_type_tokens():
    assert rules.k8s_kind("kubernetes:core/v1:Pod") == ("Pod", False)
    assert rules.k8s_kind("kubernetes:apps/v1:DeploymentPatch") == ("Deployment", True)
    assert rules.k8s_kind("kubernetes:batch/v1beta1:CronJob") == ("CronJob", False)
    assert rules.k8s_kind("kubernetes:node.k8s.io/v1:RuntimeClass") == ("RuntimeClass", False)
    assert rules.k8s_kind("command:remote:Command") is None


def test_config_parsing_and_errors():
    assert rules.parse_config(None) == PolicyConfig()
    cfg = rules.parse_config({"devStacks": ["sandbox-*"], "imageBuilders": ["ci-*"], "enforcementLevel": "advisory"})
    assert cfg.dev_stacks == ("sandbox-*",)
    assert cfg.image_builders == ("ci-*",)
    for bad in ({"devStacks": "dev"}, {"imageBuilders": [1]}, {"sandboxNamespaces": {"a": 1}}):
        with pytest.raises(rules.ConfigError, match="must be a list of strings"):
            rules.parse_config(bad)
    with pytest.raises(rules.ConfigError, match=r"unknown key\(s\) devStack; this policy reads: devStacks"):
        rules.parse_config({"devStack": ["x"]}, ("devStacks",))
    with pytest.raises(rules.ConfigError, match="imageBuilders"):
        rules.parse_config({"imageBuilders": ["x"]}, ("devStacks",))


# --- gvisor-release-pinned ---------------------------------------------------------


def install_step(release: str, stack: str, base_url: str | None = None) -> Resource:
    gv = GvisorSettings(release=release)
    if base_url:
        gv = replace(gv, base_url=base_url)
    (step,) = [r for r in host_resources("edge", gv, stack=stack) if r.name == "edge-install"]
    return step


@pytest.mark.parametrize("stack", ["prod", "staging", "prod-dev-tools"])
def test_latest_is_refused_on_non_dev_stacks(stack: str):
    (v,) = rules.release_pinned(install_step("latest", stack), PolicyConfig())
    assert "machine 'edge'" in v.message
    assert "'latest'" in v.message
    assert f"stack '{stack}'" in v.message
    assert "gvisor-fleet:release" in v.message
    assert v.urn is not None and v.urn.endswith("::edge-install")


@pytest.mark.parametrize("stack", ["dev", "dev-alice", "team-dev"])
def test_latest_is_allowed_on_dev_stacks(stack: str):
    assert rules.release_pinned(install_step("latest", stack), PolicyConfig()) == []


@pytest.mark.parametrize("release", ["20261116.0", "20261116", "20260817.3"])
def test_dated_releases_pass_everywhere(release: str):
    assert rules.release_pinned(install_step(release, "prod"), PolicyConfig()) == []


def test_dev_stacks_come_from_the_config():
    cfg = PolicyConfig(dev_stacks=("sandbox",))
    assert rules.release_pinned(install_step("latest", "sandbox"), cfg) == []
    assert rules.release_pinned(install_step("latest", "dev"), cfg) != []


def test_nightly_channel_is_refused_even_with_a_dated_release():
    step = install_step("20261116.0", "prod", "https://storage.googleapis.com/gvisor/releases/nightly")
    (v,) = rules.release_pinned(step, PolicyConfig())
    assert "nightly" in v.message


def test_release_rule_ignores_other_resources_and_steps():
    others = [r for r in host_resources("edge", GvisorSettings(release="latest")) if r.name != "edge-install"]
    assert all(rules.release_pinned(r, PolicyConfig()) == [] for r in others)


# --- no-default-runtime-on-image-builders ------------------------------------------


def builder_stack(default_runtime: bool, builds_images_output: bool = False) -> list[Resource]:
    gv = GvisorSettings(default_runtime=default_runtime)
    resources = host_resources("build-1", gv) + host_resources("edge-1", gv)
    if builds_images_output:
        host = resources[0]
        resources[0] = replace(host, props={rules.BUILDS_IMAGES_OUTPUT: True})
    return resources


def test_default_runtime_on_a_configured_image_builder_is_refused():
    cfg = PolicyConfig(image_builders=("build-*",))
    (v,) = rules.no_default_runtime_on_image_builders(builder_stack(True), cfg)
    assert "machine 'build-1' builds images" in v.message
    assert "gvisor-fleet:defaultRuntime" in v.message
    assert v.urn is not None and v.urn.endswith("::build-1-docker")


def test_default_runtime_on_a_host_that_declares_buildsImages_is_refused():
    (v,) = rules.no_default_runtime_on_image_builders(builder_stack(True, builds_images_output=True), PolicyConfig())
    assert "build-1" in v.message


def test_default_runtime_elsewhere_and_builders_without_it_pass():
    assert rules.no_default_runtime_on_image_builders(builder_stack(True), PolicyConfig()) == []
    cfg = PolicyConfig(image_builders=("build-*",))
    assert rules.no_default_runtime_on_image_builders(builder_stack(False), cfg) == []
    assert rules.no_default_runtime_on_image_builders(builder_stack(False, True), cfg) == []


def test_docker_off_means_nothing_to_check():
    gv = GvisorSettings(docker="off")
    cfg = PolicyConfig(image_builders=("*",))
    assert rules.no_default_runtime_on_image_builders(host_resources("build-1", gv), cfg) == []


def test_an_unreadable_docker_step_is_reported_not_passed():
    bad = Resource(
        urn(CMD, "m-docker", rules.HOST_TYPE), CMD, "m-docker", {"create": "sh -s -- docker-configure runsc"}
    )
    (v,) = rules.no_default_runtime_on_image_builders([bad], PolicyConfig())
    assert "cannot read default-runtime" in v.message


# --- runtime-names-match-handler ----------------------------------------------------


def kube_settings(handler: str, **kw: Any) -> KubeSettings:
    return KubeSettings(handler=handler, **kw)


def test_matching_names_pass():
    gv = GvisorSettings(runtime_name="gvisor-rt")
    rc = k8s(runtime_class(kube_settings("gvisor-rt")), "rc")
    resources = [*host_resources("a", gv), *host_resources("b", gv), rc]
    assert rules.runtime_names_match_handler(resources, PolicyConfig()) == []


def test_a_handler_that_no_containerd_registers_is_refused():
    rc = k8s(runtime_class(kube_settings("gvisor-rt")), "rc")
    resources = [*host_resources("a", GvisorSettings(runtime_name="runsc")), rc]
    (v,) = rules.runtime_names_match_handler(resources, PolicyConfig())
    assert "handler 'gvisor-rt'" in v.message
    assert "machine 'a'" in v.message
    assert "'runsc'" in v.message
    assert v.urn is not None and v.urn.endswith("::rc")


def test_docker_and_containerd_under_different_names_on_one_machine_are_refused():
    docker = host_resources("a", GvisorSettings(runtime_name="runsc"))
    containerd = host_resources("a", GvisorSettings(runtime_name="gvisor"))
    mixed = [r for r in docker if not r.name.endswith("-containerd")] + [
        r for r in containerd if r.name.endswith("-containerd")
    ]
    (v,) = rules.runtime_names_match_handler(mixed, PolicyConfig())
    assert "machine 'a'" in v.message
    assert "containerd 'gvisor'" in v.message and "docker 'runsc'" in v.message


def test_containerd_off_leaves_the_runtime_class_without_a_runtime():
    rc = k8s(runtime_class(kube_settings("runsc")), "rc")
    resources = [*host_resources("a", GvisorSettings(containerd="off")), rc]
    (v,) = rules.runtime_names_match_handler(resources, PolicyConfig())
    assert "no containerd runtime on machine 'a'" in v.message


def test_k3s_runtime_name_is_what_the_handler_must_match():
    gv = GvisorSettings(runtime_name="runsc", containerd="off")
    node = k3s_plan.plan_nodes([("a", "x86_64", "root")])[0]
    create, _ = k3s_plan.runtime_commands(node, gv, K3sSettings())
    parent = urn("gvisor-fleet:kube:K3sCluster", "kubernetes-k3s")
    step = Resource(urn(CMD, "kubernetes-k3s-a-runtime"), CMD, "kubernetes-k3s-a-runtime", {"create": create}, parent)
    resources = [*host_resources("a", gv), step, k8s(runtime_class(kube_settings("runsc")), "rc")]
    assert rules.runtime_names_match_handler(resources, PolicyConfig()) == []
    other = k8s(runtime_class(kube_settings("other")), "rc")
    assert rules.runtime_names_match_handler([*resources[:-1], other], PolicyConfig()) != []


def test_foreign_runtime_classes_are_left_alone_unless_named():
    kata = k8s(runtime_class(kube_settings("kata")), "kata")
    kata = replace(kata, props={**kata.props, "metadata": {"name": "kata"}})  # not labelled as ours
    resources = [*host_resources("a", GvisorSettings()), kata]
    assert rules.runtime_names_match_handler(resources, PolicyConfig()) == []
    assert rules.runtime_names_match_handler(resources, PolicyConfig(runtime_class_names=("kata",))) != []


def test_unknown_handler_is_reported():
    rc = k8s(runtime_class(kube_settings("runsc")), "rc")
    rc = replace(rc, props={**rc.props, "handler": UNKNOWN})
    (v,) = rules.runtime_names_match_handler([*host_resources("a", GvisorSettings()), rc], PolicyConfig())
    assert v.unknown
    assert v.message == "RuntimeClass 'gvisor': handler"


# --- sandbox-workloads-use-gvisor ---------------------------------------------------


def kube_stack(s: KubeSettings) -> list[Resource]:
    return [
        k8s(runtime_class(s), "rc"),
        k8s(namespace(s), "ns"),
        k8s(sample_pod(s, "x86_64"), "sample"),
        k8s(verify_job(s, "aarch64", UNKNOWN), "verify"),
    ]


def workload(kind: str, group: str, ns: str, spec_path: tuple[str, ...], runtime_class: str | None) -> Resource:
    pod_spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox"}]}
    if runtime_class is not None:
        pod_spec["runtimeClassName"] = runtime_class
    props: dict[str, Any] = {"metadata": {"name": "w", "namespace": ns}}
    node = props
    for key in spec_path[:-1]:
        node = node.setdefault(key, {})
    node[spec_path[-1]] = pod_spec
    typ = f"kubernetes:{group}:{kind}"
    return Resource(urn(typ, f"w-{kind}"), typ, f"w-{kind}", props)


def test_the_products_own_pods_and_jobs_pass():
    s = kube_settings("runsc")
    assert rules.sandbox_workloads_use_gvisor(kube_stack(s), PolicyConfig()) == []
    renamed = kube_settings("runsc", runtime_class_name="sandboxed", namespace="untrusted")
    assert rules.sandbox_workloads_use_gvisor(kube_stack(renamed), PolicyConfig()) == []


WORKLOADS = [
    ("Pod", "core/v1", ("spec",)),
    ("Deployment", "apps/v1", ("spec", "template", "spec")),
    ("StatefulSet", "apps/v1", ("spec", "template", "spec")),
    ("DaemonSet", "apps/v1", ("spec", "template", "spec")),
    ("ReplicaSet", "apps/v1", ("spec", "template", "spec")),
    ("Job", "batch/v1", ("spec", "template", "spec")),
    ("CronJob", "batch/v1", ("spec", "jobTemplate", "spec", "template", "spec")),
    ("PodTemplate", "core/v1", ("template", "spec")),
    ("ReplicationController", "core/v1", ("spec", "template", "spec")),
]


@pytest.mark.parametrize(("kind", "group", "path"), WORKLOADS)
def test_every_workload_kind_in_the_sandbox_namespace_needs_the_runtime_class(
    kind: str, group: str, path: tuple[str, ...]
):
    s = kube_settings("runsc", namespace="untrusted")
    base = kube_stack(s)
    missing = workload(kind, group, "untrusted", path, None)
    (v,) = rules.sandbox_workloads_use_gvisor([*base, missing], PolicyConfig())
    assert f"{kind} 'untrusted/w'" in v.message
    assert ".".join((*path, "runtimeClassName")) + " is not set" in v.message
    assert "'gvisor'" in v.message
    assert v.urn == missing.urn
    wrong = workload(kind, group, "untrusted", path, "runc")
    (v,) = rules.sandbox_workloads_use_gvisor([*base, wrong], PolicyConfig())
    assert "is 'runc'" in v.message
    right = workload(kind, group, "untrusted", path, "gvisor")
    assert rules.sandbox_workloads_use_gvisor([*base, right], PolicyConfig()) == []
    elsewhere = workload(kind, group, "default", path, None)
    assert rules.sandbox_workloads_use_gvisor([*base, elsewhere], PolicyConfig()) == []


def test_default_namespace_and_class_apply_without_kubernetes_resources_in_the_stack():
    pod = workload("Pod", "core/v1", rules.DEFAULT_SANDBOX_NAMESPACE, ("spec",), None)
    assert rules.sandbox_workloads_use_gvisor([pod], PolicyConfig()) != []
    ok = workload("Pod", "core/v1", rules.DEFAULT_SANDBOX_NAMESPACE, ("spec",), rules.DEFAULT_RUNTIME_CLASS)
    assert rules.sandbox_workloads_use_gvisor([ok], PolicyConfig()) == []


def test_extra_namespaces_and_classes_come_from_the_config():
    cfg = PolicyConfig(sandbox_namespaces=("ci-jobs",), runtime_class_names=("gvisor-kvm",))
    assert rules.sandbox_workloads_use_gvisor([workload("Pod", "core/v1", "ci-jobs", ("spec",), None)], cfg) != []
    ok = workload("Pod", "core/v1", "ci-jobs", ("spec",), "gvisor-kvm")
    assert rules.sandbox_workloads_use_gvisor([ok], cfg) == []


def test_patches_that_leave_the_runtime_class_alone_pass_but_cannot_change_it():
    path = ("spec", "template", "spec")
    patch = workload("DeploymentPatch", "apps/v1", rules.DEFAULT_SANDBOX_NAMESPACE, path, None)
    assert rules.sandbox_workloads_use_gvisor([patch], PolicyConfig()) == []
    bad = workload("DeploymentPatch", "apps/v1", rules.DEFAULT_SANDBOX_NAMESPACE, path, "runc")
    assert rules.sandbox_workloads_use_gvisor([bad], PolicyConfig()) != []


def test_unknown_namespace_or_runtime_class_is_reported_not_passed():
    pod = workload("Pod", "core/v1", rules.DEFAULT_SANDBOX_NAMESPACE, ("spec",), None)
    unknown_ns = replace(pod, props={**pod.props, "metadata": {"name": "w", "namespace": UNKNOWN}})
    (v,) = rules.sandbox_workloads_use_gvisor([unknown_ns], PolicyConfig())
    assert v.unknown and v.message == "Pod 'w': metadata.namespace"
    unknown_rc = replace(pod, props={**pod.props, "spec": {"runtimeClassName": UNKNOWN}})
    (v,) = rules.sandbox_workloads_use_gvisor([unknown_rc], PolicyConfig())
    assert v.unknown and v.message.endswith("spec.runtimeClassName")
    # A pod that names a gVisor class is sandboxed in whatever namespace it ends up.
    sandboxed = replace(
        unknown_ns, props={**unknown_ns.props, "spec": {"runtimeClassName": rules.DEFAULT_RUNTIME_CLASS}}
    )
    assert rules.sandbox_workloads_use_gvisor([sandboxed], PolicyConfig()) == []


def test_every_rule_is_described():
    names = [r.name for r in rules.RULES]
    assert len(names) == len(set(names)) == 5
    assert all(r.description.endswith(".") for r in rules.RULES)
