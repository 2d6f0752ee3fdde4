"""The host agent against real runsc, dockerd and containerd (no mocks).

Each test gets a fresh sandboxed machine (see sandbox/start.sh) with Debian's
containerd 1.6 and Docker running, and a local mirror of gVisor releases built
from a current runsc (gVisor's go branch) and Debian's 2022 runsc.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from components.fleet.specs import MachineSpec
from components.fleet.static import static_machine
from components.gvisor.agent import AGENT_DIR, parse_facts
from components.gvisor.host import host_commands
from components.gvisor.runsc_config import effective_flags, render_runsc_toml
from components.gvisor.settings import GvisorSettings
from tests.host.agent_calls import (
    CUSTOM_CONTAINERD,
    DOCKER_CE_CONTAINERD,
    PREFIX,
    RUNSC_TOML,
    configure_containerd,
    install,
)
from tests.host.host_state import ok
from tests.host.host_state import refusal as failed
from tests.host.sandbox import AGENT, Sandbox
from tests.support.image import TEST_IMAGE
from tests.support.mirror import MIRROR_URL, Releases

pytestmark = pytest.mark.host


def downloads(host: Sandbox, name: str) -> int:
    log = host.read("/var/log/mirror.log") or b""
    return sum(1 for line in log.decode().splitlines() if f"/{name} HTTP" in line and '" 200 ' in line)


def added_to_prefix(host: Sandbox) -> set[str]:
    """Names in PREFIX that the sandbox added (the machine's own stay visible below)."""
    return set(host.sh(f"ls -A {PREFIX}").split()) - set(os.listdir(PREFIX))


def snapshot(host: Sandbox, *paths: str) -> dict[str, bytes | None]:
    return {p: host.read(p) for p in paths}


def test_preflight_reports_machine_facts(host: Sandbox):
    facts = ok(host.agent("preflight", "x86_64", "systrap", "auto", "auto"))
    assert facts["arch"] == "x86_64"
    assert facts["kernel"] == host.sh("uname -r").strip()
    assert facts["page_size"] == "4096"
    assert facts["cgroup_version"] in {"1", "2"}
    assert facts["containerd_version"].startswith("1.6")
    assert facts["docker_version"].startswith("20.10")


def test_preflight_rejects_wrong_arch_before_changing_anything(host: Sandbox):
    err = failed(host.agent("preflight", "aarch64", "systrap", "auto", "auto"))
    assert "reports architecture 'x86_64'" in err and "'aarch64'" in err


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_the_install_step_checks_first_and_its_delete_removes_the_copy_last(
    host: Sandbox, releases: Releases, arch: str
):
    spec = MachineSpec(name="m1", arch=arch, address="127.0.0.1")
    settings = GvisorSettings(base_url=MIRROR_URL, release=releases.current, docker="off", containerd="off")
    create, delete = host_commands(static_machine(spec, "key"), settings)["install"]
    assert delete is not None
    result = host.run_line(create)
    if arch == "aarch64":  # the preflight check refuses: the install never starts
        assert "reports architecture 'x86_64' but the stack asked for 'aarch64'" in failed(result)
        assert downloads(host, "gvisor.tar.bz2") == 0 and added_to_prefix(host) == set()
        assert host.read("/var/lib/gvisor-fleet/install.state") is None
    else:
        facts = ok(result)
        assert facts["arch"] == "x86_64" and facts["changed"] == "true", "the facts of both, in one run"
        assert added_to_prefix(host) == {"containerd-shim-runsc-v1", "runsc"}
    # The delete: gVisor out again, then the copy and its folder.
    ok(host.run_line(delete))
    assert added_to_prefix(host) == set()
    assert host.sh("ls -A /root").split().count(AGENT_DIR) == 0, "the copy's folder is left"


def test_fresh_install_then_rerun_downloads_nothing(host: Sandbox, releases: Releases):
    first = ok(install(host, releases.current))
    assert first["changed"] == "true" and first["layout"] == "archive"
    assert first["shim"] == "yes"
    assert host.sh(f"{PREFIX}/runsc --version | head -n 1").strip() == f"runsc version {first['runsc_version']}"
    assert downloads(host, "gvisor.tar.bz2") == 1

    second = ok(install(host, releases.current))
    assert second["changed"] == "false"
    assert downloads(host, "gvisor.tar.bz2") == 1, "an unchanged re-run must not download again"
    assert added_to_prefix(host) == {"containerd-shim-runsc-v1", "runsc"}, "staging directory left behind"


def test_legacy_loose_layout_installs(host: Sandbox, releases: Releases):
    facts = ok(install(host, releases.current_loose))
    assert facts["layout"] == "loose" and facts["shim"] == "yes"
    assert downloads(host, "runsc") == 1 and downloads(host, "containerd-shim-runsc-v1") == 1


def test_tampered_checksum_aborts_and_leaves_host_unchanged(host: Sandbox, releases: Releases):
    err = failed(install(host, releases.tampered))
    assert "checksum mismatch" in err and f"{MIRROR_URL}/{releases.tampered}/x86_64/gvisor.tar.bz2" in err
    assert added_to_prefix(host) == set()
    assert host.read("/var/lib/gvisor-fleet/install.state") is None


def test_tampered_upgrade_keeps_the_installed_release(host: Sandbox, releases: Releases):
    ok(install(host, releases.current))
    before = host.read(f"{PREFIX}/runsc")
    failed(install(host, releases.tampered))
    assert host.read(f"{PREFIX}/runsc") == before


def test_missing_release_names_the_url(host: Sandbox, releases: Releases):
    err = failed(install(host, releases.missing))
    assert f"{MIRROR_URL}/{releases.missing}/x86_64/" in err
    assert "gvisor-fleet:release" in err
    assert added_to_prefix(host) == set()


def test_pinned_checksum_mismatch_is_refused(host: Sandbox, releases: Releases):
    err = failed(host.agent("install", MIRROR_URL, releases.current, PREFIX, "0" * 128))
    assert "gvisor-fleet:sha512" in err
    assert added_to_prefix(host) == set()


def test_uninstall_restores_a_preexisting_runsc(host: Sandbox, releases: Releases):
    host.sh(f"cp /usr/bin/runsc {PREFIX}/runsc")
    original = host.read(f"{PREFIX}/runsc")
    ok(install(host, releases.current))
    assert host.read(f"{PREFIX}/runsc") != original
    ok(host.agent("uninstall", PREFIX))
    assert host.read(f"{PREFIX}/runsc") == original
    assert host.read(f"{PREFIX}/containerd-shim-runsc-v1") is None


def test_docker_merge_keeps_foreign_keys_and_destroy_restores_bytes(host: Sandbox, releases: Releases):
    original = (
        '{\n    "log-driver": "json-file",\n    "log-opts": {"max-size": "10m"},\n'
        '    "runtimes": {"other": {"path": "/usr/bin/runc"}}\n}\n'
    )
    host.write("/etc/docker/daemon.json", original)
    host.sh("systemctl restart docker")
    ok(install(host, releases.current))

    facts = ok(host.agent("docker-configure", "runsc", "false", PREFIX, "--platform=systrap", "--network=none"))
    assert facts["docker"] == "configured"
    merged = json.loads(host.read("/etc/docker/daemon.json") or b"")
    assert merged["log-driver"] == "json-file" and merged["log-opts"] == {"max-size": "10m"}
    assert merged["runtimes"]["other"] == {"path": "/usr/bin/runc"}
    assert merged["runtimes"]["runsc"] == {
        "path": f"{PREFIX}/runsc",
        "runtimeArgs": ["--platform=systrap", "--network=none"],
    }
    assert "default-runtime" not in merged
    assert "runsc" in host.sh("docker info --format '{{json .Runtimes}}'")

    again = ok(host.agent("docker-configure", "runsc", "false", PREFIX, "--platform=systrap", "--network=none"))
    assert again["docker"] == "unchanged"

    ok(host.agent("docker-restore", "runsc", PREFIX))
    assert host.read("/etc/docker/daemon.json") == original.encode()
    assert "runsc" not in host.sh("docker info --format '{{json .Runtimes}}'")


def test_docker_default_runtime_only_when_asked(host: Sandbox, releases: Releases):
    ok(install(host, releases.current))
    ok(host.agent("docker-configure", "runsc", "true", PREFIX, "--platform=systrap"))
    assert json.loads(host.read("/etc/docker/daemon.json") or b"")["default-runtime"] == "runsc"
    assert host.sh("docker info --format '{{.DefaultRuntime}}'").strip() == "runsc"
    ok(host.agent("docker-restore", "runsc", PREFIX))
    assert host.read("/etc/docker/daemon.json") is None, "there was no daemon.json before install"


def test_docker_restore_keeps_later_user_edits(host: Sandbox, releases: Releases):
    ok(install(host, releases.current))
    ok(host.agent("docker-configure", "runsc", "true", PREFIX, "--platform=systrap"))
    edited = json.loads(host.read("/etc/docker/daemon.json") or b"")
    edited["debug"] = True
    host.write("/etc/docker/daemon.json", json.dumps(edited, indent=2) + "\n")
    ok(host.agent("docker-restore", "runsc", PREFIX))
    after = json.loads(host.read("/etc/docker/daemon.json") or b"")
    assert after.get("debug") is True
    assert "runsc" not in after.get("runtimes", {}) and "default-runtime" not in after


def test_containerd_keeps_custom_settings_and_destroy_restores_bytes(host: Sandbox, releases: Releases):
    host.write("/etc/containerd/config.toml", CUSTOM_CONTAINERD)
    host.sh("systemctl restart containerd")
    ok(install(host, releases.current))

    facts = ok(configure_containerd(host, debug="true"))
    assert facts["containerd"] == "configured" and facts["containerd_config_version"] == "2"
    dump = host.sh("containerd config dump")
    assert 'sandbox_image = "registry.example.test/pause:3.10"' in dump
    assert "SystemdCgroup = true" in dump
    assert '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]' in dump
    assert 'runtime_type = "io.containerd.runsc.v1"' in dump
    assert f'ConfigPath = "{RUNSC_TOML}"' in dump
    assert (host.read(RUNSC_TOML) or b"").decode() == render_runsc_toml(
        effective_flags("systrap", "sandbox", {"debug": "true"})
    )
    assert ok(configure_containerd(host, debug="true"))["containerd"] == "unchanged"

    ok(host.agent("containerd-restore", RUNSC_TOML))
    assert host.read("/etc/containerd/config.toml") == CUSTOM_CONTAINERD.encode()
    assert host.read(RUNSC_TOML) is None
    host.sh("ctr version >/dev/null")


def test_containerd_import_that_would_drop_the_runtime_is_rolled_back(host: Sandbox, releases: Releases):
    # containerd 1.x: an imported file with any CRI table replaces the main
    # file's whole CRI section, so the runtime we add would silently vanish.
    main = CUSTOM_CONTAINERD.replace('root = "/var/lib/containerd"', 'imports = ["/etc/containerd/conf.d/*.toml"]')
    host.write("/etc/containerd/config.toml", main)
    host.write(
        "/etc/containerd/conf.d/10-registry.toml",
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n',
    )
    host.sh("systemctl restart containerd")
    ok(install(host, releases.current))
    before = snapshot(host, "/etc/containerd/config.toml", RUNSC_TOML)

    err = failed(configure_containerd(host))
    assert "imports" in err and "Nothing was changed" in err
    assert snapshot(host, "/etc/containerd/config.toml", RUNSC_TOML) == before
    host.sh("ctr version >/dev/null")  # still serving


def test_containerd_broken_user_config_is_not_swapped_in(host: Sandbox, releases: Releases):
    # The runtime table already exists by hand: merging would define it twice.
    manual = CUSTOM_CONTAINERD + (
        '    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]\n'
        '      runtime_type = "io.containerd.runsc.v1"\n'
    )
    host.write("/etc/containerd/config.toml", manual)
    host.sh("systemctl restart containerd")
    ok(install(host, releases.current))
    err = failed(configure_containerd(host))
    assert "gvisor-fleet:runtimeName" in err
    assert host.read("/etc/containerd/config.toml") == manual.encode()
    host.sh("ctr version >/dev/null")


def test_config_containerd_cannot_start_with_is_rolled_back(host: Sandbox, releases: Releases):
    # The file on disk was edited after containerd last started: it parses
    # (so validation passes) but containerd cannot start with it, because its
    # state directory is a regular file. The agent must notice the failed
    # restart and put both files back exactly as they were before the step.
    ok(install(host, releases.current))
    host.sh("touch /run/not-a-directory")
    edited = CUSTOM_CONTAINERD.replace('root = "/var/lib/containerd"', 'state = "/run/not-a-directory"')
    host.write("/etc/containerd/config.toml", edited)

    err = failed(configure_containerd(host))
    assert "containerd failed to start with runtime runsc: " in err
    assert "not a directory; previous configuration restored" in err, "containerd's own reason is missing"
    assert host.read("/etc/containerd/config.toml") == edited.encode()
    assert host.read(RUNSC_TOML) is None


@pytest.mark.parametrize(
    "config",
    [DOCKER_CE_CONTAINERD, 'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n'],
    ids=["docker-ce-version-1", "version-2"],
)
def test_containerd_with_cri_disabled_gets_it_enabled(host: Sandbox, releases: Releases, config: str):
    host.write("/etc/containerd/config.toml", config)
    host.sh("systemctl restart containerd")
    assert "cri" not in host.sh("ctr plugins ls | awk '$4 == \"ok\" {print $2}'").split()
    ok(install(host, releases.current))
    ok(configure_containerd(host))
    assert "cri" in host.sh("ctr plugins ls | awk '$4 == \"ok\" {print $2}'").split()
    assert f'ConfigPath = "{RUNSC_TOML}"' in host.sh("containerd config dump")
    ok(host.agent("containerd-restore", RUNSC_TOML))
    assert host.read("/etc/containerd/config.toml") == config.encode()


def test_other_version_1_configs_are_left_for_their_owner(host: Sandbox, releases: Releases):
    config = 'root = "/var/lib/containerd"\n[plugins.cri]\n  sandbox_image = "pause:3.10"\n'
    host.write("/etc/containerd/config.toml", config)
    ok(install(host, releases.current))
    # containerd 1.6 has no `config migrate`: the advice names what it has.
    err = failed(configure_containerd(host))
    assert "version 1 config" in err and "containerd config default" in err
    assert "has no 'config migrate'" in err
    assert host.read("/etc/containerd/config.toml") == config.encode()


def test_flags_are_checked_against_the_installed_runsc(host: Sandbox, releases: Releases):
    before = snapshot(host, "/etc/containerd/config.toml", RUNSC_TOML)
    ok(install(host, releases.old))  # Debian's 2022 runsc: no directfs, no shim
    err = failed(configure_containerd(host))
    assert "containerd-shim-runsc-v1 is not installed" in err
    host.sh(f"cp {PREFIX}/runsc /root/old-runsc")

    ok(install(host, releases.current))
    host.sh(f"cp /root/old-runsc {PREFIX}/runsc")  # old binary, shim present
    err = failed(configure_containerd(host, directfs="false"))
    assert "no flag 'directfs'" in err
    assert snapshot(host, "/etc/containerd/config.toml", RUNSC_TOML) == before

    ok(install(host, releases.current))  # the current release has it
    assert ok(configure_containerd(host, directfs="false"))["containerd"] == "configured"
    err = failed(configure_containerd(host, **{"no-such-flag": "1"}))
    assert "no flag 'no-such-flag'" in err


@pytest.mark.parametrize(
    ("major", "file_version", "plan"),
    [
        ("1", "none", "2 io.containerd.grpc.v1.cri"),
        ("1", "2", "2 io.containerd.grpc.v1.cri"),
        ("2", "none", "3 io.containerd.cri.v1.runtime"),
        ("2", "2", "2 io.containerd.grpc.v1.cri"),
        ("2", "3", "3 io.containerd.cri.v1.runtime"),
        ("2", "4", "4 io.containerd.cri.v1.runtime"),
    ],
)
def test_containerd_plan_matches_version(major: str, file_version: str, plan: str):
    assert plan_of(major, file_version).stdout.strip() == plan


@pytest.mark.parametrize(("major", "file_version", "message"), [("1", "3", "cannot read"), ("1", "1", "migrate")])
def test_containerd_plan_refuses_mismatches(major: str, file_version: str, message: str):
    assert message in failed(plan_of(major, file_version))


def plan_of(major: str, file_version: str) -> subprocess.CompletedProcess[str]:
    """containerd-plan is pure: it reads and changes nothing, so it runs unsandboxed."""
    return subprocess.run(
        ["sh", "-s", "--", "containerd-plan", major, file_version],
        input=AGENT.read_text(), capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_full_converge_verifies_gvisor_and_destroy_restores(host: Sandbox, releases: Releases):
    before = snapshot(host, "/etc/docker/daemon.json", "/etc/containerd/config.toml", RUNSC_TOML)
    ok(install(host, releases.current))
    ok(host.agent("docker-configure", "runsc", "false", PREFIX, "--network=none", "--platform=systrap"))
    ok(configure_containerd(host))

    # containerd 1.6 cannot start the current shim (containerd 2's bootstrap
    # protocol): verification must say so rather than pass.
    result = host.agent("verify", "runsc", TEST_IMAGE, "auto", "auto", PREFIX, RUNSC_TOML)
    assert "speaks containerd 2's shim protocol" in failed(result)
    assert parse_facts(result.stdout)["containerd_ok"] == "false"

    facts = ok(host.agent("verify", "runsc", TEST_IMAGE, "auto", "off", PREFIX, RUNSC_TOML))
    host_kernel = host.sh("uname -r").strip()
    for runtime in ("runsc", "docker"):
        assert facts[f"{runtime}_ok"] == "true", facts
        assert facts[f"{runtime}_sandbox_kernel"] not in ("", host_kernel)
        assert "Starting gVisor" in facts[f"{runtime}_banner"]
        assert facts[f"{runtime}_kallsyms"] == "absent"

    ok(host.agent("containerd-restore", RUNSC_TOML))
    ok(host.agent("docker-restore", "runsc", PREFIX))
    ok(host.agent("uninstall", PREFIX))
    assert snapshot(host, "/etc/docker/daemon.json", "/etc/containerd/config.toml", RUNSC_TOML) == before
    assert added_to_prefix(host) == set()


def test_verify_fails_under_runc(host: Sandbox, releases: Releases):
    # The same probe under plain runc sees the host kernel: verification must fail.
    ok(install(host, releases.current))
    facts_result = host.agent("verify", "runc", TEST_IMAGE, "auto", "off", PREFIX, RUNSC_TOML)
    assert "gVisor verification failed for: docker" in failed(facts_result)
    facts = parse_facts(facts_result.stdout)
    assert facts["docker_ok"] == "false"
    assert facts["docker_sandbox_kernel"] == host.sh("uname -r").strip()


def test_containerd2_gets_the_table_of_its_config_version(host2: Sandbox, releases: Releases):
    assert host2.sh("containerd --version").split()[2].startswith("v2.")
    had_config = host2.read("/etc/containerd/config.toml")
    ok(install(host2, releases.current))
    facts = ok(configure_containerd(host2, debug="true"))
    # No file: containerd 2 gets version 3; Debian's version 2 file keeps its version.
    assert facts["containerd_config_version"] == ("3" if had_config is None else "2")
    written = (host2.read("/etc/containerd/config.toml") or b"").decode()
    plugin = "io.containerd.cri.v1.runtime" if had_config is None else "io.containerd.grpc.v1.cri"
    assert f'[plugins."{plugin}".containerd.runtimes.runsc]' in written
    dump = host2.sh("containerd config dump")
    assert f"ConfigPath = '{RUNSC_TOML}'" in dump
    assert "cri" in host2.sh("ctr plugins ls | awk '$4 == \"ok\" {print $2}'").split()
    assert ok(configure_containerd(host2, debug="true"))["containerd"] == "unchanged"

    ok(host2.agent("containerd-restore", RUNSC_TOML))
    assert host2.read("/etc/containerd/config.toml") == had_config


def test_containerd2_runs_gvisor_and_the_check_is_bounded(host2: Sandbox, releases: Releases):
    ok(install(host2, releases.current))
    ok(configure_containerd(host2))
    args = ["verify", "runsc", TEST_IMAGE, "off", "required", PREFIX, RUNSC_TOML]
    facts = ok(host2.agent(*args))
    assert facts["containerd_ok"] == "true", facts
    assert "Starting gVisor" in facts["containerd_banner"]
    assert facts["containerd_sandbox_kernel"] != host2.sh("uname -r").strip()
    assert facts["containerd_kallsyms"] == "absent"

    # A sandbox that does not finish in time fails the step (it does not hang
    # `pulumi up`) and leaves nothing running.
    start = time.monotonic()
    result = host2.run(["env", "GVISOR_FLEET_VERIFY_TIMEOUT=1", "sh", "-s", "--", *args], stdin=AGENT.read_text())
    assert time.monotonic() - start < 60
    assert "gVisor verification failed for:" in failed(result)
    assert parse_facts(result.stdout)["containerd_ok"] == "false"
    assert host2.sh("ctr -n gvisor-fleet containers ls -q").strip() == ""
    # Up to 30 s: a killed sandbox's teardown takes seconds on a loaded machine; a leaked one stays.
    gone = "i=0; while pgrep -f '[r]unsc-sandbox' >/dev/null && [ $i -lt 150 ]; do sleep 0.2; i=$((i+1)); done"
    host2.sh(gone)
    assert host2.sh("pgrep -c -f '[r]unsc-sandbox' || true").strip() == "0", "a killed check left its sandbox"


def test_docker_flags_are_checked_against_the_installed_runsc(host: Sandbox, releases: Releases):
    ok(install(host, releases.old))  # Debian's 2022 runsc: no directfs
    before = snapshot(host, "/etc/docker/daemon.json")
    err = failed(host.agent("docker-configure", "runsc", "false", PREFIX, "--directfs=false", "--platform=systrap"))
    assert "no flag 'directfs'" in err and "gvisor-fleet:runscFlags" in err
    assert snapshot(host, "/etc/docker/daemon.json") == before
    assert host.sh("test -e /var/lib/gvisor-fleet/backup/etc && echo kept || true").strip() == ""


def test_a_pin_is_refused_for_the_legacy_loose_layout(host: Sandbox, releases: Releases):
    err = failed(host.agent("install", MIRROR_URL, releases.current_loose, PREFIX, "a" * 128))
    assert "legacy loose layout" in err and "gvisor-fleet:sha512" in err
    assert added_to_prefix(host) == set()
    assert downloads(host, "runsc") == 0


def test_symlinked_configs_stay_links_and_come_back_byte_for_byte(host: Sandbox, releases: Releases):
    host.write("/etc/gvisor-test/daemon.json", '{"log-driver": "json-file"}\n')
    host.sh("ln -sf /etc/gvisor-test/daemon.json /etc/docker/daemon.json && systemctl restart docker")
    host.write("/etc/gvisor-test/config.toml", CUSTOM_CONTAINERD)
    host.sh("ln -sf /etc/gvisor-test/config.toml /etc/containerd/config.toml && systemctl restart containerd")
    ok(install(host, releases.current))
    ok(host.agent("docker-configure", "runsc", "false", PREFIX, "--platform=systrap"))
    ok(configure_containerd(host))
    for link in ("/etc/docker/daemon.json", "/etc/containerd/config.toml"):
        assert host.sh(f"readlink {link}").strip().startswith("/etc/gvisor-test/"), f"{link} is no longer a link"
    assert "runsc" in json.loads(host.read("/etc/gvisor-test/daemon.json") or b"")["runtimes"]
    ok(host.agent("containerd-restore", RUNSC_TOML))
    ok(host.agent("docker-restore", "runsc", PREFIX))
    assert host.read("/etc/gvisor-test/daemon.json") == b'{"log-driver": "json-file"}\n'
    assert host.read("/etc/gvisor-test/config.toml") == CUSTOM_CONTAINERD.encode()
    assert host.sh("readlink /etc/docker/daemon.json").strip() == "/etc/gvisor-test/daemon.json"


@pytest.mark.parametrize(
    "config",
    [
        "",
        'disabled_plugins = ["cri"]\n',
        "version = 2\ndisabled_plugins = ['io.containerd.grpc.v1.cri']\n",
        'version = 2\ndisabled_plugins = [\n  "io.containerd.grpc.v1.cri",\n  "io.containerd.snapshotter.v1.zfs",\n]\n',
    ],
    ids=["empty", "only-disabled-cri", "single-quotes", "several-lines"],
)
def test_valid_cri_less_configs_are_merged_not_refused(host: Sandbox, releases: Releases, config: str):
    host.write("/etc/containerd/config.toml", config)
    host.sh("systemctl restart containerd")
    ok(install(host, releases.current))
    assert ok(configure_containerd(host))["containerd"] == "configured"
    assert "cri" in host.sh("ctr plugins ls | awk '$4 == \"ok\" {print $2}'").split()
    ok(host.agent("containerd-restore", RUNSC_TOML))
    assert host.read("/etc/containerd/config.toml") == config.encode()


def test_relative_imports_resolve_against_the_real_file(host: Sandbox, releases: Releases):
    main = CUSTOM_CONTAINERD.replace('root = "/var/lib/containerd"', 'imports = ["conf.d/10-debug.toml"]')
    host.write("/etc/containerd/config.toml", main)
    host.write("/etc/containerd/conf.d/10-debug.toml", 'version = 2\n[debug]\n  level = "info"\n')
    host.sh("systemctl restart containerd")
    ok(install(host, releases.current))
    assert ok(configure_containerd(host))["containerd"] == "configured"
    assert 'level = "info"' in host.sh("containerd config dump")
    ok(host.agent("containerd-restore", RUNSC_TOML))
    assert host.read("/etc/containerd/config.toml") == main.encode()


def test_a_broken_config_is_refused_with_containerds_reason_and_the_real_path(host: Sandbox, releases: Releases):
    broken = CUSTOM_CONTAINERD + "[plugins\n"
    host.write("/etc/containerd/config.toml", broken)
    ok(install(host, releases.current))
    err = failed(configure_containerd(host))
    assert "/etc/containerd/config.toml" in err and "toml" in err.lower()
    assert "/var/lib/gvisor-fleet" not in err and "goroutine" not in err
    assert host.read("/etc/containerd/config.toml") == broken.encode()


def test_containerd_on_its_configured_grpc_address(host: Sandbox, releases: Releases):
    address = "/run/containerd-alt/containerd.sock"
    config = CUSTOM_CONTAINERD + f'\n[grpc]\n  address = "{address}"\n'
    host.write("/etc/containerd/config.toml", config)
    host.sh("systemctl restart containerd")
    ok(install(host, releases.current))
    start = time.monotonic()
    assert ok(configure_containerd(host))["containerd"] == "configured"
    assert time.monotonic() - start < 60, "a working config was waited on as if containerd were down"
    assert ok(configure_containerd(host))["containerd"] == "unchanged"
    assert "cri" in host.sh(f"ctr --address {address} plugins ls | awk '$4 == \"ok\" {{print $2}}'").split()
    ok(host.agent("containerd-restore", RUNSC_TOML))
    assert host.read("/etc/containerd/config.toml") == config.encode()
    host.sh(f"ctr --address {address} version >/dev/null")


@pytest.mark.parametrize(
    ("daemon_json", "message"),
    [('{"runtimes": []}\n', '"runtimes" must be an object'), ("{bad\n", "invalid character")],
    ids=["runtimes-not-an-object", "not-json"],
)
def test_a_malformed_daemon_json_gets_a_sentence(host: Sandbox, releases: Releases, daemon_json: str, message: str):
    host.write("/etc/docker/daemon.json", daemon_json)
    ok(install(host, releases.current))
    err = failed(host.agent("docker-configure", "runsc", "false", PREFIX, "--platform=systrap"))
    assert message in err and "goroutine" not in err and "nothing was changed" in err
    assert host.read("/etc/docker/daemon.json") == daemon_json.encode()


def test_a_full_disk_is_named_and_the_step_leaves_nothing(host: Sandbox, releases: Releases):
    ok(install(host, releases.current))
    host.sh(
        "mount -t tmpfs -o size=64k tmpfs /etc/docker && printf '{}\\n' > /etc/docker/daemon.json"
        " && { dd if=/dev/zero of=/etc/docker/filler bs=4k 2>/dev/null || true; }"
    )
    err = failed(host.agent("docker-configure", "runsc", "false", PREFIX, "--platform=systrap"))
    assert "cannot write /etc/docker/daemon.json: the file system holding it is full" in err
    assert host.read("/etc/docker/daemon.json") == b"{}\n"
    assert host.sh("ls -A /etc/docker").split() == ["daemon.json", "filler"]
    assert host.sh("test -e /var/lib/gvisor-fleet/backup/etc && echo kept || true").strip() == ""
