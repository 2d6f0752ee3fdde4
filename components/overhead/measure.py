"""OverheadMeasurement: one remote step per machine, after the host is verified.

A thin shell: `measure_command` builds the command line (pure), the script
(scripts/measure.sh, sent on stdin like the k3s node script) does the work and
prints one `overhead=<JSON>` line, which `parse_overhead` turns into the
machine's `overhead` output.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pulumi
from pulumi_command import remote

from components.fleet.machine import Machine
from components.gvisor.settings import GvisorSettings
from components.overhead.settings import OverheadSettings

SCRIPT_PATH = Path(__file__).parent / "scripts" / "measure.sh"


@cache
def measure_script() -> str:
    return SCRIPT_PATH.read_text()


def measure_command(gv: GvisorSettings, ov: OverheadSettings, sudo: bool) -> str:
    """The step's command line: every part quoted; any setting change changes it (and re-runs the step)."""
    args = (
        "measure", ov.engine, gv.docker, gv.containerd, gv.runtime_name, gv.verify_image, gv.install_dir,
        gv.runsc_config_path, gv.platform, str(ov.budget), str(ov.runs), gv.release,
    )  # fmt: skip
    line = " ".join(shlex.quote(part) for part in ("sh", "-s", "--", *args))
    return f"sudo -n {line}" if sudo else line


def parse_overhead(text: str) -> dict[str, Any]:
    """The measurement's JSON (the value of its `overhead=` line)."""
    data = json.loads(text)
    if not isinstance(data, dict) or "runtimes" not in data:
        raise ValueError(f"not an overhead measurement: {text[:200]}")
    return data


def overhead_from_stdout(stdout: str) -> dict[str, Any]:
    for line in stdout.splitlines():
        if line.startswith("overhead="):
            return parse_overhead(line.partition("=")[2])
    return {}


class OverheadMeasurement(pulumi.ComponentResource):
    """runc against runsc on one machine, measured once its gVisor host is verified."""

    result: pulumi.Output[dict[str, Any]]

    def __init__(
        self,
        name: str,
        machine: Machine,
        gv: GvisorSettings,
        ov: OverheadSettings,
        host: pulumi.Resource,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("gvisor-fleet:overhead:OverheadMeasurement", name, None, opts)
        triggers = [machine.instance] if machine.instance is not None else None
        step = remote.Command(
            f"{name}-overhead",
            connection=machine.connection,
            create=measure_command(gv, ov, sudo=machine.user != "root"),
            stdin=measure_script(),
            triggers=triggers,
            add_previous_output_in_env=False,
            # The host component's every step (verify last) must be done first.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[host]),
        )
        self.result = step.stdout.apply(overhead_from_stdout)
        self.register_outputs({"result": self.result})


def measure_fleet(
    machines: Mapping[str, tuple[Machine, pulumi.Resource]], gv: GvisorSettings, ov: OverheadSettings | None
) -> dict[str, OverheadMeasurement]:
    """One measurement per machine, each after that machine's host component; none when off."""
    if ov is None:
        return {}
    return {name: OverheadMeasurement(name, machine, gv, ov, host) for name, (machine, host) in machines.items()}


def with_overhead(facts: pulumi.Output[dict[str, str]], measurement: OverheadMeasurement | None) -> pulumi.Output[Any]:
    """A machine's outputs, with `overhead` added when it was measured."""
    if measurement is None:
        return facts
    return pulumi.Output.all(facts, measurement.result).apply(lambda fr: {**fr[0], "overhead": fr[1]})
