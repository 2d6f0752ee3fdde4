import shlex
import subprocess
from pathlib import Path

import pytest

from components.gvisor import agent
from components.gvisor.agent import SCRIPT_PATH, agent_command, agent_run, agent_script, checks_passed, parse_facts
from components.gvisor.settings import GvisorSettings


def test_agent_command_quotes_every_argument():
    line = agent_command("install", "http://x/a b", "$(reboot)", sudo=False)
    assert shlex.split(line) == ["sh", "-s", "--", "install", "http://x/a b", "$(reboot)"]
    assert "'$(reboot)'" in line


def test_agent_command_uses_non_interactive_sudo_for_other_users():
    assert agent_command("verify", sudo=True).startswith("sudo -n sh -s -- verify")


def test_parse_facts_ignores_noise():
    out = "Warning: foo\narch=aarch64\nkernel=6.1.0-1-arm64\nbanner=[0.0] Starting gVisor=yes\n=x\n"
    assert parse_facts(out) == {
        "arch": "aarch64",
        "kernel": "6.1.0-1-arm64",
        "banner": "[0.0] Starting gVisor=yes",
    }


def test_checks_passed_needs_runsc_and_every_engine_that_ran():
    assert checks_passed({"runsc_ok": "true", "docker_ok": "true", "containerd_ok": "skipped"})
    assert checks_passed({"runsc_ok": "true", "docker_ok": "skipped", "containerd_ok": "skipped"})
    assert not checks_passed({"runsc_ok": "true", "docker_ok": "true", "containerd_ok": "false"})
    assert not checks_passed({"runsc_ok": "false", "docker_ok": "true", "containerd_ok": "true"})
    assert not checks_passed({"docker_ok": "true"})
    assert not checks_passed({})


def test_script_is_posix_sh_with_all_subcommands():
    script = agent_script()
    assert script.startswith("#!/bin/sh\n")
    for sub in ("preflight", "install", "uninstall", "docker-configure", "containerd-configure", "verify"):
        assert f"        {sub})" in script and f"cmd_{sub.replace('-', '_')} " in script


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A login home with the agent copied in as GvisorHost copies it."""
    copied = tmp_path / agent.agent_file()
    copied.parent.mkdir()
    copied.write_text(agent_script())
    return tmp_path


def run_in(home: Path, line: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", line], cwd=home, env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True)  # fmt: skip


def test_run_line_names_the_copy_by_hash_and_passes_the_step_timeout(home: Path):
    assert agent.agent_file() == f".gvisor-fleet/gvisor-host-{agent.agent_sha256()[:16]}"
    line = agent_run("install", "a b", "$(reboot)", sudo=False, step_timeout=1200, instance="i-1")
    assert shlex.split(line) == ["sh", agent.agent_file(), "-t1200", "-ii-1", "install", "a b", "$(reboot)"]
    # The copy runs (its hash matches its name) and reads its options: an unknown step is refused by usage.
    result = run_in(home, agent_run("no-such-step", sudo=False, step_timeout=1200))
    assert result.returncode == 1 and "usage: sh FILE [-tSECONDS]" in result.stderr, result.stderr
    result = run_in(home, f"sh {agent.agent_file()} -t12x verify")
    assert result.returncode == 1 and "step timeout '12x' is not a number of seconds" in result.stderr


def test_the_default_step_timeout_is_left_to_the_script():
    # The line names no timeout when it is the script's own default: each step keeps its line twice in the state.
    assert f"STEP_TIMEOUT=${{GVISOR_FLEET_STEP_TIMEOUT:-{agent.SCRIPT_STEP_TIMEOUT}}}" in agent_script()
    assert GvisorSettings().step_timeout == agent.SCRIPT_STEP_TIMEOUT
    assert shlex.split(agent_run("verify", sudo=False, step_timeout=900)) == ["sh", agent.agent_file(), "verify"]


def test_an_altered_copy_refuses_to_run_and_names_the_fix(home: Path):
    copied = home / agent.agent_file()
    copied.write_text(agent_script() + "echo injected\n")
    result = run_in(home, agent_run("no-such-step", sudo=False, step_timeout=900))
    assert result.returncode == 1 and not result.stdout
    assert f"{copied} is altered" in result.stderr and "usage" not in result.stderr
    assert "copy it again: pulumi up --replace <URN of this machine's '-agent' copy>" in result.stderr


def test_a_missing_copy_fails_naming_the_file(home: Path):
    (home / agent.agent_file()).unlink()
    result = run_in(home, agent_run("verify", sudo=False, step_timeout=900))
    assert result.returncode != 0 and agent.agent_file() in result.stderr, result.stderr


def test_remove_copy_removes_every_version_then_the_folder_if_empty(home: Path):
    older = home / agent.AGENT_DIR / "gvisor-host-0123"
    older.write_text("an older version\n")
    assert run_in(home, agent_run("remove-copy", sudo=False, step_timeout=900)).returncode == 0
    assert not (home / agent.AGENT_DIR).exists()
    # Something else in the folder: the copies go, the folder and that file stay.
    copied = home / agent.agent_file()
    copied.parent.mkdir()
    copied.write_text(agent_script())
    (home / agent.AGENT_DIR / "notes").write_text("mine\n")
    assert run_in(home, agent_run("remove-copy", sudo=False, step_timeout=900)).returncode == 0
    assert [p.name for p in (home / agent.AGENT_DIR).iterdir()] == ["notes"]


def test_run_line_uses_non_interactive_sudo_for_other_users():
    line = agent_run("verify", sudo=True, step_timeout=600)
    assert shlex.split(line) == ["sudo", "-n", "sh", agent.agent_file(), "-t600", "verify"]
    assert "sudo" not in agent_run("verify", sudo=False, step_timeout=900)


def test_the_stop_hook_is_never_set_by_the_program():
    # GVISOR_FLEET_TEST_STOP_AT is the host tests' kill hook; only the script reads it.
    for path in SCRIPT_PATH.parents[2].rglob("*.py"):
        assert "GVISOR_FLEET_TEST_STOP_AT" not in path.read_text(), path
