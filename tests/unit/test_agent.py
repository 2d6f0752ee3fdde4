import shlex

from components.gvisor.agent import SCRIPT_PATH, agent_command, agent_script, agent_stdin, checks_passed, parse_facts


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


def test_stdin_carries_the_step_timeout_and_the_unchanged_script():
    sent = agent_stdin(1200)
    first, second, rest = sent.split("\n", 2)
    assert first == "#!/bin/sh"
    assert second.startswith("GVISOR_FLEET_STEP_TIMEOUT=1200 ")
    assert f"{first}\n{rest}" == agent_script()


def test_the_stop_hook_is_never_set_by_the_program():
    # GVISOR_FLEET_TEST_STOP_AT is the host tests' kill hook; only the script reads it.
    for path in SCRIPT_PATH.parents[2].rglob("*.py"):
        assert "GVISOR_FLEET_TEST_STOP_AT" not in path.read_text(), path
