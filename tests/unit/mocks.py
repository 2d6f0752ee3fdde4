"""Pulumi mocks: record every resource and what it depends on, answer commands with agent facts;
and stack config for the program under them."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Mapping

import pulumi
from pulumi.runtime.config import set_all_config
from pulumi.runtime.mocks import MockMonitor

from components.fleet.keys import generate_ed25519

KEY = generate_ed25519("test").private_key  # the stack's sshPrivateKey

# What the agent prints on a healthy x86_64 host, per subcommand.
AGENT_OUTPUT = {
    "preflight": "arch=x86_64\nkernel=6.1.0-28-amd64\ncgroup_version=2\nkvm=no\n",
    "install": "changed=true\nrelease=20261116.0\nrunsc_version=release-20261116.0\n",
    "install-file": "changed=true\nrelease=20261116.0\nrunsc_version=release-20261116.0\n",
    "docker-configure": "docker=configured\n",
    "containerd-configure": "containerd=configured\ncontainerd_config_version=2\n",
    "verify": (
        "host_kernel=6.1.0-28-amd64\nrunsc_ok=true\nrunsc_sandbox_kernel=4.4.0\n"
        "docker_sandbox_kernel=4.4.0\ndocker_ok=true\ncontainerd_ok=true\n"
    ),
}
# What the kubeadm node script prints, per subcommand (components/kube/kubeadm.py).
KUBEADM_OUTPUT = {
    "install": "changed=true\nkubernetes_version=v1.37.2\nnode_ip=192.0.2.10\n",
    "network": "changed=true\n",
    "init": "changed=true\n",
    "join-token": "token=abcdef.0123456789abcdef\nca_cert_hash=sha256:" + "c" * 64 + "\nendpoint=192.0.2.10:6443\n",
    "join": "changed=true\n",
    "wait-ready": "node_ready=m1\n",
    "kubeconfig": "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://192.0.2.10:6443\n",
}


def agent_stdout(line: str, table: Mapping[str, str] = AGENT_OUTPUT) -> str:
    """What the agent prints for a command line: for every subcommand on it (the install
    step runs preflight, then install)."""
    return "".join(table[word] for word in shlex.split(line) if word in table)


class RecordingMocks(pulumi.runtime.Mocks):
    """`stdout` overrides AGENT_OUTPUT per resource name (e.g. {"m1-verify": "runsc_ok=false\\n"})."""

    def __init__(self, stdout: Mapping[str, str] | None = None) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []
        self.stdout = dict(stdout or {})
        # Resource name -> names of the resources the engine must finish first
        # (explicit depends_on and the resources whose outputs feed its inputs).
        self.depends_on: dict[str, set[str]] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources.append(args)
        outputs = dict(args.inputs)
        if args.typ == "command:remote:Command" and args.inputs.get("create"):  # a delete-only command has none
            table = KUBEADM_OUTPUT if "kubeadm node agent" in args.inputs.get("stdin", "") else AGENT_OUTPUT
            create = args.inputs["create"]
            line = str(create.get("value", "")) if isinstance(create, dict) else create  # a secret arrives wrapped
            outputs["stdout"] = self.stdout.get(args.name, agent_stdout(line, table))
        return [f"{args.name}-id", outputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}

    def of_type(self, typ: str) -> list[pulumi.runtime.MockResourceArgs]:
        return [r for r in self.resources if r.typ == typ]


class RecordingMonitor(MockMonitor):
    """The mock monitor, also keeping each registration's dependencies (MockResourceArgs has none)."""

    mocks: RecordingMocks

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        self.mocks.depends_on[request.name] = {urn.rsplit("::", 1)[-1] for urn in request.dependencies}
        return response


def settled(program: Callable[[], object]) -> None:
    """Runs `program` under the mocks and returns once every registration it made is done.

    A check inside an apply can run before resources that the awaited Output does
    not depend on are registered; what reads `depends_on` of those checks after this.
    """
    pulumi.runtime.test(program)()


def use(mocks: RecordingMocks, stack: str = "unit") -> RecordingMocks:
    """Routes every resource the program declares from now on to `mocks`."""
    pulumi.runtime.set_mocks(mocks, project="gvisor-fleet", stack=stack, preview=False, monitor=RecordingMonitor(mocks))
    return mocks


def configure(**values: object) -> None:
    """Sets the stack's gvisor-fleet:* config as `pulumi config set` would (sshPrivateKey a secret)."""
    config = {f"gvisor-fleet:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
    set_all_config(config, secret_keys=["gvisor-fleet:sshPrivateKey"])
