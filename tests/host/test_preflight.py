"""Preflight refusals, made to happen for real on a sandboxed host.

Each test gives a fresh sandbox (Debian's Docker and containerd running, see
conftest.py) the flaw a real machine can have, runs the agent exactly as the
GvisorHost component does (script on stdin, the component's own command
line), and checks the refusal names the cause and the fix, and that the host
is byte-identical afterwards (tests/host/host_state.py hashes every tree the
agent may write, and the daemons' pid files show none was restarted).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from components.gvisor.agent import agent_command, parse_facts
from tests.host.host_state import HostSnapshot, ok, refusal, remove_command, remove_from_view
from tests.host.sandbox import AGENT, Sandbox
from tests.support.image import TEST_IMAGE

pytestmark = pytest.mark.host

USER = "gvisor-fleet-user"
# Stand-in uname: a namespace cannot change the kernel release the agent
# reads, so this one answers `uname -r` with an older kernel; every other
# question goes to the real uname.
STAND_IN_UNAME = """#!/bin/sh
# Stand-in uname (tests/host/test_preflight.py): reports kernel {release}.
if [ "$1" = -r ]; then echo {release}; else exec /usr/bin/uname "$@"; fi
"""


def preflight(
    host: Sandbox, platform: str = "systrap", docker: str = "auto", containerd: str = "auto"
) -> subprocess.CompletedProcess[str]:
    return host.agent("preflight", "x86_64", platform, docker, containerd)


# --- not root, without sudo --------------------------------------------------


def as_user(host: Sandbox, command_line: str) -> subprocess.CompletedProcess[str]:
    """The component's command line run by a non-root SSH user, the script on stdin."""
    return host.run(["setpriv", f"--reuid={USER}", f"--regid={USER}", "--init-groups", "sh", "-c", command_line],
                    stdin=AGENT.read_text())  # fmt: skip


@pytest.fixture
def user_host(host: Sandbox) -> Sandbox:
    # The sandbox's /etc is a private overlay: the machine gets no new user.
    host.sh(f"useradd --no-create-home --home-dir /nonexistent --shell /bin/sh {USER}")
    # As on an installed Debian host, the machine's own name resolves (sudo looks it up).
    host.sh('echo "127.0.1.1 $(hostname)" >> /etc/hosts')
    # sudo keeps its records in /run/sudo (not the agent's to judge), there since
    # its first use after boot on a real machine.
    host.sh("mkdir -p -m 0711 /run/sudo")
    return host


def test_non_root_user_without_passwordless_sudo_is_refused_by_sudo(user_host: Sandbox):
    """machine.user != root makes the component prefix `sudo -n`; sudo refuses instead of prompting."""
    assert shutil.which("sudo"), "this test needs sudo installed (sh tests/setup.sh installs it)"
    snapshot = HostSnapshot(user_host)
    result = as_user(user_host, agent_command("preflight", "x86_64", "systrap", "auto", "auto", sudo=True))
    assert "sudo: a password is required" in refusal(result)
    assert parse_facts(result.stdout) == {}, "the agent ran although sudo refused"
    snapshot.assert_unchanged()


def test_non_root_user_on_a_host_without_sudo_is_refused(user_host: Sandbox, tmp_path: Path):
    remove_command(user_host, tmp_path / "absent", "sudo")
    snapshot = HostSnapshot(user_host)
    result = as_user(user_host, agent_command("preflight", "x86_64", "systrap", "auto", "auto", sudo=True))
    assert result.returncode == 127 and "sudo: not found" in result.stderr
    assert parse_facts(result.stdout) == {}
    snapshot.assert_unchanged()


def test_agent_itself_refuses_to_run_as_non_root(user_host: Sandbox):
    """The agent's own guard, for a command line without sudo run by a non-root user (by hand, say)."""
    snapshot = HostSnapshot(user_host)
    err = refusal(as_user(user_host, agent_command("preflight", "x86_64", "systrap", "auto", "auto")))
    assert "must run as root" in err and "passwordless sudo" in err
    snapshot.assert_unchanged()


# --- kernel too old ----------------------------------------------------------


def with_kernel(host: Sandbox, release: str) -> None:
    # /usr/local is a private overlay in the sandbox, and /usr/local/bin comes
    # before /usr/bin on the PATH, as on a stock Debian host.
    host.write("/usr/local/bin/uname", STAND_IN_UNAME.format(release=release))
    host.sh("chmod 0755 /usr/local/bin/uname")


@pytest.mark.parametrize("release", ["4.13.16-100.fc25.x86_64", "4.9.0-19-amd64", "3.10.0-1160.el7.x86_64"])
def test_kernel_older_than_4_14_is_refused(host: Sandbox, release: str):
    with_kernel(host, release)
    snapshot = HostSnapshot(host)
    err = refusal(preflight(host))
    assert f"kernel {release} is too old" in err and "needs 4.14 or newer" in err
    snapshot.assert_unchanged()


def test_kernel_4_14_is_accepted(host: Sandbox):
    """The boundary, and proof the stand-in is what preflight reads."""
    with_kernel(host, "4.14.0-1-amd64")
    assert ok(preflight(host))["kernel"] == "4.14.0-1-amd64"


# --- platform kvm without a usable /dev/kvm ----------------------------------


def test_platform_kvm_without_dev_kvm_is_refused(host: Sandbox, tmp_path: Path):
    """A VM without nested virtualisation has no /dev/kvm node at all."""
    remove_from_view(host, tmp_path / "absent", "/dev/kvm")
    snapshot = HostSnapshot(host)
    result = preflight(host, platform="kvm")
    err = refusal(result)
    assert "platform 'kvm' needs a read-write /dev/kvm" in err and "set gvisor-fleet:platform to systrap" in err
    assert parse_facts(result.stdout)["kvm"] == "no"
    snapshot.assert_unchanged()


def test_platform_kvm_with_a_dev_kvm_that_cannot_be_opened_is_refused(host: Sandbox):
    """The node is there with read-write bits, but open() fails, as in a container
    whose device cgroup withholds it. A private nodev bind mount of the node does
    the withholding here (on cgroup v1 and v2 alike); the machine's /dev is untouched."""
    assert parse_facts(preflight(host, platform="kvm").stdout)["kvm"] == "yes", "this machine needs a usable /dev/kvm"
    host.sh("mount --bind /dev/kvm /dev/kvm && mount -o remount,bind,nodev /dev/kvm")
    assert host.sh("[ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] && echo listed") == "listed\n"
    snapshot = HostSnapshot(host)
    result = preflight(host, platform="kvm")
    assert "platform 'kvm' needs a read-write /dev/kvm" in refusal(result)
    assert parse_facts(result.stdout)["kvm"] == "no"
    snapshot.assert_unchanged()


def test_platform_systrap_needs_no_dev_kvm(host: Sandbox, tmp_path: Path):
    remove_from_view(host, tmp_path / "absent", "/dev/kvm")
    assert ok(preflight(host, platform="systrap"))["kvm"] == "no"


# --- Docker or containerd required but missing -------------------------------


@pytest.mark.parametrize(
    ("engine", "binary", "message"),
    [
        ("docker", "dockerd", "Docker is required (gvisor-fleet:docker=required) but dockerd is not"),
        ("containerd", "containerd", "containerd is required (gvisor-fleet:containerd=required) but it is not"),
    ],
)
def test_required_engine_that_is_missing_is_refused(
    host: Sandbox, tmp_path: Path, engine: str, binary: str, message: str
):
    remove_command(host, tmp_path / "absent", binary)
    snapshot = HostSnapshot(host)
    result = preflight(host, **{engine: "required"})
    assert message in refusal(result)
    assert parse_facts(result.stdout)[f"{engine}_version"] == "absent"
    snapshot.assert_unchanged()
    # The same host passes when the engine is only wanted if present.
    ok(preflight(host, **{engine: "auto"}))


# --- Docker before 23.0, AppArmor on, apparmor_parser missing ----------------


def with_apparmor_on(host: Sandbox) -> None:
    """The kernel's AppArmor switches as a Debian kernel shows them. This machine's
    kernel has no AppArmor, so tmpfs mounts in the sandbox's own mount namespace
    show the two paths Docker and the agent read; the machine's /sys is untouched."""
    host.sh("mount -t tmpfs apparmor-on /sys/module && mkdir -p /sys/module/apparmor/parameters")
    host.sh("echo Y > /sys/module/apparmor/parameters/enabled")
    host.sh("mount -t tmpfs securityfs-view /sys/kernel/security && mkdir /sys/kernel/security/apparmor")
    host.sh(": > /sys/kernel/security/apparmor/profiles")  # no profile loaded yet


def test_old_docker_with_apparmor_on_and_no_apparmor_parser_is_refused(host: Sandbox):
    with_apparmor_on(host)
    assert host.sh("command -v apparmor_parser || true") == "", "this test needs a host without apparmor_parser"
    # The premise, with the real Docker 20.10: it now fails every container, runc's too.
    host.sh("systemctl restart docker")
    failed = host.run(["docker", "run", "--rm", "--runtime", "runc", TEST_IMAGE, "true"])
    assert failed.returncode != 0 and "apparmor_parser" in failed.stderr, failed.stderr
    snapshot = HostSnapshot(host)
    result = preflight(host)
    err = refusal(result)
    assert "cannot start any container: the kernel has AppArmor on and apparmor_parser is missing" in err
    assert "install the 'apparmor' package" in err and "gvisor-fleet:docker to off" in err
    snapshot.assert_unchanged()
    # Docker off: nothing to refuse. With the parser installed (a stand-in: the
    # real one needs a kernel with AppArmor to load profiles), preflight passes.
    ok(preflight(host, docker="off"))
    host.write("/usr/local/sbin/apparmor_parser", "#!/bin/sh\nexit 0\n")
    host.sh("chmod 0755 /usr/local/sbin/apparmor_parser")
    ok(preflight(host))
