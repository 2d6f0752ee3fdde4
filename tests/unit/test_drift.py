"""Drift: the comparison, the repair plan, the agent's read-only check on real files,
and what the check resource does without SSH (diff, update with nothing drifted)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from components.fleet.keys import generate_ed25519
from components.gvisor.agent import SCRIPT_PATH, parse_facts
from components.gvisor.drift import (
    AS_INSTALLED,
    CHANGED,
    ITEMS,
    REMOVED,
    CheckError,
    checked_items,
    describe,
    digests,
    drifted,
    recorded_digests,
    repair_plan,
    statuses,
)
from components.gvisor.host_check import _HostCheckProvider, openssh_key, ssh_argv
from components.lean_state import compact_private_key
from components.scripts.build import BUILDS

BLOCK = "# BEGIN gvisor-fleet runtime (managed; removed on destroy)\n[x]\n  a = 1\n# END gvisor-fleet runtime\n"
DAEMON = {"log-level": "warn", "runtimes": {"runsc": {"path": "/usr/local/bin/runsc", "runtimeArgs": ["--a=1"]}}}


def test_items_follow_the_engines_configured():
    assert checked_items(True, True) == list(ITEMS)
    assert checked_items(False, True) == ["runscBinary", "shimBinary", "containerdBlock", "runscToml"]
    assert checked_items(True, False) == ["runscBinary", "shimBinary", "dockerRuntime"]


def test_statuses_name_what_changed_and_what_was_removed():
    recorded = {"runscBinary": "a", "shimBinary": "b", "runscToml": "c", "dockerRuntime": ""}
    observed = {"runscBinary": "a", "shimBinary": "x", "runscToml": "absent", "dockerRuntime": "y"}
    found = statuses(recorded, observed)
    # An item without a record cannot be compared: never reported.
    assert found == {
        "runscBinary": AS_INSTALLED,
        "shimBinary": CHANGED,
        "runscToml": REMOVED,
        "dockerRuntime": AS_INSTALLED,
    }
    assert drifted(found) == ["shimBinary", "runscToml"]
    assert describe(found) == "the containerd-shim-runsc-v1 binary (changed by hand), runsc.toml (removed by hand)"


def test_repair_runs_each_drifted_items_step_once_in_order_then_verify():
    steps = ["install", "docker", "containerd", "verify"]
    assert repair_plan([], steps) == []
    assert repair_plan(["runscToml", "runscBinary", "shimBinary", "containerdBlock"], steps) == [
        "install",
        "containerd",
        "verify",
    ]
    assert repair_plan(["dockerRuntime"], steps) == ["docker", "verify"]
    assert repair_plan(["dockerRuntime"], ["install", "verify"]) == ["verify"]  # docker off: nothing to run but verify


def test_the_record_is_taken_from_the_verify_output_and_reads_are_strict():
    out = "runsc_ok=true\ncheck_runsc=aa\ncheck_shim=absent\nnoise\n"
    assert recorded_digests(out, ["runscBinary", "shimBinary", "runscToml"]) == {
        "runscBinary": "aa",
        "shimBinary": "absent",
        "runscToml": "",
    }
    with pytest.raises(CheckError, match="printed no check_runsc_toml"):
        digests(parse_facts(out), ["runscBinary", "runscToml"])


# --- the agent's check, on real files ------------------------------------------------


def run_check(tmp: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "GVISOR_FLEET_DAEMON_JSON": str(tmp / "daemon.json"),
        "GVISOR_FLEET_CONTAINERD_CONFIG": str(tmp / "config.toml"),
        "GVISOR_FLEET_STATE_DIR": str(tmp / "state"),
    }
    out = subprocess.run(
        ["sh", str(SCRIPT_PATH), "check", str(tmp / "bin"), "runsc", str(tmp / "runsc.toml")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_facts(out)


@pytest.fixture
def host(tmp_path: Path) -> Path:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "runsc").write_bytes(b"runsc")
    (tmp_path / "daemon.json").write_text(json.dumps(DAEMON, indent=4))
    (tmp_path / "config.toml").write_text("version = 2\n" + BLOCK)
    (tmp_path / "runsc.toml").write_text("[runsc_config]\n")
    return tmp_path


def test_the_check_is_a_part_of_the_agent():
    assert "components/gvisor/scripts/parts/check.sh" in BUILDS["components/gvisor/scripts/gvisor-host.sh"]


def test_the_check_digests_each_item_and_writes_nothing(host: Path):
    before = sorted(p.relative_to(host) for p in host.rglob("*"))
    facts = run_check(host)
    assert sorted(p.relative_to(host) for p in host.rglob("*")) == before, "the check wrote something"
    assert facts["check_shim"] == "absent"
    for key in ("check_runsc", "check_docker_runtime", "check_containerd_block", "check_runsc_toml"):
        assert len(facts[key]) == 32 and facts[key] != "absent", (key, facts)


def test_docker_entry_ignores_layout_and_other_keys_but_not_the_runtime(host: Path):
    first = run_check(host)["check_docker_runtime"]
    other = {**DAEMON, "log-level": "debug", "max-concurrent-downloads": 3}
    (host / "daemon.json").write_text(json.dumps(other, separators=(",", ":")))
    assert run_check(host)["check_docker_runtime"] == first
    changed = json.loads(json.dumps(DAEMON))
    changed["runtimes"]["runsc"]["runtimeArgs"].append("--debug=true")
    (host / "daemon.json").write_text(json.dumps(changed, indent=2))
    assert run_check(host)["check_docker_runtime"] != first
    (host / "daemon.json").write_text(json.dumps({**DAEMON, "default-runtime": "runsc"}, indent=4))
    assert run_check(host)["check_docker_runtime"] != first  # default-runtime is part of the entry
    (host / "daemon.json").write_text(json.dumps({"runtimes": {"runc": {"path": "runc"}}}))
    assert run_check(host)["check_docker_runtime"] == "absent"


def test_containerd_block_ignores_the_owners_lines_but_not_the_block(host: Path):
    first = run_check(host)["check_containerd_block"]
    (host / "config.toml").write_text("version = 2\nroot = '/x'\n" + BLOCK)
    assert run_check(host)["check_containerd_block"] == first
    (host / "config.toml").write_text("version = 2\n" + BLOCK.replace("a = 1", "a = 2"))
    assert run_check(host)["check_containerd_block"] != first
    (host / "config.toml").write_text("version = 2\n")
    assert run_check(host)["check_containerd_block"] == "absent"
    (host / "runsc.toml").unlink()
    assert run_check(host)["check_runsc_toml"] == "absent"


# --- the resource, without SSH -------------------------------------------------------


def props(**items: str) -> dict[str, object]:
    return {
        "connection": {"host": "127.0.0.1", "port": 2222, "user": "root", "privateKey": "k"},
        "check": "sh .gvisor-fleet/x check",
        "repair": {"install": "i", "verify": "v"},
        "timeout": 60,
        "step_timeout": 900,
        "items": ["runscBinary"],
        "recorded": {"runscBinary": "aa"},
        "runscBinary": AS_INSTALLED,
        **items,
    }


def test_diff_compares_the_state_with_the_program_only():
    provider = _HostCheckProvider()
    assert provider.diff("id", {**props(), "__provider": "p"}, props()).changes is False
    assert provider.diff("id", props(runscBinary=CHANGED), props()).changes is True
    assert provider.diff("id", props(), {**props(), "recorded": {"runscBinary": "bb"}}).changes is True


def test_an_update_with_nothing_drifted_records_without_ssh():
    connection = {"host": "127.0.0.1", "port": 1, "user": "root"}  # no key: any SSH attempt would fail
    news = {**props(), "connection": connection, "recorded": {"runscBinary": "bb"}}
    assert _HostCheckProvider().update("id", props(), news).outs == news


def test_ssh_gets_the_key_in_openssh_form_readable_by_its_owner_only_and_the_pinned_host_key(tmp_path: Path):
    key = generate_ed25519("t").private_key
    compact = compact_private_key(key)
    assert "BEGIN PRIVATE KEY" in compact
    assert "BEGIN OPENSSH PRIVATE KEY" in openssh_key(compact)
    connection = {
        "host": "10.0.0.1",
        "port": 2222,
        "user": "admin",
        "privateKey": compact,
        "hostKey": "ssh-ed25519 AAAA",
    }
    with ssh_argv(connection) as (argv, _env):
        key_file = Path(argv[argv.index("-i") + 1])
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert "BEGIN OPENSSH PRIVATE KEY" in key_file.read_text()
        known = next(a.split("=", 1)[1] for a in argv if a.startswith("UserKnownHostsFile="))
        assert Path(known).read_text() == "[10.0.0.1]:2222 ssh-ed25519 AAAA\n"
        assert "StrictHostKeyChecking=yes" in argv and argv[-1] == "admin@10.0.0.1"
    assert not key_file.exists(), "the key file must be removed"
    with pytest.raises(CheckError, match="log in with a key or an SSH agent"), ssh_argv({"host": "h", "password": "x"}):
        pass
