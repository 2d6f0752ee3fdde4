"""The fallbacks a real host takes, and the refusals when there is none.

Downloads go through wget when curl is absent; services restart through
`service` (Debian's /usr/sbin/service) on hosts without systemd. A command is
made absent by deleting it in a private overlay of its directory inside the
sandbox (tests/host/host_state.py): the agent finds no such file, exactly as
on a host without the package.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.host.host_state import HostSnapshot, ok, refusal, remove_command
from tests.host.sandbox import Sandbox
from tests.support.image import TEST_IMAGE
from tests.support.mirror import MIRROR_ROOT, MIRROR_URL, Releases

pytestmark = pytest.mark.host

PREFIX = "/usr/local/bin"
DAEMON_JSON = "/etc/docker/daemon.json"


def preflight(host: Sandbox) -> subprocess.CompletedProcess[str]:
    return host.agent("preflight", "x86_64", "systrap", "auto", "auto")


# --- downloads ---------------------------------------------------------------


def test_downloads_with_wget_when_curl_is_absent(host: Sandbox, releases: Releases, tmp_path: Path):
    remove_command(host, tmp_path / "absent", "curl")
    assert host.sh("command -v curl || true") == ""
    assert host.sh("command -v wget || true"), "this test needs wget installed (sh tests/setup.sh installs it)"
    ok(preflight(host))
    facts = ok(host.agent("install", MIRROR_URL, releases.current, PREFIX, "-"))
    assert facts["changed"] == "true" and facts["layout"] == "archive"
    archive = MIRROR_ROOT / releases.current / "x86_64" / "gvisor.tar.bz2"
    mirror_log = (host.read("/var/log/mirror.log") or b"").decode()
    assert f'GET /{releases.current}/x86_64/gvisor.tar.bz2 HTTP/1.1" 200' in mirror_log
    assert archive.exists()
    installed = host.read(f"{PREFIX}/runsc")
    assert installed and hashlib.sha512(installed).hexdigest() in host.sh("cat /var/lib/gvisor-fleet/install.state")
    assert facts["runsc_version"]


@pytest.mark.parametrize(
    ("release", "message"),
    [("missing", "gVisor release not found at"), ("tampered", "checksum mismatch for")],
)
def test_wget_download_failures_are_caught(
    host: Sandbox, releases: Releases, tmp_path: Path, release: str, message: str
):
    """wget's failures (HTTP 404, bad bytes) stop the install as curl's do."""
    remove_command(host, tmp_path / "absent", "curl")
    err = refusal(host.agent("install", MIRROR_URL, getattr(releases, release), PREFIX, "-"))
    assert message in err
    assert set(host.sh(f"ls -A {PREFIX}").split()) == set(os.listdir(PREFIX)), "the failed install added files"
    assert host.read("/var/lib/gvisor-fleet/install.state") is None


def test_without_curl_or_wget_preflight_refuses(host: Sandbox, releases: Releases, tmp_path: Path):
    remove_command(host, tmp_path / "absent", "curl")
    remove_command(host, tmp_path / "absent", "wget")
    snapshot = HostSnapshot(host)
    assert "neither curl nor wget is installed; install one of them" in refusal(preflight(host))
    snapshot.assert_unchanged()
    # The install step says the same on its own, rather than failing silently.
    assert "neither curl nor wget is installed" in refusal(
        host.agent("install", MIRROR_URL, releases.current, PREFIX, "-")
    )
    assert host.read("/var/lib/gvisor-fleet/install.state") is None


# --- services without systemd ------------------------------------------------


# Stand-in /etc/init.d/docker. Debian's own script cannot run in the sandbox:
# its `stop` waits for dockerd to vanish, but the sandbox's PID 1 (sleep) never
# reaps it, and its `ulimit` raises need CAP_SYS_RESOURCE, which this machine
# withholds from root. So the script records each call, then starts and stops
# the real dockerd through the sandbox's daemon starter (tests/host/sandbox),
# logging where Debian's script does (/var/log/docker.log).
STAND_IN_INIT_SCRIPT = """#!/bin/sh
# Stand-in /etc/init.d/docker (tests/host/test_fallbacks.py).
echo "$1" >> /run/init.d-docker.calls
SANDBOX_LOG=/var/log/docker.log exec /usr/local/sbin/systemctl "$1" docker
"""


def without_systemd(host: Sandbox) -> None:
    """The host as a sysvinit machine: no /run/systemd/system, Docker run by /etc/init.d/docker."""
    host.sh("rm -rf /run/systemd")  # /run is the sandbox's own tmpfs
    host.write("/etc/init.d/docker", STAND_IN_INIT_SCRIPT)
    host.sh("chmod 0755 /etc/init.d/docker && : > /run/init.d-docker.calls")


def init_script_calls(host: Sandbox) -> list[str]:
    return host.sh("cat /run/init.d-docker.calls").split()


def dockerd_pid(host: Sandbox) -> str:
    return host.sh("cat /run/sandbox-docker.pid").strip()


def test_docker_restarts_through_service_without_systemd(host: Sandbox, releases: Releases):
    without_systemd(host)
    assert ok(preflight(host))["init"] == "other"
    ok(host.agent("install", MIRROR_URL, releases.current, PREFIX, "-"))
    first = dockerd_pid(host)

    facts = ok(host.agent("docker-configure", "runsc", "false", PREFIX, "--platform=systrap"))
    assert facts["docker"] == "configured"
    assert init_script_calls(host) == ["restart"], "Docker was not restarted through `service docker restart`"
    second = dockerd_pid(host)
    assert second != first
    assert "runsc" in json.loads(host.sh("docker info --format '{{json .Runtimes}}'"))
    verified = ok(host.agent("verify", "runsc", TEST_IMAGE, "auto", "off", PREFIX, "/etc/containerd/runsc.toml"))
    assert verified["docker_ok"] == "true"

    ok(host.agent("docker-restore", "runsc", PREFIX))
    assert host.read(DAEMON_JSON) is None
    assert init_script_calls(host) == ["restart", "restart"]
    assert dockerd_pid(host) != second
    assert "runsc" not in json.loads(host.sh("docker info --format '{{json .Runtimes}}'"))


def test_without_systemd_a_failed_restart_names_dockers_reason_from_its_log(host: Sandbox, releases: Releases):
    without_systemd(host)
    ok(host.agent("install", MIRROR_URL, releases.current, PREFIX, "-"))
    # An earlier failure in the log is not this start's reason.
    host.sh("echo 'failed to start daemon: a stale reason' >> /var/log/docker.log")
    host.sh("touch /run/not-a-directory")
    owners = '{\n    "pidfile": "/run/not-a-directory/docker.pid"\n}\n'
    host.write(DAEMON_JSON, owners)
    err = refusal(host.agent("docker-configure", "runsc", "false", PREFIX, "--platform=systrap"))
    assert "Docker failed to start with runtime runsc: " in err and "not a directory" in err, err
    assert "stale reason" not in err
    assert host.read(DAEMON_JSON) == owners.encode()


def test_no_systemd_and_no_service_is_refused_before_any_change(host: Sandbox, releases: Releases, tmp_path: Path):
    without_systemd(host)
    ok(host.agent("install", MIRROR_URL, releases.current, PREFIX, "-"))
    remove_command(host, tmp_path / "absent", "service")
    snapshot = HostSnapshot(host)
    err = refusal(preflight(host))
    assert "neither systemd nor a 'service' command" in err and "gvisor-fleet:docker" in err
    snapshot.assert_unchanged()
    # With both engines off there is nothing to restart: no refusal.
    ok(host.agent("preflight", "x86_64", "systrap", "off", "off"))
    # Run on its own (a host that lost `service` after preflight), the step puts daemon.json back.
    before = dockerd_pid(host)
    err = refusal(host.agent("docker-configure", "runsc", "false", PREFIX, "--platform=systrap"))
    assert "cannot restart docker: no systemd and no 'service' command" in err
    assert f"previous configuration restored ({DAEMON_JSON})" in err
    assert host.read(DAEMON_JSON) is None
    assert dockerd_pid(host) == before
