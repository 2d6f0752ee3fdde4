"""Pulumi mocks: record every resource, answer commands with canned agent facts."""

from __future__ import annotations

import pulumi

# What the agent prints on a healthy x86_64 host, per subcommand.
AGENT_OUTPUT = {
    "preflight": "arch=x86_64\nkernel=6.1.0-28-amd64\ncgroup_version=2\nkvm=no\n",
    "install": "changed=true\nrelease=20261116.0\nrunsc_version=release-20261116.0\n",
    "docker-configure": "docker=configured\n",
    "containerd-configure": "containerd=configured\ncontainerd_config_version=2\n",
    "verify": (
        "host_kernel=6.1.0-28-amd64\nrunsc_ok=true\nrunsc_sandbox_kernel=4.4.0\n"
        "docker_sandbox_kernel=4.4.0\ndocker_ok=true\ncontainerd_ok=true\n"
    ),
}


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources.append(args)
        outputs = dict(args.inputs)
        if args.typ == "command:remote:Command":
            sub = args.inputs["create"].split(" -- ", 1)[1].split(" ", 1)[0]
            outputs["stdout"] = AGENT_OUTPUT.get(sub, "")
        return [f"{args.name}-id", outputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}

    def of_type(self, typ: str) -> list[pulumi.runtime.MockResourceArgs]:
        return [r for r in self.resources if r.typ == typ]
