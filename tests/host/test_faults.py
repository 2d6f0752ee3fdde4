"""The host agent on its failure paths: killed, failed and concurrent steps.

Every kill is a real SIGKILL of the real agent at a named point of its work
(the agent's test hook GVISOR_FLEET_TEST_STOP_AT stops it there first); then
the step is run again, then destroyed, and every file the steps may touch is
compared byte for byte with the machine as it was before, including that no
backup, staging folder, lock or state is left over.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest

from components.fleet.specs import MachineSpec
from components.fleet.static import static_machine
from components.gvisor.agent import AGENT_DIR, agent_file, parse_facts
from components.gvisor.host import host_commands
from components.gvisor.settings import GvisorSettings
from tests.host.agent_calls import CUSTOM_CONTAINERD, DOCKER_CE_CONTAINERD, PREFIX, RUNSC_TOML, toml_b64
from tests.host.cri import cri_runtimes
from tests.host.host_state import ok
from tests.host.host_state import refusal as failed
from tests.host.kill_points import (
    CONTAINERD_POINTS,
    DOCKER_POINTS,
    NO_RERUN,
    STATE,
    TOUCHED,
    assert_same_tree,
    kill_install_rerun_uninstall,
)
from tests.host.sandbox import Sandbox
from tests.support import loopback, mirror
from tests.support.mirror import MIRROR_URL, Releases

pytestmark = pytest.mark.host

FOREIGN_DAEMON_JSON = '{"log-driver": "json-file",\n  "runtimes": {"other": {"path": "/usr/bin/runc"}}}\n'


def install_args(release: str) -> tuple[str, ...]:
    return ("install", MIRROR_URL, release, PREFIX, "-")


def docker_args() -> tuple[str, ...]:
    return ("docker-configure", "runsc", "false", PREFIX, "--network=none", "--platform=systrap")


def containerd_args() -> tuple[str, ...]:
    return ("containerd-configure", "runsc", toml_b64(), PREFIX, RUNSC_TOML)


def config_backups(host: Sandbox) -> str:
    return host.sh(f"find {STATE}/backup/etc -type f 2>/dev/null || true").strip()


def test_install_killed_at_every_point_converges_and_uninstall_restores(host: Sandbox, releases: Releases):
    kill_install_rerun_uninstall(host, install_args(releases.current))


# Where the copies of the script live in the login (root's) home.
HOME_COPIES = f"/root/{AGENT_DIR}"


def test_the_install_steps_own_lines_killed_rerun_and_destroyed_leave_host_and_home_as_found(
    host: Sandbox, releases: Releases
):
    """GvisorHost's install line (preflight checks, then install) and its delete (uninstall, then
    the copy), each run from the copy and killed half-way: nothing left, the copy included."""
    spec = MachineSpec(name="m1", arch="x86_64", address="127.0.0.1")
    settings = GvisorSettings(base_url=MIRROR_URL, release=releases.current, docker="off", containerd="off")
    create, delete = host_commands(static_machine(spec, "key"), settings)["install"]
    assert delete is not None
    host.sh(f"cp /usr/bin/runsc {PREFIX}/runsc")
    assert host.read(f"/root/{agent_file()}") is None
    before = host.tree(*TOUCHED, HOME_COPIES)
    host.kill_agent_at("install:runsc-moved", line=create)
    assert ok(host.run_line(create))["changed"] == "true"
    host.kill_agent_at("uninstall:removed", line=delete)
    assert host.read(f"/root/{agent_file()}") is not None, "the copy went before the uninstall finished"
    ok(host.run_line(delete))
    assert_same_tree(before, host.tree(*TOUCHED, HOME_COPIES), "install step killed, re-run, destroy killed, re-run")


def kill_rerun_destroy(
    host: Sandbox,
    points: tuple[str, ...],
    step: tuple[str, ...],
    destroy: tuple[str, ...],
    serves_runsc: Callable[[Sandbox], bool],
) -> None:
    """For each point: SIGKILL the step there, run it again, destroy; the host must be as before, and
    the running engine must serve runsc after the re-run and no longer after destroy."""
    before = host.tree(*TOUCHED)
    for point in points:
        for then_rerun in (True, False) if point in NO_RERUN else (True,):
            host.kill_agent_at(point, *step)
            if then_rerun:
                facts = ok(host.agent(*step))
                # Every point comes before the engine was seen serving the new files: restart it.
                assert facts.get("docker", facts.get("containerd")) == "configured", point
                assert serves_runsc(host), f"{point}: the running engine lacks runsc after the re-run"
            assert "restored" in ok(host.agent(*destroy)).values(), point
            assert not serves_runsc(host), f"{point}: the running engine still has runsc after destroy"
            assert_same_tree(before, host.tree(*TOUCHED), f"{step[0]} killed at {point}, rerun={then_rerun}")

    ok(host.agent(*step))
    host.kill_agent_at(f"{destroy[0]}:restored", *destroy)
    ok(host.agent(*destroy))
    assert not serves_runsc(host), "the running engine still has runsc after an interrupted destroy"
    assert_same_tree(before, host.tree(*TOUCHED), f"{destroy[0]} killed")


def docker_serves_runsc(host: Sandbox) -> bool:
    return "runsc" in host.sh("docker info --format '{{json .Runtimes}}'")


def containerd_serves_runsc(host: Sandbox) -> bool:
    """Asked of the running containerd over CRI; a CRI plugin that is off (Docker CE's file) serves nothing."""
    try:
        return "runsc" in cri_runtimes(host)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNIMPLEMENTED, e
        return False


def test_docker_step_killed_at_every_point_converges_and_destroy_is_byte_identical(host: Sandbox, releases: Releases):
    host.write("/etc/docker/daemon.json", FOREIGN_DAEMON_JSON)
    host.sh("systemctl restart docker")
    ok(host.agent(*install_args(releases.current)))
    kill_rerun_destroy(host, DOCKER_POINTS, docker_args(), ("docker-restore", "runsc", PREFIX), docker_serves_runsc)


def test_containerd_step_killed_at_every_point_converges_and_destroy_is_byte_identical(
    host: Sandbox, releases: Releases
):
    # Docker CE's file with CRI disabled: the "edited since" path would leave CRI on.
    host.write("/etc/containerd/config.toml", DOCKER_CE_CONTAINERD)
    host.sh("systemctl restart containerd")
    ok(host.agent(*install_args(releases.current)))
    kill_rerun_destroy(
        host, CONTAINERD_POINTS, containerd_args(), ("containerd-restore", RUNSC_TOML), containerd_serves_runsc
    )
    host.sh("ctr version >/dev/null")


@dataclass(frozen=True)
class Engine:
    service: str
    path: str
    fixed: str  # a file the engine starts with
    broken: str  # valid, but the engine cannot start with it (a folder it needs is a file)
    step: tuple[str, ...]
    destroy: tuple[str, ...]
    serving: str


ENGINES = {
    "containerd": Engine(
        "containerd", "/etc/containerd/config.toml", CUSTOM_CONTAINERD,
        CUSTOM_CONTAINERD.replace('root = "/var/lib/containerd"', 'state = "/run/not-a-directory"'),
        containerd_args(), ("containerd-restore", RUNSC_TOML), "ctr version",
    ),
    "docker": Engine(
        "docker", "/etc/docker/daemon.json", FOREIGN_DAEMON_JSON,
        '{\n    "pidfile": "/run/not-a-directory/docker.pid"\n}\n',
        docker_args(), ("docker-restore", "runsc", PREFIX), "docker info",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_a_failed_step_leaves_no_backup_so_destroy_keeps_the_owners_fix(host: Sandbox, releases: Releases, name: str):
    engine = ENGINES[name]
    ok(host.agent(*install_args(releases.current)))
    host.sh("touch /run/not-a-directory")
    host.write(engine.path, engine.broken)
    err = failed(host.agent(*engine.step))
    assert "restored" in err
    # The engine's own reason (its log line since the restart), not only ours.
    assert "not a directory" in err, err
    assert config_backups(host) == "", "a rolled-back step kept a backup"

    host.write(engine.path, engine.fixed)  # the owner fixes it
    host.sh(f"systemctl restart {engine.service}")
    assert ok(host.agent(*engine.step))[name] == "configured"
    ok(host.agent(*engine.destroy))
    assert host.read(engine.path) == engine.fixed.encode()
    host.sh(f"{engine.serving} >/dev/null")
    ok(host.agent("uninstall", PREFIX))
    assert host.sh(f"test -e {STATE} && echo left behind || true").strip() == ""


@dataclass(frozen=True)
class Restore:
    original: str  # the owner's file: state in /run/eng-state, which must be a folder
    configure: tuple[str, ...]
    restore: tuple[str, ...]


RESTORES = {
    "containerd": Restore(
        CUSTOM_CONTAINERD.replace('root = "/var/lib/containerd"', 'state = "/run/eng-state"'),
        containerd_args(), ("containerd-restore", RUNSC_TOML),
    ),
    "docker": Restore(
        '{\n    "pidfile": "/run/eng-state/docker.pid"\n}\n', docker_args(), ("docker-restore", "runsc", PREFIX),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(RESTORES))
def test_a_restore_that_leaves_the_engine_down_fails_loudly(host: Sandbox, releases: Releases, name: str):
    engine, restore = ENGINES[name], RESTORES[name]
    host.sh("mkdir -p /run/eng-state")
    host.write(engine.path, restore.original)
    host.sh(f"systemctl restart {engine.service}")
    ok(host.agent(*install_args(releases.current)))
    ok(host.agent(*restore.configure))
    # Since then the world changed: the engine (still running) could not start
    # again with the original file.
    host.sh("rm -rf /run/eng-state && touch /run/eng-state")
    err = failed(host.agent(*restore.restore))
    assert f"did not start again after {engine.path} was restored: " in err, err
    assert "not a directory" in err, "the engine's own reason is missing"
    assert host.read(engine.path) == restore.original.encode()
    # Run again, it still says so; once the owner fixes the cause, it completes.
    assert "did not start again" in failed(host.agent(*restore.restore))
    host.sh("rm /run/eng-state && mkdir /run/eng-state")
    assert ok(host.agent(*restore.restore))[name] == "restored"
    host.sh(f"{engine.serving} >/dev/null")
    assert host.read(engine.path) == restore.original.encode()


def hide_flock(host: Sandbox) -> None:
    """This sandbox's /usr/bin, minus flock (a host without util-linux's flock)."""
    host.sh(
        "mkdir -p /run/no-flock/upper /run/no-flock/work && mount -t overlay overlay "
        "-o lowerdir=/usr/bin,upperdir=/run/no-flock/upper,workdir=/run/no-flock/work /usr/bin && rm /usr/bin/flock"
    )
    assert host.sh("command -v flock || true").strip() == ""


@pytest.mark.parametrize("with_flock", [True, False], ids=["flock", "lock-folder"])
def test_steps_are_serialised_and_a_killed_holder_does_not_block(host: Sandbox, releases: Releases, with_flock: bool):
    if not with_flock:
        hide_flock(host)
    ok(host.agent(*install_args(releases.current)))
    before = host.tree(*TOUCHED)
    holder, holder_pid = host.stop_agent_at("docker:journaled", *docker_args())
    waiter = host.start_agent(*containerd_args())
    time.sleep(3)
    assert waiter.poll() is None, "a second step ran while the first one held the lock"
    host.kill_stopped(holder, holder_pid)
    out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, err
    assert parse_facts(out)["containerd"] == "configured"

    # Three at once (two `up`s and a hand run): each completes, none collides.
    procs = [host.start_agent(*args) for args in (docker_args(), docker_args(), containerd_args())]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    ok(host.agent("containerd-restore", RUNSC_TOML))
    ok(host.agent("docker-restore", "runsc", PREFIX))
    assert_same_tree(before, host.tree(*TOUCHED), "after concurrent steps")


@pytest.mark.parametrize("mode", ["silent", "mid-body"])
def test_a_stalled_mirror_fails_the_step_in_bounded_time_naming_url_and_limit(
    host: Sandbox, releases: Releases, mode: str
):
    port = 18081
    host.sh(f"nohup python3 {loopback.__file__} {mirror.MIRROR_ROOT} {port} {mode} > /var/log/stalling.log 2>&1 &")
    # Listening once curl no longer says "connection refused" (7).
    probe = f"curl -s -m 1 -o /dev/null http://127.0.0.1:{port}/x"
    host.sh(f"i=0; until {probe}; [ $? != 7 ]; do i=$((i+1)); [ $i -lt 50 ]; sleep 0.2; done")
    before = host.tree(*TOUCHED)
    start = time.monotonic()
    result = host.agent(
        "install", f"http://127.0.0.1:{port}", releases.current, PREFIX, "-", env={"GVISOR_FLEET_STEP_TIMEOUT": "8"}
    )
    took = time.monotonic() - start
    err = failed(result)
    name = "gvisor.tar.bz2.sha512" if mode == "silent" else "gvisor.tar.bz2"
    assert f"download of http://127.0.0.1:{port}/{releases.current}/x86_64/{name} stopped at a limit" in err, err
    assert "of the step's 8s (gvisor-fleet:stepTimeout)" in err and "stalled below 1024 bytes/s" in err
    assert took < 30, f"the step took {took:.0f}s with an 8s budget"
    assert_same_tree(before, host.tree(*TOUCHED), "after a stalled download")


def test_waiting_for_the_lock_is_bounded_too(host: Sandbox, releases: Releases):
    ok(host.agent(*install_args(releases.current)))
    holder, holder_pid = host.stop_agent_at("docker:journaled", *docker_args())
    err = failed(host.agent(*containerd_args(), env={"GVISOR_FLEET_STEP_TIMEOUT": "3"}))
    assert "another gvisor-fleet step still holds /run/lock/gvisor-fleet.lock after 3s" in err
    assert "gvisor-fleet:stepTimeout" in err
    host.kill_stopped(holder, holder_pid)
