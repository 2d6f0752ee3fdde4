"""Upgrades in waves, and the rollback of a canary whose verify fails, under the real engine.

Four SSH test machines (Docker only), `rollout: {waves: [1, 2]}`: the canary w1 (the
first x86_64 machine), then w2, then w3 and w4. The releases come from a folder of the
test's own (file:// baseUrl): the mirror's current one, the same binaries repacked (an
upgrade that passes) and a release whose runsc refuses every container an engine asks
for, though `runsc do` works (tests/support/made_releases.py). In order: the first up;
an upgrade that passes, wave after wave; an upgrade to the failing release while a loop
starts a sandboxed container on each machine every few seconds: the canary's install
step fails and rolls back, no other machine is reached, every machine runs the release
it had, and the loop saw no failure but on the canary during that one step.
"""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e import pulumi_stack, ssh_machines
from tests.e2e.pulumi_stack import Run, Stack, record
from tests.e2e.ssh_machines import KeyPair, Machine
from tests.support import made_releases
from tests.support.image import TEST_IMAGE
from tests.support.mirror import MIRROR_ROOT, Releases

pytestmark = pytest.mark.e2e

WAVES = [["w1"], ["w2"], ["w3", "w4"]]
LOOP_SECONDS = 3.0


@dataclass
class Fleet:
    machines: list[Machine]
    stack: Stack
    root: Path
    releases: dict[str, str]
    done: set[str] = field(default_factory=set)

    def config(self, release: str) -> dict[str, object]:
        overrides = {"baseUrl": self.root.as_uri(), "rollout": {"waves": [1, 2]}, "release": release}
        return pulumi_stack.stack_config(self.machines, Releases("", "", "", ""), containerd=False, overrides=overrides)

    def sessions(self) -> dict[str, int]:
        return {m.name: m.remote_commands() for m in self.machines}

    def installed(self) -> dict[str, str]:
        """Each machine's release, as its install state says."""
        return {m.name: m.sandbox.sh("sed -n 's/^release=//p' /var/lib/gvisor-fleet/install.state").strip()
                for m in self.machines}  # fmt: skip

    def require(self, step: str) -> None:
        if step not in self.done:
            pytest.skip(f"needs the '{step}' step, which failed or did not run")


class ContainerLoop:
    """Starts a sandboxed container (`docker run --runtime=runsc`) on each machine every few
    seconds, as a workload would, and keeps (machine, start, end, ok, error) of each."""

    def __init__(self, machines: list[Machine]) -> None:
        self.machines = machines
        self.results: list[tuple[str, float, float, bool, str]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(m,), daemon=True) for m in machines]

    def _loop(self, machine: Machine) -> None:
        while not self.stop.is_set():
            start = time.time()
            result = machine.sandbox.run(["docker", "run", "--rm", "--runtime=runsc", TEST_IMAGE, "true"], timeout=120)
            self.results.append((machine.name, start, time.time(), result.returncode == 0, result.stderr[-300:]))
            self.stop.wait(max(0.0, LOOP_SECONDS - (time.time() - start)))

    def __enter__(self) -> ContainerLoop:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=150)


@pytest.fixture(scope="module")
def fleet(engine: Path, mirror: Releases, image_tar: Path, client_key: KeyPair, fleet_work: Path) -> Iterator[Fleet]:
    root = fleet_work / "releases"
    current = root / mirror.current
    shutil.copytree(MIRROR_ROOT / mirror.current, current)
    day = mirror.current.split(".")[0]
    releases = {
        "current": mirror.current,
        "good": made_releases.repacked(current, root, f"{day}.4"),
        "failing": made_releases.refusing(current, root, f"{day}.5", ("create",)),
    }
    machines = ssh_machines.start_machines(4, fleet_work / "machines", client_key, image_tar, prefix="w")
    try:
        fleet = Fleet(machines, Stack(fleet_work / "stack"), root, releases)
        fleet.stack.init(fleet.config(releases["current"]), client_key.private_text)
        yield fleet
    finally:
        for m in machines:
            m.close()


def assert_wave_after_wave(run: Run) -> None:
    """No install step of a wave started before every verify step of the wave before ended."""
    times = run.step_spans()
    for before, wave in itertools.pairwise(WAVES):
        verified = max(times[f"{m}-verify"][1] for m in before)
        started = min(times[f"{m}-install"][0] for m in wave)
        assert started >= verified, f"{wave} started at {started}, before {before} verified at {verified}"


def test_the_first_up_goes_wave_by_wave(fleet: Fleet) -> None:
    run = fleet.stack.pulumi("up", "--yes", events=True).check()
    record("waves: first up (4 machines, 3 waves)", run)
    assert_wave_after_wave(run)
    assert fleet.stack.outputs()["allChecksPassed"] is True
    assert set(fleet.installed().values()) == {fleet.releases["current"]}
    fleet.done.add("up")


def test_an_upgrade_that_passes_reaches_every_wave_in_turn(fleet: Fleet) -> None:
    fleet.require("up")
    fleet.stack.set_config(fleet.config(fleet.releases["good"]))
    run = fleet.stack.pulumi("up", "--yes", events=True).check()
    record("waves: upgrade (4 machines, 3 waves)", run)
    assert_wave_after_wave(run)
    assert set(fleet.installed().values()) == {fleet.releases["good"]}
    for m in fleet.machines:  # the release it replaced is not kept once the new one passed
        assert m.sandbox.sh("ls -A /usr/local/bin | grep -c '^.gvisor-fleet' || true").strip() == "0"
        assert m.read("/var/lib/gvisor-fleet/upgrade.state") is None
    fleet.done.add("upgrade")


def test_a_release_failing_verify_stops_at_the_canary_which_rolls_back(fleet: Fleet) -> None:
    fleet.require("upgrade")
    good, failing = fleet.releases["good"], fleet.releases["failing"]
    binaries = {m.name: m.read("/usr/local/bin/runsc") for m in fleet.machines}
    fleet.stack.set_config(fleet.config(failing))
    before = fleet.sessions()
    with ContainerLoop(fleet.machines) as loop:
        time.sleep(2 * LOOP_SECONDS)  # the loop runs before the up starts, and after it ends
        run = fleet.stack.pulumi("up", "--yes", events=True)
        time.sleep(2 * LOOP_SECONDS)
    record("waves: failing canary, rolled back", run)

    assert run.returncode != 0, "the up must fail on the canary"
    assert f"gVisor {failing} failed verify on this host for: docker" in run.output
    assert f"rolled back to gVisor {good}, which passes verify again" in run.output
    # The later waves were not reached: no SSH session, no step that changed anything.
    after = fleet.sessions()
    assert {n: after[n] - before[n] for n in ("w2", "w3", "w4")} == {"w2": 0, "w3": 0, "w4": 0}
    touched = {name for name, ops in run.ops().items() if ops != {"same"}}
    assert touched == {"w1-install"}, touched
    # Every machine runs the release it had, byte for byte, and runs containers under it.
    assert fleet.installed() == {m.name: good for m in fleet.machines}
    assert {m.name: m.read("/usr/local/bin/runsc") for m in fleet.machines} == binaries

    started, failed = run.step_spans()["w1-install"]
    failures = [(n, s, e, err) for n, s, e, ok, err in loop.results if not ok]
    outside = [f for f in failures if f[0] != "w1" or f[2] < started - 1 or f[1] > failed + 1]
    assert not outside, f"containers failed outside the canary's failing step ({started}-{failed}): {outside}"
    for name in ("w1", "w2", "w3", "w4"):
        assert sum(1 for n, *_ in loop.results if n == name) >= 3, f"the loop hardly ran on {name}"
    print(
        f"container loop: {len(loop.results)} starts, {len(failures)} failed (all on w1, during its install step "
        f"of {failed - started}s)"
    )

    # The stack still holds the release the canary runs: the next up tries the new one there first.
    preview = fleet.stack.pulumi("preview", events=True).check()
    assert preview.ops()["w1-install"] == {"update"}
    fleet.done.add("rollback")
