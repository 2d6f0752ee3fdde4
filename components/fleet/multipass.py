"""Local VMs through Multipass: this machine's own architecture only.

`multipass launch` takes the same cloud-init user-data as every created
machine (login key, pinned host key) on stdin; scripts/multipass-vm.sh waits
until SSH answers with that key and prints the VM's address, which becomes
the connection's host.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from pathlib import Path

import pulumi
from pulumi_command import local, remote

from components.fleet.cloudinit import secret_user_data
from components.fleet.keys import SshKey, key_material
from components.fleet.machine import Machine
from components.fleet.qemu import READY_SCRIPT, parse_launcher_facts
from components.fleet.specs import MachineSpec, MultipassOptions

SCRIPT = Path(__file__).parent / "scripts" / "multipass-vm.sh"
PROJECT_ROOT = Path(__file__).parents[2]


def launch_command(name: str, opts: MultipassOptions, host_key: str, script: str) -> str:
    parts = [
        "sh", script, "start", name, opts.image, str(opts.cpus), str(opts.memory_mb), opts.disk_size,
        str(opts.launch_timeout), key_material(host_key),
    ]  # fmt: skip
    return " ".join(shlex.quote(p) for p in parts)


def delete_command(name: str, script: str) -> str:
    return " ".join(shlex.quote(p) for p in ("sh", script, "stop", name))


class MultipassMachine(pulumi.ComponentResource):
    """One Multipass instance with a pinned host key, SSH ready."""

    machine: Machine
    vm: local.Command

    def __init__(
        self,
        spec: MachineSpec,
        authorized_key: pulumi.Input[str],
        private_key: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("gvisor-fleet:fleet:MultipassMachine", spec.name, None, opts)
        assert isinstance(spec.options, MultipassOptions)
        o, name = spec.options, spec.name
        script = os.path.relpath(SCRIPT, PROJECT_ROOT)
        host_key = SshKey(f"{name}-host-key", comment=f"{name} host key", opts=pulumi.ResourceOptions(parent=self))
        seed = secret_user_data(name, spec.user, authorized_key, host_key.private_key, host_key.public_key)
        self.vm = local.Command(
            f"{name}-vm",
            create=host_key.public_key.apply(lambda pub: launch_command(name, o, pub, script)),
            delete=delete_command(name, script),
            stdin=seed,
            environment={"GVISOR_FLEET_LAUNCHER_SHA256": hashlib.sha256(SCRIPT.read_bytes()).hexdigest()},
            opts=pulumi.ResourceOptions(
                parent=self, replace_on_changes=["create", "stdin"], delete_before_replace=True
            ),
        )
        facts = self.vm.stdout.apply(parse_launcher_facts)
        connection = remote.ConnectionArgs(
            host=facts.apply(lambda f: f.get("address", "")),
            user=spec.user,
            private_key=pulumi.Output.secret(private_key),
            host_key=host_key.public_key.apply(key_material),
            dial_error_limit=20,
            per_dial_timeout=30,
        )
        instance = facts.apply(lambda f: f.get("instance", ""))
        ready = remote.Command(
            f"{name}-ssh-ready",
            connection=connection,
            create=READY_SCRIPT,
            triggers=[instance],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.vm]),
        )
        self.machine = Machine(
            name=name, arch=spec.arch, user=spec.user, connection=connection, ready=(ready,), instance=instance
        )
        self.register_outputs({"instance": instance})
