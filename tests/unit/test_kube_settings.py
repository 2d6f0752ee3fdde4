"""`gvisor-fleet:kubernetes`: defaults, and every bad value named by its config key with a fix."""

from decimal import Decimal

import pytest

from components.fleet.specs import MachineSpec
from components.kube.settings import (
    DEFAULT_K3S_VERSION,
    KubeSettings,
    fleet_problems,
    parse_kube_settings,
    parse_quantity,
)

X86 = MachineSpec(name="m1", arch="x86_64", address="192.0.2.10")
ARM = MachineSpec(name="m2", arch="aarch64", address="192.0.2.11")


def parse(raw: object, runtime_name: str = "runsc") -> tuple[KubeSettings | None, list[str]]:
    problems: list[str] = []
    return parse_kube_settings(raw, runtime_name, problems), problems


def problems_of(raw: object, runtime_name: str = "runsc") -> list[str]:
    settings, problems = parse(raw, runtime_name)
    assert problems, f"expected problems for {raw!r}, got {settings}"
    return problems


@pytest.mark.parametrize("raw", [None, False, {"enabled": False}, {"enabled": False, "cluster": "k3s"}])
def test_off_by_default_and_when_disabled(raw):
    assert parse(raw) == (None, [])


def test_defaults_are_valid_and_the_handler_is_the_runtime_name():
    s, problems = parse({"enabled": True}, runtime_name="gvisor-runsc")
    assert problems == []
    assert s is not None
    assert s.handler == "gvisor-runsc"
    assert s.cluster == "existing"
    assert s.runtime_class_name == "gvisor"
    assert s.overhead == {"cpu": "100m", "memory": "64Mi"}
    assert s.taint is None
    assert s.k3s.version == DEFAULT_K3S_VERSION
    assert s.sandbox_kernel_releases == ("4.4.0", "*-gvisor")


def test_true_alone_enables_with_defaults():
    s, problems = parse(True)
    assert problems == [] and s is not None and s.runtime_class_name == "gvisor"


def test_full_k3s_settings_parse():
    s, problems = parse(
        {
            "cluster": "k3s",
            "runtimeClassName": "sandboxed.gvisor",
            "namespace": "untrusted",
            "nodeLabel": "example.com/gvisor",
            "overhead": {"cpu": "250m", "memory": "128Mi"},
            "taint": {"key": "sandbox.gke.io/runtime", "value": "gvisor", "effect": "NoSchedule"},
            "sampleImage": "registry.example.com/busybox:1.37",
            "verifyTimeoutSeconds": 120,
            "k3s": {
                "version": "v1.35.5+k3s1",
                "sha256": {"x86_64": "A" * 64},
                "serverUrl": "https://10.0.0.1:6443",
                "apiUrl": "https://k3s.example.com:6443",
            },
        }
    )
    assert problems == []
    assert s is not None
    assert s.cluster == "k3s" and s.namespace == "untrusted"
    assert s.taint is not None and s.taint.effect == "NoSchedule"
    assert s.k3s.sha256 == {"x86_64": "a" * 64}
    assert s.k3s.api_url == "https://k3s.example.com:6443"


def test_overhead_false_charges_nothing():
    s, problems = parse({"overhead": False})
    assert problems == [] and s is not None and s.overhead is None


def test_partial_overhead_keeps_the_other_default():
    s, _ = parse({"overhead": {"memory": "96Mi"}})
    assert s is not None and s.overhead == {"cpu": "100m", "memory": "96Mi"}


@pytest.mark.parametrize(
    ("text", "value"),
    [("100m", Decimal("0.1")), ("1", Decimal(1)), ("64Mi", Decimal(64 * 2**20)), ("1.5Gi", Decimal(3 * 2**29)),
     ("1e3", Decimal(1000)), ("128M", Decimal(128 * 10**6)), ("x", None), ("10 Mi", None), ("Mi", None),
     ("1.2.3", None), ("5mi", None)],
)  # fmt: skip
def test_quantity_grammar(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    ("raw", "key", "hint"),
    [
        ("yes", "gvisor-fleet:kubernetes", "object"),
        ({"enabled": "yes"}, "gvisor-fleet:kubernetes.enabled", "true or false"),
        ({"cluster": "kind"}, "gvisor-fleet:kubernetes.cluster", "existing, k3s"),
        ({"runtimeClassName": "gVisor"}, "gvisor-fleet:kubernetes.runtimeClassName", "DNS subdomain"),
        ({"runtimeClassName": "g_visor"}, "gvisor-fleet:kubernetes.runtimeClassName", "DNS subdomain"),
        ({"namespace": "Sandbox"}, "gvisor-fleet:kubernetes.namespace", "DNS label"),
        ({"namespace": "a.b"}, "gvisor-fleet:kubernetes.namespace", "DNS label"),
        ({"namespace": "default"}, "gvisor-fleet:kubernetes.namespace", "namespace of its own"),
        ({"nodeLabel": "gvisor fleet"}, "gvisor-fleet:kubernetes.nodeLabel", "label key"),
        ({"nodeLabel": "Example.com/x"}, "gvisor-fleet:kubernetes.nodeLabel", "prefix"),
        ({"nodeLabel": "node.kubernetes.io/gvisor"}, "gvisor-fleet:kubernetes.nodeLabel", "reserved"),
        ({"nodeLabel": "a/" + "x" * 64}, "gvisor-fleet:kubernetes.nodeLabel", "63"),
        ({"overhead": {"cpu": "lots"}}, "gvisor-fleet:kubernetes.overhead.cpu", "100m"),
        ({"overhead": {"cpu": "250"}}, "gvisor-fleet:kubernetes.overhead.cpu", "250m"),
        ({"overhead": {"cpu": "0"}}, "gvisor-fleet:kubernetes.overhead.cpu", "more than zero"),
        ({"overhead": {"cpu": "-100m"}}, "gvisor-fleet:kubernetes.overhead.cpu", "more than zero"),
        ({"overhead": {"cpu": "0.1m"}}, "gvisor-fleet:kubernetes.overhead.cpu", "1m"),
        ({"overhead": {"memory": "64"}}, "gvisor-fleet:kubernetes.overhead.memory", "64Mi"),
        ({"overhead": {"memory": "64mb"}}, "gvisor-fleet:kubernetes.overhead.memory", "Mi"),
        ({"overhead": {"memory": "16Gi"}}, "gvisor-fleet:kubernetes.overhead.memory", "8Gi"),
        ({"overhead": {"memory": True}}, "gvisor-fleet:kubernetes.overhead.memory", "quantity"),
        ({"overhead": {"cpus": "1"}}, "gvisor-fleet:kubernetes.overhead.cpus", "cpu, memory"),
        ({"overhead": "100m"}, "gvisor-fleet:kubernetes.overhead", "false"),
        ({"taint": {"key": "sandbox", "value": "g visor"}}, "gvisor-fleet:kubernetes.taint.value", "63"),
        ({"taint": {"key": "sandbox", "effect": "Never"}}, "gvisor-fleet:kubernetes.taint.effect", "NoExecute"),
        ({"taint": {"value": "gvisor"}}, "gvisor-fleet:kubernetes.taint.key", "label key"),
        ({"taint": "sandbox=gvisor"}, "gvisor-fleet:kubernetes.taint", "effect"),
        ({"runtimeclassname": "gvisor"}, "gvisor-fleet:kubernetes.runtimeclassname", "runtimeClassName"),
        ({"handler": "runsc"}, "gvisor-fleet:kubernetes.handler", "known keys"),
        ({"sampleImage": "Busybox"}, "gvisor-fleet:kubernetes.sampleImage", "image reference"),
        ({"sandboxKernelReleases": "4.4.0"}, "gvisor-fleet:kubernetes.sandboxKernelReleases", "list"),
        ({"sandboxKernelReleases": ["4.4.0; rm -rf /"]}, "gvisor-fleet:kubernetes.sandboxKernelReleases", "pattern"),
        ({"verifyTimeoutSeconds": 5}, "gvisor-fleet:kubernetes.verifyTimeoutSeconds", "30 to 3600"),
        ({"nodeNames": {"m1": "Node_1"}}, "gvisor-fleet:kubernetes.nodeNames.m1", "kubectl get nodes"),
        ({"cluster": "k3s", "nodeNames": {"m1": "n1"}}, "gvisor-fleet:kubernetes.nodeNames", "k3s"),
        ({"k3s": {"version": "1.36.4"}}, "gvisor-fleet:kubernetes.k3s", "cluster to k3s"),
        ({"cluster": "k3s", "k3s": {"version": "1.36.4"}}, "gvisor-fleet:kubernetes.k3s.version", "+k3s1"),
        ({"cluster": "k3s", "k3s": {"serverUrl": "http://10.0.0.1:6443"}}, "gvisor-fleet:kubernetes.k3s.serverUrl",
         "https://"),
        ({"cluster": "k3s", "k3s": {"releaseUrl": "github.com/k3s"}}, "gvisor-fleet:kubernetes.k3s.releaseUrl",
         "https://"),
        ({"cluster": "k3s", "k3s": {"sha256": {"amd64": "a" * 64}}}, "gvisor-fleet:kubernetes.k3s.sha256.amd64",
         "x86_64"),
        ({"cluster": "k3s", "k3s": {"sha256": {"x86_64": "abc"}}}, "gvisor-fleet:kubernetes.k3s.sha256.x86_64",
         "64 hex"),
        ({"cluster": "k3s", "k3s": {"runscConfigPath": "runsc.toml"}},
         "gvisor-fleet:kubernetes.k3s.runscConfigPath", "absolute"),
        ({"cluster": "k3s", "k3s": {"tokens": "x"}}, "gvisor-fleet:kubernetes.k3s.tokens", "known keys"),
    ],
)  # fmt: skip
def test_bad_values_name_the_key_and_the_fix(raw, key, hint):
    problems = problems_of(raw)
    assert any(p.startswith(f"{key}:") and hint in p for p in problems), problems


@pytest.mark.parametrize("runtime_name", ["runc", "crun", "nvidia"])
def test_k3s_refuses_a_runtime_name_k3s_already_uses(runtime_name):
    problems = problems_of({"cluster": "k3s"}, runtime_name=runtime_name)
    assert any(p.startswith("gvisor-fleet:runtimeName:") and "k3s configures" in p for p in problems)


def test_every_problem_is_reported_at_once():
    problems = problems_of({"namespace": "A", "overhead": {"cpu": "x", "memory": "1"}, "cluster": "eks"})
    assert len(problems) == 4


def settings(**raw: object) -> KubeSettings:
    s, problems = parse({"enabled": True, **raw})
    assert problems == [] and s is not None
    return s


def test_fleet_without_machines_leaves_the_runtime_class_unschedulable():
    (p,) = fleet_problems(settings(), [], "auto")
    assert p.startswith("gvisor-fleet:kubernetes:") and "no node that can run it" in p


def test_fleet_needs_known_architectures():
    spec = MachineSpec(name="m1", arch="detect", address="h")
    (p,) = fleet_problems(settings(), [spec], "auto")
    assert p.startswith("gvisor-fleet:machines[0].arch:") and "x86_64 or aarch64" in p


def test_existing_cluster_needs_containerd_wired():
    (p,) = fleet_problems(settings(), [X86], "off")
    assert p.startswith("gvisor-fleet:containerd:") and "auto or required" in p


def test_k3s_ignores_the_hosts_containerd_mode():
    assert fleet_problems(settings(cluster="k3s"), [X86, ARM], "off") == []


def test_node_names_must_match_machines_and_be_distinct():
    problems = fleet_problems(settings(nodeNames={"m9": "n1", "m1": "m2"}), [X86, ARM], "auto")
    assert any(p.startswith("gvisor-fleet:kubernetes.nodeNames.m9:") for p in problems)
    assert any(p.startswith("gvisor-fleet:kubernetes.nodeNames:") and "'m2'" in p for p in problems)


def test_k3s_agents_cannot_join_a_loopback_server_address():
    local = MachineSpec(name="m1", arch="x86_64", address="127.0.0.1", port=2222)
    (p,) = fleet_problems(settings(cluster="k3s"), [local, ARM], "auto")
    assert p.startswith("gvisor-fleet:kubernetes.k3s.serverUrl:")
    assert (
        fleet_problems(settings(cluster="k3s", k3s={"serverUrl": "https://10.0.2.2:6443"}), [local, ARM], "auto") == []
    )
    assert fleet_problems(settings(cluster="k3s"), [local], "auto") == []
