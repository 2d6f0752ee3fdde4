"""An upgrade of a verified host: the new release is checked before it goes in, kept only
once it passes the checks the verify step last passed here, and rolled back when not.

Each test starts from a host set up as the program sets one up (install, Docker's runtime,
verify), then upgrades it to a release made from the mirror's current one
(tests/support/made_releases.py), read from a file:// baseUrl. While the host is upgraded,
what Docker runs with `--runtime=runsc` is the point: it must work before and after.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.host.agent_calls import PREFIX, RUNSC_TOML, install
from tests.host.host_state import ok, refusal
from tests.host.kill_points import TOUCHED, assert_same_tree
from tests.host.sandbox import Sandbox
from tests.support import made_releases
from tests.support.image import TEST_IMAGE
from tests.support.mirror import MIRROR_ROOT, Releases

pytestmark = pytest.mark.host

STATE = "/var/lib/gvisor-fleet"
VERIFY = ("verify", "runsc", TEST_IMAGE, "required", "off", PREFIX, RUNSC_TOML)
UPGRADE_POINTS = ("upgrade:kept", "upgrade:installed")


class Upgrades:
    """The releases a test upgrades to, in a folder of its own."""

    def __init__(self, root: Path, releases: Releases) -> None:
        self.root, self.current = root, MIRROR_ROOT / releases.current
        day = releases.current.split(".")[0]
        self.good = made_releases.repacked(self.current, root, f"{day}.4")
        self.engines_fail = made_releases.refusing(self.current, root, f"{day}.5", ("create",))
        self.no_sandbox = made_releases.refusing(self.current, root, f"{day}.6", ("create", "do"))

    def install(self, host: Sandbox, release: str) -> subprocess.CompletedProcess[str]:
        return host.agent(*self.args(release))

    def args(self, release: str) -> tuple[str, ...]:
        return ("install", self.root.as_uri(), release, PREFIX, "-")


@pytest.fixture(scope="module")
def upgrades(tmp_path_factory: pytest.TempPathFactory, releases: Releases) -> Upgrades:
    """Made once for the module (each is a bzip2 archive of tens of MB); no test changes them."""
    return Upgrades(tmp_path_factory.mktemp("releases"), releases)


def set_up(host: Sandbox, releases: Releases) -> dict[str, str]:
    """The host as the program leaves it: installed, Docker's runtime, verified; the tree before it all."""
    before = host.tree(*TOUCHED)
    ok(install(host, releases.current))
    ok(host.agent("docker-configure", "runsc", "false", PREFIX, "--platform=systrap"))
    ok(host.agent(*VERIFY))
    return before


def sandboxed(host: Sandbox) -> bool:
    """A container under runsc through Docker, as a workload on the host would start one."""
    return host.run(["docker", "run", "--rm", "--runtime=runsc", TEST_IMAGE, "true"]).returncode == 0


def installed(host: Sandbox) -> dict[str, bytes | None]:
    return {p: host.read(f"{PREFIX}/{p}") for p in ("runsc", "containerd-shim-runsc-v1")} | {
        "state": host.read(f"{STATE}/install.state")
    }


def nothing_kept(host: Sandbox) -> None:
    assert host.sh(f"ls -A {PREFIX} | grep -c '^.gvisor-fleet' || true").strip() == "0"
    assert host.read(f"{STATE}/upgrade.state") is None


def tear_down(host: Sandbox, before: dict[str, str]) -> None:
    ok(host.agent("docker-restore", "runsc", PREFIX))
    ok(host.agent("uninstall", PREFIX))
    assert_same_tree(before, host.tree(*TOUCHED), "destroyed after the upgrades")


def test_an_upgrade_failing_verify_is_rolled_back_and_a_good_one_then_goes_in(
    host: Sandbox, releases: Releases, upgrades: Upgrades
):
    before = set_up(host, releases)
    had = installed(host)

    err = refusal(upgrades.install(host, upgrades.engines_fail))
    assert f"gVisor {upgrades.engines_fail} failed verify on this host for: docker" in err
    assert f"rolled back to gVisor {releases.current}, which passes verify again" in err
    assert "docker run --runtime=runsc failed: " in err, "the engine's own error is shown"
    assert installed(host) == had, "the release the host had is back, byte for byte"
    nothing_kept(host)
    assert sandboxed(host)
    ok(host.agent(*VERIFY))

    facts = ok(upgrades.install(host, upgrades.good))
    assert facts["changed"] == "true" and facts["release"] == upgrades.good
    assert installed(host)["state"] != had["state"]
    nothing_kept(host)
    assert sandboxed(host)
    tear_down(host, before)


def test_a_release_whose_runsc_starts_no_sandbox_never_goes_in(host: Sandbox, releases: Releases, upgrades: Upgrades):
    set_up(host, releases)
    tree = host.tree(PREFIX, STATE)

    err = refusal(upgrades.install(host, upgrades.no_sandbox))
    assert f"the runsc of gVisor {upgrades.no_sandbox} does not start a sandbox on this host" in err
    assert f"nothing was changed, gVisor {releases.current} stays installed" in err
    assert_same_tree(tree, host.tree(PREFIX, STATE), "a refused release")
    assert sandboxed(host)


def test_a_first_install_is_not_an_upgrade(host: Sandbox, releases: Releases, upgrades: Upgrades):
    """Nothing verified yet: no release to keep, no verify record to check with (the verify step comes next)."""
    facts = ok(upgrades.install(host, upgrades.engines_fail))
    assert facts["release"] == upgrades.engines_fail
    nothing_kept(host)
    assert host.read(f"{STATE}/verified") is None


@pytest.mark.parametrize("fails", [False, True], ids=["passing", "failing"])
def test_an_upgrade_killed_at_each_point_is_finished_by_the_next_run(
    host: Sandbox, releases: Releases, upgrades: Upgrades, fails: bool
):
    before = set_up(host, releases)
    had = installed(host)
    release = upgrades.engines_fail if fails else upgrades.good
    points = (*UPGRADE_POINTS, "upgrade:put-back") if fails else UPGRADE_POINTS
    for point in points:
        host.kill_agent_at(point, *upgrades.args(release))
        # Killed before it passed: the next run puts back the release the host had, then tries again.
        result = upgrades.install(host, release)
        assert "an upgrade was stopped before it passed verify" in result.stderr, point
        if fails:
            assert "rolled back to gVisor" in refusal(result), point
            assert installed(host) == had, point
        else:
            assert ok(result)["release"] == release, point
            ok(install(host, releases.current))  # back, for the next point
            assert installed(host) == had, point
        nothing_kept(host)
        assert sandboxed(host), point
    tear_down(host, before)
