import shlex
import subprocess
from pathlib import Path

import pytest

from components.gvisor import agent
from components.gvisor.agent import SCRIPT_PATH, agent_command, agent_run, agent_script, checks_passed, parse_facts


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
        assert f"    {sub}) cmd_" in script


@pytest.fixture
def fake_agent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A stand-in script (prints what it was given) in place of the agent; tmp_path is the login home."""
    monkeypatch.setattr(agent, "agent_script", lambda: '#!/bin/sh\necho "timeout=$GVISOR_FLEET_STEP_TIMEOUT args=$*"\n')
    agent.agent_sha256.cache_clear()
    yield tmp_path
    agent.agent_sha256.cache_clear()


def run_in(home: Path, line: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", line], cwd=home, env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True)  # fmt: skip


def test_run_line_names_the_file_by_hash_and_passes_the_step_timeout(fake_agent: Path):
    copied = fake_agent / agent.agent_file()
    copied.parent.mkdir()
    copied.write_text(agent.agent_script())
    assert agent.agent_file() == f".gvisor-fleet/agent-{agent.agent_sha256()[:32]}"
    line = agent_run("install", "a b", "$(reboot)", sudo=False, step_timeout=1200, copy_name="m1-agent")
    result = run_in(fake_agent, line)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "timeout=1200 args=install a b $(reboot)\n"


@pytest.mark.parametrize("damage", ["missing", "altered"])
def test_run_line_refuses_a_missing_or_altered_copy_and_names_the_fix(fake_agent: Path, damage: str):
    copied = fake_agent / agent.agent_file()
    copied.parent.mkdir()
    if damage == "altered":
        copied.write_text(agent.agent_script() + "echo injected\n")
    line = agent_run("install", sudo=False, step_timeout=900, copy_name="m1-agent")
    result = run_in(fake_agent, line)
    assert result.returncode == 3 and not result.stdout
    assert f"{fake_agent}/{agent.agent_file()} is missing or altered" in result.stderr
    assert "copy it again: pulumi up --replace <URN of m1-agent>" in result.stderr


def test_run_line_uses_non_interactive_sudo_for_other_users():
    line = shlex.split(agent_run("verify", sudo=True, step_timeout=900, copy_name="x"))
    assert line[:2] == ["sh", "-c"] and "exec sudo -n env GVISOR_FLEET_STEP_TIMEOUT=" in line[2]
    assert line[line.index("--") :] == ["--", "verify"]
    assert "sudo" not in agent_run("verify", sudo=False, step_timeout=900, copy_name="x")


def test_the_stop_hook_is_never_set_by_the_program():
    # GVISOR_FLEET_TEST_STOP_AT is the host tests' kill hook; only the script reads it.
    for path in SCRIPT_PATH.parents[2].rglob("*.py"):
        assert "GVISOR_FLEET_TEST_STOP_AT" not in path.read_text(), path
