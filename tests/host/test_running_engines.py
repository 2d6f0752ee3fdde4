"""The agent judged by what the running engines do, not only by the files it writes.

Each case is a real config seen in the field that broke a promise: a socket
that is not the default one on containerd 2, a kill between writing a config
and restarting its engine, rollback messages that named the wrong failure, an
engine that could not start before install, an indented `version` line.
The running containerd is asked over the CRI API which runtimes it serves
(tests/host/cri.py); Docker is asked with `docker info`.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.host.agent_calls import CUSTOM_CONTAINERD, PREFIX, RUNSC_TOML, configure_containerd, install, toml_b64
from tests.host.cri import cri_runtimes
from tests.host.host_state import ok
from tests.host.host_state import refusal as failed
from tests.host.sandbox import Sandbox
from tests.support.image import TEST_IMAGE
from tests.support.mirror import Releases

pytestmark = pytest.mark.host

CONFIG = "/etc/containerd/config.toml"
DAEMON_JSON = "/etc/docker/daemon.json"
ALT = "/run/containerd-alt/containerd.sock"


def containerd_args() -> tuple[str, ...]:
    return ("containerd-configure", "runsc", toml_b64(), PREFIX, RUNSC_TOML)


def docker_args() -> tuple[str, ...]:
    return ("docker-configure", "runsc", "false", PREFIX, "--platform=systrap")


def docker_runtimes(host: Sandbox) -> str:
    return host.sh("docker info --format '{{json .Runtimes}}'")


def verify(host: Sandbox) -> dict[str, str]:
    return ok(host.agent("verify", "runsc", TEST_IMAGE, "off", "on", PREFIX, RUNSC_TOML))


def on_alt_socket(host: Sandbox, version: int) -> str:
    """The four-line file of the field report: only a non-default gRPC socket."""
    config = f'version = {version}\n[grpc]\n  address = "{ALT}"\n'
    host.write(CONFIG, config)
    host.sh("systemctl restart containerd")
    host.sh(f"ctr --address {ALT} version >/dev/null")
    return config


def configure_and_restore_on_alt_socket(host: Sandbox, config: str, run_a_sandbox: bool) -> None:
    start = time.monotonic()
    assert ok(configure_containerd(host))["containerd"] == "configured"
    assert time.monotonic() - start < 25, "a working config was waited on as if containerd were down"
    assert "runsc" in cri_runtimes(host, ALT)
    assert ok(configure_containerd(host))["containerd"] == "unchanged"
    if run_a_sandbox:  # (this runsc's shim speaks containerd 2's shim protocol only)
        assert verify(host)["containerd_ok"] == "true"
    assert ok(host.agent("containerd-restore", RUNSC_TOML))["containerd"] == "restored"
    assert host.read(CONFIG) == config.encode()
    assert "runsc" not in cri_runtimes(host, ALT)


@pytest.mark.parametrize("version", [3, 2])
def test_containerd_2_on_a_non_default_socket(host_containerd2: Sandbox, releases: Releases, version: int):
    host = host_containerd2
    config = on_alt_socket(host, version)
    ok(install(host, releases.current))
    configure_and_restore_on_alt_socket(host, config, run_a_sandbox=True)


def test_containerd_1_6_on_a_non_default_socket_with_the_four_line_file(host: Sandbox, releases: Releases):
    config = on_alt_socket(host, 2)
    ok(install(host, releases.current))
    configure_and_restore_on_alt_socket(host, config, run_a_sandbox=False)


def test_killed_between_write_and_restart_the_rerun_restarts_containerd(host: Sandbox, releases: Releases):
    ok(install(host, releases.current))
    host.kill_agent_at("containerd:written", *containerd_args())
    assert "runsc" not in cri_runtimes(host), "containerd restarted before the kill point"
    assert ok(configure_containerd(host))["containerd"] == "configured", "the re-run did not restart containerd"
    assert "runsc" in cri_runtimes(host)
    assert ok(configure_containerd(host))["containerd"] == "unchanged"


def test_killed_between_write_and_restart_the_rerun_restarts_docker(host: Sandbox, releases: Releases):
    ok(install(host, releases.current))
    host.kill_agent_at("docker:written", *docker_args())
    assert "runsc" not in docker_runtimes(host)
    assert ok(host.agent(*docker_args()))["docker"] == "configured"
    assert "runsc" in docker_runtimes(host)


# containerd 1.6 starts with this file, but its CRI plugin refuses the
# snapshotter it names, and the missing CNI config is logged as an error too.
CRI_FAILS = CUSTOM_CONTAINERD.replace(
    '    sandbox_image = "registry.example.test/pause:3.10"\n',
    '    sandbox_image = "registry.example.test/pause:3.10"\n'
    '    [plugins."io.containerd.grpc.v1.cri".containerd]\n      snapshotter = "no-such-snapshotter"\n',
)
JSON_LOGS = '\n[debug]\n  format = "json"\n'


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_cri_plugin_that_fails_is_named_with_its_own_reason(host: Sandbox, releases: Releases, log_format: str):
    config = CRI_FAILS + (JSON_LOGS if log_format == "json" else "")
    ok(install(host, releases.current))
    host.write(CONFIG, config)
    err = failed(configure_containerd(host))
    assert "containerd restarted with runtime runsc but its CRI plugin did not load" in err, err
    reason = err.split("did not load", 1)[1]
    assert "snapshotter" in reason, "the CRI plugin's own reason is missing"
    assert "cni" not in reason.lower() and "successfully booted" not in reason, reason
    assert "previous configuration restored" in err
    assert host.read(CONFIG) == config.encode()


def test_a_start_failure_with_json_logs_shows_the_fatal_line(host: Sandbox, releases: Releases):
    ok(install(host, releases.current))
    host.sh("touch /run/not-a-directory")
    config = CUSTOM_CONTAINERD.replace('root = "/var/lib/containerd"', 'state = "/run/not-a-directory"') + JSON_LOGS
    host.write(CONFIG, config)
    err = failed(configure_containerd(host))
    assert "containerd failed to start with runtime runsc: " in err, err
    assert "not a directory" in err and "successfully booted" not in err, err
    assert host.read(CONFIG) == config.encode()


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes]\n  runc = 5\n',
         '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes] runc (line 3)'),
        ('version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n  sandbox_image = 5\n',
         '[plugins."io.containerd.grpc.v1.cri"] sandbox_image (line 3)'),
    ],
    ids=["table-expected", "string-expected"],
)  # fmt: skip
@pytest.mark.parametrize("engine", ["1.6", "2"])
def test_a_value_of_the_wrong_type_is_a_sentence_naming_file_and_key(
    host: Sandbox, releases: Releases, containerd2_bin: Path, config: str, key: str, engine: str
):
    if engine == "2":
        host.sh(f"cp {containerd2_bin}/* /usr/local/sbin/")
    ok(install(host, releases.current))
    host.write(CONFIG, config)
    err = failed(configure_containerd(host))
    assert f"containerd rejects {CONFIG} as it is: a value has the wrong type (a number where containerd" in err, err
    assert key in err and "panic" not in err and "goroutine" not in err, err
    assert host.read(CONFIG) == config.encode()


def test_destroy_completes_when_docker_could_not_start_before_install(host: Sandbox, releases: Releases):
    # A 0-byte daemon.json: this dockerd refuses it, so Docker is down when gVisor arrives.
    host.write(DAEMON_JSON, "")
    assert host.run(["systemctl", "restart", "docker"]).returncode != 0
    ok(install(host, releases.current))
    assert ok(host.agent(*docker_args()))["docker"] == "configured"
    assert "runsc" in docker_runtimes(host)
    assert ok(host.agent("docker-restore", "runsc", PREFIX))["docker"] == "restored"
    assert host.read(DAEMON_JSON) == b""
    assert host.run(["systemctl", "is-active", "docker"]).returncode != 0, "Docker is left as it was found: down"
    assert host.sh("find /var/lib/gvisor-fleet/backup/etc -type f 2>/dev/null || true").strip() == ""


def test_an_indented_version_line_is_version_2(host: Sandbox, releases: Releases):
    config = '  version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n  sandbox_image = "example.test/pause:3.10"\n'
    host.write(CONFIG, config)
    host.sh("systemctl restart containerd")
    ok(install(host, releases.current))
    assert ok(configure_containerd(host))["containerd_config_version"] == "2"
    assert "runsc" in cri_runtimes(host)
    ok(host.agent("containerd-restore", RUNSC_TOML))
    assert host.read(CONFIG) == config.encode()


def test_a_daemon_json_broken_while_docker_ran_says_docker_is_stopped(host: Sandbox, releases: Releases):
    """dockerd 20.10 has no --validate: a file made invalid after Docker started is
    found only by the restart, and the rollback's restart fails with it too."""
    ok(install(host, releases.current))
    broken = '{\n    "log-level": "not-a-level"\n}\n'
    host.write(DAEMON_JSON, broken)
    err = failed(host.agent(*docker_args()))
    assert "Docker failed to start with runtime runsc" in err, err
    assert "previous configuration restored (/etc/docker/daemon.json), but Docker does not start with it either" in err
    assert "not-a-level" in err and "stopped now" in err, err
    assert host.read(DAEMON_JSON) == broken.encode()
    assert host.run(["systemctl", "is-active", "docker"]).returncode != 0
