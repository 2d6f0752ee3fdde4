"""Killing the agent at its named points (GVISOR_FLEET_TEST_STOP_AT) and proving the host is as
it was: the points, what the agent may touch, and the install round shared by test_faults.py and
test_release_copy.py."""

from __future__ import annotations

from tests.host.agent_calls import PREFIX
from tests.host.host_state import ok
from tests.host.sandbox import Sandbox

STATE = "/var/lib/gvisor-fleet"
# Everything the agent may write on a host, and where its lock lives.
TOUCHED = ("/etc/docker", "/etc/containerd", PREFIX, STATE, "/run/lock")

INSTALL_POINTS = ("install:downloaded", "install:backed-up", "install:journaled", "install:shim-moved",
                  "install:runsc-moved")  # fmt: skip
DOCKER_POINTS = ("docker:journaled", "docker:written", "docker:restarted")
CONTAINERD_POINTS = ("containerd:journaled", "containerd:runsc-toml-written", "containerd:written",
                     "containerd:restarted")  # fmt: skip
# Also destroyed straight after the kill, with no re-run: a file half-way.
NO_RERUN = ("install:shim-moved", "docker:written", "containerd:written")


def assert_same_tree(before: dict[str, str], after: dict[str, str], what: str) -> None:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    assert not (added or removed or changed), f"{what}: added {added}, removed {removed}, changed {changed}"


def kill_install_rerun_uninstall(host: Sandbox, step: tuple[str, ...]) -> None:
    """SIGKILL an install step (download or copy) at each point, re-run, uninstall: the host as before."""
    # The owner's own runsc is in installDir: a re-run must never take ours for it.
    host.sh(f"cp /usr/bin/runsc {PREFIX}/runsc")
    before = host.tree(*TOUCHED)
    for point in INSTALL_POINTS:
        for then_rerun in (True, False) if point in NO_RERUN else (True,):
            host.kill_agent_at(point, *step)
            if then_rerun:
                facts = ok(host.agent(*step))
                assert facts["changed"] == "true" and facts["shim"] == "yes", point
                assert host.sh(f"ls -A {PREFIX} | grep -c '^.gvisor-fleet' || true").strip() == "0", point
            ok(host.agent("uninstall", PREFIX))
            assert_same_tree(before, host.tree(*TOUCHED), f"install killed at {point}, rerun={then_rerun}")

    ok(host.agent(*step))
    host.kill_agent_at("uninstall:removed", "uninstall", PREFIX)
    ok(host.agent("uninstall", PREFIX))
    assert_same_tree(before, host.tree(*TOUCHED), "uninstall killed at uninstall:removed")
