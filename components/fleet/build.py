"""The fleet: every machine of the stack, made or reached, handed on as `Machine` records.

`build_fleet` is the one entry point for the program. Machines converge in
parallel: nothing orders one machine after another, so Pulumi creates them
(and the host layer converges them) side by side.

SSH login key: the stack's `sshPrivateKey` when set, else an ed25519 key the
fleet makes once and keeps in state as a secret (`Fleet.private_key`).
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi

from components.fleet.keys import SshKey, public_key_of
from components.fleet.machine import Machine
from components.fleet.multipass import MultipassMachine
from components.fleet.qemu import QemuHost, QemuMachine, this_host
from components.fleet.specs import CREATED, MachineSpec
from components.fleet.static import static_machine


class Fleet(pulumi.ComponentResource):
    """All machines of the stack, one child per created machine."""

    machines: list[Machine]
    private_key: pulumi.Output[str] | None  # the login key (secret), None when no machine needs one
    public_key: pulumi.Output[str] | None

    def __init__(
        self,
        name: str,
        specs: Sequence[MachineSpec],
        private_key: pulumi.Input[str] | None,
        opts: pulumi.ResourceOptions | None = None,
        *,
        qemu_host: QemuHost | None = None,
        aws_sdk: object = None,
    ) -> None:
        super().__init__("gvisor-fleet:fleet:Fleet", name, None, opts)
        created = [s for s in specs if s.backend in CREATED]
        self.private_key = self.public_key = None
        if private_key is not None:
            self.private_key = pulumi.Output.secret(private_key)
            self.public_key = self.private_key.apply(lambda k: public_key_of(k, f"gvisor-fleet {pulumi.get_stack()}"))
        elif created:
            key = SshKey(
                "ssh-login-key",
                comment=f"gvisor-fleet {pulumi.get_project()}/{pulumi.get_stack()}",
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.private_key, self.public_key = pulumi.Output.secret(key.private_key), key.public_key

        child = pulumi.ResourceOptions(parent=self)
        aws_fleet = None
        self.machines = []
        for spec in specs:
            if spec.backend == "static":
                if self.private_key is None:
                    raise pulumi.RunError(f"machine {spec.name}: gvisor-fleet:sshPrivateKey is missing")
                self.machines.append(static_machine(spec, self.private_key))
                continue
            assert self.private_key is not None and self.public_key is not None
            if spec.backend == "qemu":
                host = qemu_host or this_host()
                qemu = QemuMachine(spec, self.public_key, self.private_key, host, opts=child)
                self.machines.append(qemu.machine)
            elif spec.backend == "multipass":
                self.machines.append(MultipassMachine(spec, self.public_key, self.private_key, opts=child).machine)
            elif spec.backend == "aws":
                if aws_fleet is None:
                    from components.fleet.aws import AwsFleet  # pulumi-aws only when used

                    aws_fleet = AwsFleet("aws", self.public_key, self.private_key, sdk=aws_sdk, opts=child)
                self.machines.append(aws_fleet.machine(spec))
            else:
                raise pulumi.RunError(f"machine {spec.name}: unknown backend '{spec.backend}'")
        outputs: dict[str, object] = {"machines": [m.name for m in self.machines]}
        if self.public_key is not None:
            outputs["public_key"] = self.public_key
        self.register_outputs(outputs)


def build_fleet(
    specs: Sequence[MachineSpec],
    private_key: pulumi.Input[str] | None,
    opts: pulumi.ResourceOptions | None = None,
) -> list[Machine]:
    """Machines for the host layer, in the order of the stack's machine list."""
    if not specs:
        return []
    return Fleet("fleet", specs, private_key, opts).machines
