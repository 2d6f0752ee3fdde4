"""gvisor-fleet:releaseFetch once through the real engine and command provider.

The release bucket is a name that does not resolve, so the program takes the
release from a local release directory (gvisor-fleet:releaseDir), checks it,
and copies it to the machine over SSH (SFTP); the machine downloads nothing.
In order: up, a no-op up that opens no SSH session at all, a new release
(copied again, installed, the old copy removed), destroy (the machine as found,
no copy left).
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.gvisor.release_copy import remote_path
from tests.e2e import pulumi_stack, ssh_machines
from tests.e2e.pulumi_stack import Stack, record
from tests.e2e.ssh_machines import KeyPair, Machine, snapshot
from tests.support.mirror import MIRROR_ROOT, Releases

pytestmark = pytest.mark.e2e

COPY = "command:remote:CopyToRemote"
COMMAND = "command:remote:Command"
STEPS = ("install", "docker", "verify")
UNREACHABLE = "http://release-mirror.invalid/gvisor/releases/release"


@dataclass
class CopyFleet:
    machine: Machine
    stack: Stack
    releases: Releases
    release_dir: Path
    as_found: dict[str, bytes | None]
    done: set[str]

    def config(self, release: str) -> dict[str, object]:
        overrides = {"releaseFetch": "once", "baseUrl": UNREACHABLE, "releaseDir": str(self.release_dir)}
        config = pulumi_stack.stack_config([self.machine], self.releases, containerd=False, overrides=overrides)
        config["release"] = release
        return config

    def sessions(self) -> int:
        """SSH sessions on the machine so far: commands and SFTP transfers."""
        log = self.machine.sshd_log
        return sum("Starting session:" in line for line in log.read_text().splitlines()) if log.exists() else 0

    def copies(self) -> set[str]:
        return set(self.machine.sandbox.sh("ls /var/tmp | grep '^gvisor-fleet-' || true").split())

    def digest(self, release: str) -> str:
        return hashlib.sha512((self.release_dir / release / "x86_64" / "gvisor.tar.bz2").read_bytes()).hexdigest()

    def require(self, step: str) -> None:
        if step not in self.done:
            pytest.skip(f"needs the '{step}' step, which failed or did not run")


def next_release(releases: Releases, release_dir: Path) -> str:
    """Another release in the local directory: the same binaries, packed with a note, so its bytes differ."""
    name = releases.current.split(".")[0] + ".7"
    src, dest = release_dir / releases.current / "x86_64", release_dir / name / "x86_64"
    dest.mkdir(parents=True)
    note = dest / "NOTE"
    note.write_text("repacked for the release-copy test\n")
    with tarfile.open(src / "gvisor.tar.bz2") as old, tarfile.open(dest / "gvisor.tar.bz2", "w:bz2") as new:
        old.extractall(dest / "unpacked", filter="data")
        for member in ("runsc", "containerd-shim-runsc-v1"):
            new.add(dest / "unpacked" / member, arcname=member)
        new.add(note, arcname="NOTE")
    shutil.rmtree(dest / "unpacked")
    note.unlink()
    digest = hashlib.sha512((dest / "gvisor.tar.bz2").read_bytes()).hexdigest()
    (dest / "gvisor.tar.bz2.sha512").write_text(f"{digest}  gvisor.tar.bz2\n")
    return name


@pytest.fixture(scope="module")
def fleet(
    engine: Path, mirror: Releases, image_tar: Path, client_key: KeyPair, fleet_work: Path
) -> Iterator[CopyFleet]:
    release_dir = fleet_work / "releases"
    shutil.copytree(MIRROR_ROOT / mirror.current, release_dir / mirror.current)
    (machine,) = ssh_machines.start_machines(1, fleet_work / "machines", client_key, image_tar, prefix="c")
    try:
        stack = Stack(fleet_work / "stack")
        stack.env["GVISOR_FLEET_RELEASE_CACHE"] = str(fleet_work / "release-cache")
        fleet = CopyFleet(machine, stack, mirror, release_dir, snapshot(machine), set())
        stack.init(fleet.config(mirror.current), client_key.private_text)
        yield fleet
    finally:
        machine.close()


def test_up_copies_the_checked_release_and_installs_it_without_any_download(fleet: CopyFleet) -> None:
    m, current = fleet.machine, fleet.releases.current
    run = fleet.stack.pulumi("up", "--yes", events=True).check()
    record("copy up", run)

    assert run.ops(COPY) == {f"{m.name}-{c}": {"create"} for c in ("release-copy", "agent")}
    expected = {f"{m.name}-{s}": {"create"} for s in (*STEPS, "release-cleanup")}
    assert run.ops(COMMAND) == expected
    assert "from file://" in run.output, "the program should say it took the release from releaseDir"
    outputs = fleet.stack.outputs()
    assert outputs["allChecksPassed"] is True
    facts = outputs["machines"][m.name]  # type: ignore[index]
    assert facts["release"] == current and facts["changed"] == "true" and facts["runsc_ok"] == "true"

    path = remote_path("x86_64", fleet.digest(current))
    assert fleet.copies() == {path.rsplit("/", 1)[1]}
    assert m.read(path) == (fleet.release_dir / current / "x86_64" / "gvisor.tar.bz2").read_bytes()
    log = (m.read("/var/log/mirror.log") or b"").decode()
    assert "gvisor.tar.bz2" not in log, "the machine downloaded the release itself"
    fleet.done.add("up")


def test_a_no_op_up_after_the_copy_opens_no_ssh_session(fleet: CopyFleet) -> None:
    fleet.require("up")
    before = fleet.sessions()
    run = fleet.stack.pulumi("up", "--yes", "--expect-no-changes", events=True).check()
    record("copy no-op up", run)
    ops = run.ops()
    assert ops and all(op == {"same"} for op in ops.values()), ops
    assert fleet.sessions() == before, "a no-op up must run nothing on the machine, copy included"


def test_a_new_release_is_copied_and_installed_and_the_old_copy_removed(fleet: CopyFleet) -> None:
    fleet.require("up")
    m = fleet.machine
    old = remote_path("x86_64", fleet.digest(fleet.releases.current))
    release = next_release(fleet.releases, fleet.release_dir)
    fleet.stack.set_config(fleet.config(release))
    run = fleet.stack.pulumi("up", "--yes", events=True).check()
    record("copy new-release up", run)

    ops = run.ops()
    assert ops[f"{m.name}-release-copy"] == {"update"}
    assert ops[f"{m.name}-install"] == {"update"}
    assert "replace" in ops[f"{m.name}-release-cleanup"]
    assert ops[f"{m.name}-docker"] == {"same"}
    new = remote_path("x86_64", fleet.digest(release))
    assert fleet.copies() == {new.rsplit("/", 1)[1]}, f"{old} should be gone, {new} there"
    facts = fleet.stack.outputs()["machines"][m.name]  # type: ignore[index]
    assert facts["release"] == release and facts["changed"] == "true"
    fleet.done.add("new release")


def test_destroy_leaves_the_machine_as_found_without_the_copy(fleet: CopyFleet) -> None:
    fleet.require("up")
    m = fleet.machine
    run = fleet.stack.pulumi("destroy", "--yes", events=True).check()
    record("copy destroy", run)
    assert all(ops == {"delete"} for ops in run.ops().values()), run.ops()
    assert snapshot(m) == fleet.as_found, "the machine differs from before `pulumi up`"
    assert fleet.copies() == set(), "a copied release stayed on the machine"
    assert m.sandbox.sh("test -e /var/lib/gvisor-fleet && echo left || true").strip() == ""
