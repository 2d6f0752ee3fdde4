"""Adding or removing a machine touches only that machine, under the real engine.

Nine SSH test machines (Docker only, Debian's containerd is not used), of
which the stack first has eight. Adding the ninth: the preview creates only
its resources and leaves every other one as it is; `up` opens SSH sessions
on it alone. Removing the second: the preview deletes only its resources;
`up` puts it back byte for byte as it was before gvisor-fleet (files and
the login home) and opens no session on the others, whose files stay as
they were.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e import pulumi_stack, ssh_machines
from tests.e2e.pulumi_stack import Run, Stack, record
from tests.e2e.ssh_machines import KeyPair, Machine, snapshot
from tests.support.mirror import Releases

pytestmark = pytest.mark.e2e
FLEET = 8  # machines in the stack before one is added


@dataclass
class Fleet:
    machines: list[Machine]
    stack: Stack
    releases: Releases
    as_found: dict[str, dict[str, bytes | None]]
    home: dict[str, list[str]]
    done: set[str] = field(default_factory=set)

    def config(self, members: list[Machine]) -> dict[str, object]:
        return pulumi_stack.stack_config(members, self.releases, containerd=False)

    def sessions(self) -> dict[str, int]:
        return {m.name: m.remote_commands() for m in self.machines}

    def require(self, step: str) -> None:
        if step not in self.done:
            pytest.skip(f"needs the '{step}' step, which failed or did not run")


def changed(run: Run) -> dict[str, set[str]]:
    """Every resource the engine does anything to but leave it as it is."""
    return {name: ops for name, ops in run.ops().items() if ops != {"same"}}


def machine_of(name: str) -> str:
    """The machine a resource belongs to: its GvisorHost is named after it, its steps `<machine>-<step>`."""
    return name.split("-", 1)[0]


@pytest.fixture(scope="module")
def fleet(engine: Path, mirror: Releases, image_tar: Path, client_key: KeyPair, fleet_work: Path) -> Iterator[Fleet]:
    machines = ssh_machines.start_machines(FLEET + 1, fleet_work / "machines", client_key, image_tar, prefix="f")
    try:
        stack = Stack(fleet_work / "stack")
        as_found = {m.name: snapshot(m) for m in machines}
        home = {m.name: m.sandbox.sh("ls -A /root").split() for m in machines}
        fleet = Fleet(machines, stack, mirror, as_found, home)
        stack.init(fleet.config(machines[:FLEET]), client_key.private_text)
        run = stack.pulumi("up", "--yes").check()
        record(f"fleet change: up ({FLEET} machines)", run)
        fleet.done.add("up")
        yield fleet
    finally:
        for m in machines:
            m.close()


def test_adding_a_machine_previews_and_touches_only_its_resources(fleet: Fleet) -> None:
    fleet.require("up")
    *fleet_before, added = fleet.machines
    fleet.stack.set_config(fleet.config(fleet.machines))
    preview = fleet.stack.pulumi("preview", events=True).check()
    record("fleet change: preview add", preview)
    created = changed(preview)
    assert created, preview.stdout
    assert all(ops == {"create"} for ops in created.values()), created
    assert {machine_of(name) for name in created} == {added.name}, created
    assert added.name in created  # its GvisorHost, and the steps under it

    before = fleet.sessions()
    others = {m.name: snapshot(m) for m in fleet_before}
    run = fleet.stack.pulumi("up", "--yes", events=True).check()
    record("fleet change: up add", run)
    assert changed(run) == created
    after = fleet.sessions()
    assert {m.name: after[m.name] - before[m.name] for m in fleet_before} == {m.name: 0 for m in fleet_before}
    assert after[added.name] > before[added.name]
    assert {m.name: snapshot(m) for m in fleet_before} == others
    facts = fleet.stack.outputs()["machines"][added.name]  # type: ignore[index]
    assert facts["runsc_ok"] == "true"
    fleet.done.add("add")


def test_removing_a_machine_restores_it_byte_for_byte_and_leaves_the_others(fleet: Fleet) -> None:
    fleet.require("add")
    second = fleet.machines[1]
    kept = [m for m in fleet.machines if m is not second]
    fleet.stack.set_config(fleet.config(kept))
    preview = fleet.stack.pulumi("preview", events=True).check()
    record("fleet change: preview remove", preview)
    removed = changed(preview)
    assert removed and all(ops == {"delete"} for ops in removed.values()), removed
    assert {machine_of(name) for name in removed} == {second.name}, removed

    before = fleet.sessions()
    others = {m.name: snapshot(m) for m in kept}
    run = fleet.stack.pulumi("up", "--yes", events=True).check()
    record("fleet change: up remove", run)
    assert changed(run) == removed
    after = fleet.sessions()
    assert {m.name: after[m.name] - before[m.name] for m in kept} == {m.name: 0 for m in kept}
    assert snapshot(second) == fleet.as_found[second.name], "the removed machine differs from before gvisor-fleet"
    assert second.sandbox.sh("ls -A /root").split() == fleet.home[second.name]
    assert second.sandbox.sh("test -e /var/lib/gvisor-fleet && echo left || true").strip() == ""
    assert {m.name: snapshot(m) for m in kept} == others
    assert set(fleet.stack.outputs()["machines"]) == {m.name for m in kept}  # type: ignore[arg-type]
