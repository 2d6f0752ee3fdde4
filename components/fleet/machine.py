"""The record every backend hands to the host layer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
from pulumi_command import remote


@dataclass(frozen=True)
class Machine:
    name: str
    arch: str  # x86_64, aarch64, or "detect"
    user: str
    connection: remote.ConnectionArgs
    # Resources that must exist before SSH works (e.g. the VM itself). For
    # machines the fleet creates, SSH already answers (with the pinned host
    # key and the stack's login key) once these exist.
    ready: Sequence[pulumi.Resource] = field(default_factory=tuple)
    # Changes whenever the machine is created anew (a replaced VM or instance):
    # the host layer can use it as a trigger to install again. None for
    # machines that exist outside the stack.
    instance: pulumi.Input[str] | None = None
    # The address the other machines of the fleet reach this one on (a
    # Kubernetes node IP, the API server's advertise address): a qemu VM's
    # LAN address, a static machine's privateAddress, an EC2 instance's
    # private IP. None when unknown (multipass, machines without either
    # setting): the node script then uses the machine's default-route address.
    private_address: pulumi.Input[str] | None = None
