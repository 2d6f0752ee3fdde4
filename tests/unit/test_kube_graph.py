"""The Kubernetes resource graph under Pulumi mocks: what is made, where, and from what.

Each test returns the Output it checks, so a check that never ran fails the
test instead of passing silently.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pulumi
import pytest

from components.fleet.specs import MachineSpec
from components.fleet.static import static_machine
from components.gvisor.host import GvisorHost
from components.gvisor.settings import GvisorSettings
from components.kube.deploy import deploy_kubernetes
from components.kube.settings import parse_kube_settings
from components.policy.rules import agent_call
from tests.unit.kube_mocks import (
    JOB_DONE,
    KEY,
    KUBECONFIG,
    TOKEN,
    KubeMocks,
    argv,
    by_name,
    deploy,
    fleet,
    kube,
)  # fmt: skip


@pytest.fixture
def kmocks() -> KubeMocks:
    m = KubeMocks()
    pulumi.runtime.set_mocks(m, project="gvisor-fleet", stack="unit", preview=False)
    return m


@pytest.mark.parametrize("runtime_name", ["runsc", "gvisor"])
@pulumi.runtime.test
def test_existing_cluster_graph(kmocks, runtime_name):
    gv = GvisorSettings(runtime_name=runtime_name)
    problems: list[str] = []
    s = parse_kube_settings({"enabled": True}, gv.runtime_name, problems)
    assert s is not None
    dep = deploy(kmocks, s, gv)

    def check(verification):
        (rc,) = kmocks.of_type("kubernetes:node.k8s.io/v1:RuntimeClass")
        # The one setting: the containerd runtime table the host layer writes is the handler.
        containerd_steps = [r for r in kmocks.of_type("command:remote:Command") if r.name.endswith("-containerd")]
        handlers = {agent_call(r.inputs["create"]).args[0] for r in containerd_steps}  # type: ignore[union-attr]
        assert handlers == {rc.inputs["handler"]} == {runtime_name}
        assert rc.inputs["scheduling"]["nodeSelector"] == {"gvisor-fleet/gvisor": "verified"}
        assert rc.inputs["overhead"] == {"podFixed": {"cpu": "100m", "memory": "64Mi"}}

        pods = by_name(kmocks, "kubernetes:core/v1:Pod")
        jobs = by_name(kmocks, "kubernetes:batch/v1:Job")
        assert set(pods) == {"kubernetes-sample-amd64", "kubernetes-sample-arm64"}
        assert set(jobs) == {"kubernetes-verify-amd64", "kubernetes-verify-arm64"}
        # The verification re-runs when the gVisor build on the nodes changes.
        fingerprints = {
            j.inputs["spec"]["template"]["metadata"]["annotations"]["gvisor-fleet/runtime"] for j in jobs.values()
        }
        assert len(fingerprints) == 1 and len(fingerprints.pop()) == 16
        for r in [*pods.values(), *(j.inputs["spec"]["template"] for j in jobs.values())]:
            spec = r.inputs["spec"] if hasattr(r, "inputs") else r["spec"]
            assert spec["runtimeClassName"] == "gvisor", r
            assert spec["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}

        patches = by_name(kmocks, "kubernetes:core/v1:NodePatch")
        assert {n: p.inputs["metadata"]["labels"] for n, p in patches.items()} == {
            "kubernetes-m1-label": {"gvisor-fleet/gvisor": "verified"},
            "kubernetes-m2-label": {"gvisor-fleet/gvisor": "verified"},
        }
        assert {p.inputs["metadata"]["name"] for p in patches.values()} == {"m1", "m2"}

        (ns,) = kmocks.of_type("kubernetes:core/v1:Namespace")
        assert ns.inputs["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        (netpol,) = kmocks.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
        assert netpol.inputs["spec"]["policyTypes"] == ["Ingress", "Egress"]

        # No k3s here, and everything Kubernetes goes through the component's own provider.
        commands = kmocks.of_type("command:remote:Command")
        assert not [r for r in commands if "k3s node agent" in r.inputs.get("stdin", "")]
        (provider,) = kmocks.of_type("pulumi:providers:kubernetes")
        assert "kubeconfig" not in provider.inputs
        # A busy API server gets longer than the provider's 32 s for an answer (its OpenAPI document).
        assert json.loads(provider.inputs["kubeClientSettings"])["timeout"] == 300  # providers take JSON strings
        for r in kmocks.resources:
            if r.typ.startswith("kubernetes:"):
                assert r.provider and "kubernetes-provider" in r.provider, r.name
                assert kmocks.parents[r.name] == "kubernetes", r.name

        done = JOB_DONE["completionTime"]
        assert verification == {
            "amd64": {"job": "gvisor-sandbox/gvisor-verify-amd64", "passed": True, "completed": done},
            "arm64": {"job": "gvisor-sandbox/gvisor-verify-arm64", "passed": True, "completed": done},
        }
        (component,) = kmocks.of_type("gvisor-fleet:kube:KubeDeployment")
        assert component.name == "kubernetes"

    return dep.verification.apply(check)


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
@pulumi.runtime.test
def test_single_architecture_fleet_gets_one_pod_and_job(kmocks, arch):
    dep = deploy(kmocks, kube(), arches=(arch,))
    goarch = {"x86_64": "amd64", "aarch64": "arm64"}[arch]

    def check(verification):
        pods = by_name(kmocks, "kubernetes:core/v1:Pod")
        jobs = by_name(kmocks, "kubernetes:batch/v1:Job")
        assert set(pods) == {f"kubernetes-sample-{goarch}"} and set(jobs) == {f"kubernetes-verify-{goarch}"}
        assert pods[f"kubernetes-sample-{goarch}"].inputs["spec"]["nodeSelector"] == {"kubernetes.io/arch": goarch}
        assert set(verification) == {goarch}

    return dep.verification.apply(check)


@pulumi.runtime.test
def test_node_without_a_gvisor_containerd_is_not_selected():
    m = KubeMocks({"verify": "host_kernel=6.1.0\nrunsc_ok=true\ndocker_ok=true\ncontainerd_ok=skipped\n"})
    pulumi.runtime.set_mocks(m, project="gvisor-fleet", stack="unit", preview=False)
    dep = deploy(m, kube(), arches=("x86_64",))

    def check(args):
        labels, _ = args
        assert labels == {"m1": "unverified"}
        (patch,) = m.of_type("kubernetes:core/v1:NodePatch")
        assert patch.inputs["metadata"]["labels"] == {"gvisor-fleet/gvisor": "unverified"}

    return pulumi.Output.all(pulumi.Output.all(**dep.node_labels), dep.verification).apply(check)


@pulumi.runtime.test
def test_existing_cluster_kubeconfig_is_a_secret(kmocks):
    dep = deploy(kmocks, kube(), kubeconfig=pulumi.Output.from_input(KUBECONFIG))
    assert dep.kubeconfig is not None

    def check(args):
        is_secret, value, _ = args
        assert is_secret and value == KUBECONFIG
        (provider,) = kmocks.of_type("pulumi:providers:kubernetes")
        assert provider.inputs["kubeconfig"] == KUBECONFIG

    return pulumi.Output.all(dep.kubeconfig.is_secret(), dep.kubeconfig, dep.verification).apply(check)


@pulumi.runtime.test
def test_node_names_map_machines_to_cluster_nodes(kmocks):
    dep = deploy(kmocks, kube(nodeNames={"m1": "ip-10-0-0-1.ec2.internal"}))

    def check(args):
        labels, _ = args
        assert set(labels) == {"ip-10-0-0-1.ec2.internal", "m2"}
        names = {p.inputs["metadata"]["name"] for p in kmocks.of_type("kubernetes:core/v1:NodePatch")}
        assert names == {"ip-10-0-0-1.ec2.internal", "m2"}

    return pulumi.Output.all(pulumi.Output.all(**dep.node_labels), dep.verification).apply(check)


@pulumi.runtime.test
def test_k3s_cluster_graph(kmocks):
    gv = GvisorSettings(runtime_name="runsc", install_dir="/opt/gvisor", runsc_flags={"debug": True})
    s = kube(cluster="k3s", k3s={"sha256": {"aarch64": "b" * 64}})
    dep = deploy(kmocks, s, gv)
    assert dep.kubeconfig is not None

    def check(args):
        kubeconfig_secret, kubeconfig, _ = args
        commands = {
            r.name: r for r in kmocks.of_type("command:remote:Command") if "k3s node agent" in r.inputs.get("stdin", "")
        }
        assert set(commands) == {
            "kubernetes-k3s-m1-install", "kubernetes-k3s-token", "kubernetes-k3s-m2-install",
            "kubernetes-k3s-m1-runtime", "kubernetes-k3s-m2-runtime", "kubernetes-k3s-nodes-ready",
            "kubernetes-k3s-kubeconfig",
        }  # fmt: skip
        for r in commands.values():
            assert kmocks.parents[r.name] == "kubernetes-k3s", r.name
        server = argv(commands["kubernetes-k3s-m1-install"].inputs["create"])
        assert server[3:] == [
            "install", "server", "v1.36.4+k3s1", "https://github.com/k3s-io/k3s/releases/download",
            "https://get.k3s.io", "-", "m1", "-", "192.0.2.10",
        ]  # fmt: skip
        agent_line = commands["kubernetes-k3s-m2-install"].inputs["create"]
        assert agent_line.startswith("sudo -n sh -s -- install agent ")  # m2's user is not root
        agent = argv(agent_line)
        assert agent[8:] == ["b" * 64, "m2", "https://192.0.2.10:6443", "-", TOKEN]
        assert TOKEN not in commands["kubernetes-k3s-m1-install"].inputs["create"]
        for name in ("kubernetes-k3s-m1-install", "kubernetes-k3s-m2-install"):
            assert argv(commands[name].inputs["delete"])[3:] == ["uninstall"]

        # The runtime k3s's containerd gets is the one the RuntimeClass names.
        (rc,) = kmocks.of_type("kubernetes:node.k8s.io/v1:RuntimeClass")
        for node in ("m1", "m2"):
            rt = argv(commands[f"kubernetes-k3s-{node}-runtime"].inputs["create"])
            assert rt[3:5] == ["runtime-configure", rc.inputs["handler"]]
            assert rt[5] == "/opt/gvisor/containerd-shim-runsc-v1"
            toml = base64.b64decode(rt[6]).decode()
            assert toml.startswith('binary_name = "/opt/gvisor/runsc"\n')
            assert 'debug = "true"' in toml and 'platform = "systrap"' in toml and 'network = "sandbox"' in toml
            assert rt[7] == s.k3s.runsc_config_path
            assert argv(commands[f"kubernetes-k3s-{node}-runtime"].inputs["delete"])[3:] == [
                "runtime-restore", s.k3s.runsc_config_path,
            ]  # fmt: skip
        assert argv(commands["kubernetes-k3s-nodes-ready"].inputs["create"])[3:] == ["wait-nodes", "m1", "m2"]
        assert argv(commands["kubernetes-k3s-kubeconfig"].inputs["create"])[3:] == [
            "kubeconfig", "https://192.0.2.10:6443",
        ]  # fmt: skip
        for name in ("kubernetes-k3s-token", "kubernetes-k3s-kubeconfig"):
            assert commands[name].inputs["logging"] == "stderr", "secret stdout must not be logged"

        assert kubeconfig_secret and kubeconfig == KUBECONFIG
        (provider,) = kmocks.of_type("pulumi:providers:kubernetes")
        assert provider.inputs["kubeconfig"] == KUBECONFIG
        labels = {
            p.inputs["metadata"]["name"]: p.inputs["metadata"]["labels"]
            for p in kmocks.of_type("kubernetes:core/v1:NodePatch")
        }
        assert labels == {"m1": {"gvisor-fleet/gvisor": "verified"}, "m2": {"gvisor-fleet/gvisor": "verified"}}
        (cluster,) = kmocks.of_type("gvisor-fleet:kube:K3sCluster")
        assert cluster.name == "kubernetes-k3s"

    return pulumi.Output.all(dep.kubeconfig.is_secret(), dep.kubeconfig, dep.verification).apply(check)


@pulumi.runtime.test
def test_k3s_server_url_and_api_url_overrides(kmocks):
    s = kube(cluster="k3s", k3s={"serverUrl": "https://10.0.0.1:6443", "apiUrl": "https://k3s.example.com:6443"})
    dep = deploy(kmocks, s)

    def check(_):
        commands = {r.name: argv(r.inputs.get("create", "")) for r in kmocks.of_type("command:remote:Command")}
        assert commands["kubernetes-k3s-m1-install"][-1] == "k3s.example.com"  # tls-san for the API URL
        assert commands["kubernetes-k3s-m2-install"][-3] == "https://10.0.0.1:6443"
        assert commands["kubernetes-k3s-kubeconfig"][-1] == "https://k3s.example.com:6443"

    return dep.verification.apply(check)


@pulumi.runtime.test
def test_k3s_join_token_and_kubeconfig_stay_secret(kmocks):
    dep = deploy(kmocks, kube(cluster="k3s"))

    def check(_):
        assert ("kubernetes-k3s-m2-install", "create") in kmocks.secret_inputs, "the agent's join line holds the token"
        assert ("kubernetes-k3s-m1-install", "create") not in kmocks.secret_inputs
        assert ("kubernetes-provider", "kubeconfig") in kmocks.secret_inputs

    return dep.verification.apply(check)


@pytest.mark.parametrize(
    ("case", "key"),
    [
        ("no-machines", "gvisor-fleet:kubernetes:"),
        ("handler-drift", "gvisor-fleet:runtimeName:"),
        ("detect-arch", "gvisor-fleet:machines[0].arch:"),
        ("containerd-off", "gvisor-fleet:containerd:"),
    ],
)
def test_deploy_refuses_what_would_leave_pods_unschedulable(kmocks, case, key):
    gv = GvisorSettings(containerd="off") if case == "containerd-off" else GvisorSettings()
    s = kube()
    hosts: Any = fleet(gv)
    if case == "no-machines":
        hosts = {}
    elif case == "handler-drift":
        gv = GvisorSettings(runtime_name="gvisor")
    elif case == "detect-arch":
        spec = MachineSpec(name="m1", arch="detect", address="192.0.2.10")
        machine = static_machine(spec, KEY)
        hosts = {"m1": (machine, GvisorHost("m1", machine, gv))}
    with pytest.raises(pulumi.RunError) as err:
        deploy_kubernetes(s, hosts, None, gvisor=gv)
    assert f"  - {key}" in str(err.value)
    assert not kmocks.of_type("gvisor-fleet:kube:KubeDeployment")
