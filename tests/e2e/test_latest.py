"""`gvisor-fleet:release latest` under the real engine, against a loopback mirror.

The mirror is a directory laid out like the bucket, served with its
directory index on the same loopback port twice: here, for the machine
running Pulumi (which resolves `latest`), and inside the test machine's own
network namespace, for its downloads (releaseFetch host). In order: the
preview shows the dated release `latest` is; up installs it; a newer release
published on the mirror shows in the next preview as an update of the
install step, and up installs it; releaseFetch once resolves the same way;
a mirror that cannot be reached fails the preview saying so.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e import pulumi_stack, ssh_machines
from tests.e2e.pulumi_stack import Stack, record
from tests.e2e.ssh_machines import KeyPair, Machine
from tests.support.loopback import Server, free_port
from tests.support.mirror import MIRROR_ROOT, MIRROR_URL, WAIT_IN_SANDBOX, Releases

pytestmark = pytest.mark.e2e

COMMAND = "command:remote:Command"


@dataclass
class LatestFleet:
    machine: Machine
    stack: Stack
    releases: Releases
    listed: Path  # the mirror's directory
    server: Server
    done: set[str] = field(default_factory=set)

    def config(self, **overrides: object) -> dict[str, object]:
        config = pulumi_stack.stack_config([self.machine], self.releases, containerd=False)
        config.update({"release": "latest", "baseUrl": self.server.url, **overrides})
        return config

    def publish(self, release: str) -> None:
        """A release on the mirror: the current build's archive under another (dated) name."""
        shutil.copytree(MIRROR_ROOT / self.releases.current / "x86_64", self.listed / release / "x86_64")

    def require(self, step: str) -> None:
        if step not in self.done:
            pytest.skip(f"needs the '{step}' step, which failed or did not run")


@pytest.fixture(scope="module")
def fleet(
    engine: Path, mirror: Releases, image_tar: Path, client_key: KeyPair, fleet_work: Path
) -> Iterator[LatestFleet]:
    listed = fleet_work / "listed"
    listed.mkdir()
    port = free_port()
    server = Server(listed, port=port)
    (machine,) = ssh_machines.start_machines(1, fleet_work / "machines", client_key, image_tar, prefix="l")
    try:
        # The same mirror at the same address inside the machine's network namespace.
        machine.sandbox.sh(
            f"nohup python3 -m http.server {port} --bind 127.0.0.1 --directory {listed} > /var/log/listed.log 2>&1 &"
        )
        machine.sandbox.sh(WAIT_IN_SANDBOX.replace(MIRROR_URL, server.url))
        stack = Stack(fleet_work / "stack")
        stack.env["GVISOR_FLEET_RELEASE_CACHE"] = str(fleet_work / "release-cache")
        fleet = LatestFleet(machine, stack, mirror, listed, server)
        fleet.publish(mirror.current)
        (listed / "latest").mkdir()  # as the bucket has it: not a dated release, never picked
        stack.init(fleet.config(), client_key.private_text)
        yield fleet
    finally:
        machine.close()
        server.close()


def test_the_preview_shows_the_dated_release_latest_is(fleet: LatestFleet) -> None:
    current = fleet.releases.current
    run = fleet.stack.pulumi("preview", "--diff", events=True).check()
    record("latest: preview", run)
    assert f"gvisor-fleet:release latest is {current} now" in run.output, run.output
    assert f"install {fleet.server.url} {current} " in run.stdout, run.stdout
    assert re.search(rf'gvisorRelease\s*: "{re.escape(current)}"', run.stdout), run.stdout
    assert "/latest/" not in run.stdout


def test_up_installs_it(fleet: LatestFleet) -> None:
    m, current = fleet.machine, fleet.releases.current
    run = fleet.stack.pulumi("up", "--yes", events=True).check()
    record("latest: up", run)
    outputs = fleet.stack.outputs()
    assert outputs["gvisorRelease"] == current
    facts = outputs["machines"][m.name]  # type: ignore[index]
    assert facts["release"] == current and facts["runsc_ok"] == "true", facts
    log = (m.read("/var/log/listed.log") or b"").decode()
    assert f"/{current}/x86_64/gvisor.tar.bz2 " in log, log
    fleet.done.add("up")


def test_a_newly_published_release_shows_as_an_update_and_up_installs_it(fleet: LatestFleet) -> None:
    fleet.require("up")
    m = fleet.machine
    newer = fleet.releases.current.split(".")[0] + ".5"
    fleet.stack.pulumi("preview", "--expect-no-changes").check()  # nothing new published: no change
    fleet.publish(newer)

    preview = fleet.stack.pulumi("preview", "--diff", events=True).check()
    record("latest: preview after a new release", preview)
    assert preview.ops(COMMAND)[f"{m.name}-install"] == {"update"}, preview.ops(COMMAND)
    assert preview.ops(COMMAND)[f"{m.name}-docker"] == {"same"}
    assert f"gvisor-fleet:release latest is {newer} now" in preview.output
    assert newer in preview.stdout and fleet.releases.current in preview.stdout  # the diff: old -> new

    run = fleet.stack.pulumi("up", "--yes", events=True).check()
    record("latest: up after a new release", run)
    facts = fleet.stack.outputs()["machines"][m.name]  # type: ignore[index]
    assert facts["release"] == newer and facts["runsc_ok"] == "true", facts
    fleet.done.add("newer")


def test_release_fetch_once_resolves_latest_the_same_way(fleet: LatestFleet) -> None:
    fleet.require("newer")
    m = fleet.machine
    newer = fleet.releases.current.split(".")[0] + ".5"
    fleet.stack.set_config(fleet.config(releaseFetch="once"))
    preview = fleet.stack.pulumi("preview", "--diff", events=True).check()
    record("latest: preview, releaseFetch once", preview)
    assert f"gvisor-fleet:release latest is {newer} now" in preview.output
    assert preview.ops()[f"{m.name}-release-copy"] == {"create"}
    assert f" {newer} /usr/local/bin" in preview.stdout  # install-file <copy> <sha512> <release> <installDir>
    assert f"{fleet.server.url}/{newer}/x86_64" in preview.output  # fetched here, from the mirror


def test_an_unreachable_mirror_fails_the_preview_saying_so(fleet: LatestFleet) -> None:
    port = free_port()
    fleet.stack.set_config(fleet.config(baseUrl=f"http://127.0.0.1:{port}"))
    run = fleet.stack.pulumi("preview")
    assert run.returncode != 0
    assert "gvisor-fleet:release latest: cannot resolve it to a dated release (connect)" in run.output, run.output
    assert f"cannot connect to 127.0.0.1:{port}" in run.output
