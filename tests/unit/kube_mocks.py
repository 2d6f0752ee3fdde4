"""Pulumi mocks for the Kubernetes layer's graph tests: agent facts for every script, finished Jobs, parents."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

import pulumi

from components.fleet.specs import MachineSpec
from components.fleet.static import static_machine
from components.gvisor.host import GvisorHost
from components.gvisor.settings import GvisorSettings
from components.kube.deploy import KubeDeployment, deploy_kubernetes
from components.kube.settings import KubeSettings, parse_kube_settings
from tests.unit.mocks import AGENT_OUTPUT, KUBEADM_OUTPUT, RecordingMocks, agent_stdout

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-material\n-----END OPENSSH PRIVATE KEY-----\n"
TOKEN = "K10feedface::server:join-secret"
KUBECONFIG = "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://192.0.2.10:6443\n"
K3S_OUTPUT = {
    "install": "changed=true\nk3s_role=server\nk3s_version=v1.36.4+k3s1\n",
    "token": TOKEN + "\n",
    "kubeconfig": KUBECONFIG,
    "runtime-configure": "k3s_runtime=configured\nk3s_template=config-v3.toml.tmpl\n"
    "k3s_containerd_config_version=3\nk3s_runtime_ok=true\n",
}
JOB_DONE = {
    "succeeded": 1,
    "completionTime": "2026-11-28T10:00:00Z",
    "conditions": [{"type": "Complete", "status": "True"}],
}
SPECS = {
    "x86_64": MachineSpec(name="m1", arch="x86_64", address="192.0.2.10", host_key="ssh-ed25519 AAAA"),
    "aarch64": MachineSpec(name="m2", arch="aarch64", address="192.0.2.11", user="admin", host_key="ssh-ed25519 BBBB"),
}


SECRET_SIG = "4dabf18193072939515e22adb298388d"  # Pulumi's wire marker for a secret value


def unsecret(value: Any) -> Any:
    """Mock inputs carry secrets wrapped in Pulumi's wire marker; tests read the plain value."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
            return unsecret(value["value"])
        return {k: unsecret(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unsecret(v) for v in value]
    return value


class KubeMocks(RecordingMocks):
    """Agent facts for both scripts, a finished Job status, and every child's parent."""

    def __init__(self, agent_output: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.agent_output = {**AGENT_OUTPUT, **(agent_output or {})}
        self.parents: dict[str, str] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.secret_inputs = getattr(self, "secret_inputs", set())
        for key, value in args.inputs.items():
            if unsecret(value) is not value and isinstance(value, dict) and SECRET_SIG in value:
                self.secret_inputs.add((args.name, key))
        args.inputs = unsecret(args.inputs)
        if args.typ == "command:remote:Command":
            self.resources.append(args)
            stdin = args.inputs.get("stdin", "")
            table = (
                K3S_OUTPUT if "k3s node agent" in stdin else KUBEADM_OUTPUT if "kubeadm node agent" in stdin
                else self.agent_output
            )  # fmt: skip
            return [f"{args.name}-id", {**args.inputs, "stdout": agent_stdout(args.inputs.get("create", ""), table)}]
        rid, outputs = super().new_resource(args)
        if args.typ == "kubernetes:batch/v1:Job":
            outputs["status"] = JOB_DONE
        return [rid, outputs]

    def record_parent(self, args: pulumi.ResourceTransformationArgs) -> None:
        parent = args.opts.parent if args.opts else None
        self.parents[args.name] = parent._name if parent is not None else ""  # type: ignore[attr-defined]


def argv(line: str) -> list[str]:
    words = shlex.split(line)
    return words[2:] if words[:2] == ["sudo", "-n"] else words


def kube(**raw: object) -> KubeSettings:
    problems: list[str] = []
    s = parse_kube_settings({"enabled": True, **raw}, GvisorSettings().runtime_name, problems)
    assert problems == [] and s is not None
    return s


def fleet(gv: GvisorSettings, arches: tuple[str, ...] = ("x86_64", "aarch64")) -> dict[str, tuple[Any, GvisorHost]]:
    hosts = {}
    for arch in arches:
        machine = static_machine(SPECS[arch], KEY)
        hosts[machine.name] = (machine, GvisorHost(machine.name, machine, gv))
    return hosts


def deploy(m: KubeMocks, s: KubeSettings, gv: GvisorSettings | None = None, **kw: Any) -> KubeDeployment:
    gv = gv or GvisorSettings()
    opts = pulumi.ResourceOptions(transformations=[lambda a: m.record_parent(a)])
    hosts = kw.pop("hosts", None)  # {}: no machines (the node installer's stacks)
    hosts = fleet(gv, kw.pop("arches", ("x86_64", "aarch64"))) if hosts is None else hosts
    return deploy_kubernetes(s, hosts, kw.pop("kubeconfig", None), opts, gvisor=gv)


def by_name(m: KubeMocks, typ: str) -> dict[str, Any]:
    return {r.name: r for r in m.of_type(typ)}
