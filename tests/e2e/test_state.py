"""What a machine costs in the stack's state, and how the agent script reaches it (real engine).

Six cheap test machines (sandboxes with sshd and the release mirror; Docker
and containerd off, so each runs install (after the preflight checks) and
verify), the upstream
engine and command provider, in order: up, the state's size, a changed agent
script in preview, a copy of the script that vanished from a host, destroy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from components.gvisor.agent import agent_file
from tests.e2e import pulumi_stack, ssh_machines
from tests.e2e.pulumi_stack import Stack
from tests.e2e.ssh_machines import KeyPair, Machine
from tests.support.mirror import Releases

pytestmark = pytest.mark.e2e

MACHINES = 6
STEPS = ("install", "verify")
COMMAND = "command:remote:Command"
COPY = "command:remote:CopyToRemote"
# The goal for fleets of hundreds: what one more machine adds to the state.
STATE_BYTES_PER_MACHINE = 25_000


@dataclass
class Small:
    machines: list[Machine]
    stack: Stack
    home_before: dict[str, list[str]]


def home(machine: Machine) -> list[str]:
    return machine.sandbox.sh("ls -A /root").split()


@pytest.fixture(scope="module")
def small(engine: Path, mirror: Releases, image_tar: Path, client_key: KeyPair, fleet_work: Path) -> Iterator[Small]:
    machines = ssh_machines.start_machines(MACHINES, fleet_work / "machines", client_key, image_tar, daemons=False)
    try:
        stack = Stack(fleet_work / "stack")
        config = pulumi_stack.stack_config(machines, mirror, containerd=False, overrides={"docker": "off"})
        stack.init(config, client_key.private_text)
        yield Small(machines, stack, {m.name: home(m) for m in machines})
    finally:
        for m in machines:
            m.close()


def test_state_per_machine_is_at_most_25_kb(small: Small) -> None:
    small.stack.pulumi("up", "--yes").check()
    exported = small.stack.pulumi("stack", "export").check().stdout
    per_machine = len(exported.encode()) / MACHINES
    assert per_machine <= STATE_BYTES_PER_MACHINE, (
        f"{per_machine:.0f} bytes of state per machine; the largest resources:\n"
        f"{pulumi_stack.largest_resources(exported)}"
    )
    # The script is in the state as an asset hash only, never as text.
    assert "gVisor host agent" not in exported
    # Each resource keeps the line that declared it, and no stack trace (lean_state.py).
    for resource in json.loads(exported)["deployment"]["resources"]:
        if resource["type"].startswith(("command:", "gvisor-fleet:")):
            assert "stackTrace" not in resource, resource["urn"]
            assert resource["sourcePosition"].startswith("project:///components/"), resource["urn"]
    for m in small.machines:
        assert m.sandbox.sh(f"ls /root/{agent_file()}").strip()


def test_a_changed_agent_script_shows_as_a_change_of_every_step(small: Small) -> None:
    script = small.stack.dir / "components" / "gvisor" / "scripts" / "gvisor-host.sh"
    original = script.read_text()
    before = [m.remote_commands() for m in small.machines]
    try:
        script.write_text(original + "# one more line\n")
        run = small.stack.pulumi("preview", events=True).check()
    finally:
        script.write_text(original)
    assert [m.remote_commands() for m in small.machines] == before, "preview ran something on a machine"
    ops = run.ops(COMMAND)
    for m in small.machines:
        assert run.ops(COPY)[f"{m.name}-agent"] == {"update"}
        for step in STEPS:
            assert ops[f"{m.name}-{step}"] & {"update", "replace"}, (step, ops[f"{m.name}-{step}"])
    small.stack.pulumi("preview", "--expect-no-changes").check()


def test_a_vanished_copy_fails_clearly_and_replacing_the_copy_repairs_it(small: Small) -> None:
    m = small.machines[0]
    m.sandbox.sh("rm -rf /root/.gvisor-fleet")
    # A change that runs every step again (a new stepTimeout): the first step fails, naming the file.
    small.stack.set_config(plain_config(small, stepTimeout=1200))
    run = small.stack.pulumi("up", "--yes")
    assert run.returncode != 0
    assert f"cannot open {agent_file()}: No such file" in run.output, run.output[-3000:]
    shown = small.stack.pulumi("stack", "--show-urns").check().stdout
    (urn,) = re.findall(rf"urn:pulumi:\S+::{m.name}-agent\b(?!-)", shown)
    small.stack.pulumi("up", "--yes", "--replace", urn).check()
    small.stack.pulumi("up", "--yes", "--expect-no-changes").check()


def test_destroy_removes_the_copied_script_and_its_folder(small: Small) -> None:
    small.stack.pulumi("destroy", "--yes").check()
    assert {m.name: home(m) for m in small.machines} == small.home_before


def plain_config(small: Small, **overrides: object) -> dict[str, object]:
    """The stack's plain gvisor-fleet settings as they are, with overrides."""
    doc = yaml.safe_load(small.stack.config_file.read_text())["config"]
    plain = {k.split(":", 1)[1]: v for k, v in doc.items() if not (isinstance(v, dict) and "secure" in v)}
    plain.update(overrides)
    return plain
