import shlex

from components.gvisor.agent import agent_command, agent_script, checks_passed, parse_facts


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
