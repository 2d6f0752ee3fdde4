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
    # Resources that must exist before SSH works (e.g. the VM itself).
    ready: Sequence[pulumi.Resource] = field(default_factory=tuple)
