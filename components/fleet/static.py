"""Existing machines listed in stack config (bare metal, any cloud)."""

from __future__ import annotations

import pulumi
from pulumi_command import remote

from components.fleet.keys import key_material
from components.fleet.machine import Machine
from components.fleet.specs import MachineSpec


def static_machine(spec: MachineSpec, private_key: pulumi.Input[str]) -> Machine:
    connection = remote.ConnectionArgs(
        host=spec.address,
        port=spec.port,
        user=spec.user,
        private_key=pulumi.Output.secret(private_key),
        host_key=key_material(spec.host_key) if spec.host_key else None,
        # Hosts being rebooted or still booting refuse the first dials.
        dial_error_limit=30,
    )
    return Machine(
        name=spec.name, arch=spec.arch, user=spec.user, connection=connection, private_address=spec.private_address
    )
