"""The GvisorHost resource graph under Pulumi mocks."""

import dataclasses
import shlex
from pathlib import Path

import pulumi
import pytest

from components.fleet.specs import MachineSpec
from components.fleet.static import static_machine
from components.gvisor.agent import SCRIPT_PATH, agent_file, agent_sha256
from components.gvisor.host import GvisorHost, host_commands
from components.gvisor.settings import GvisorSettings

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-material\n-----END OPENSSH PRIVATE KEY-----\n"
SPEC = MachineSpec(name="m1", arch="x86_64", address="127.0.0.1", port=2222, host_key="ssh-ed25519 AAAA")


def argv(line: str) -> list[str]:
    """The agent's subcommand and its arguments (what follows the copy's name and options)."""
    words = shlex.split(line)
    words = words[2:] if words[:2] == ["sudo", "-n"] else words
    assert words[:2] == ["sh", agent_file()], line
    words = words[2:]
    while words and words[0].startswith(("-t", "-i")):
        words = words[1:]
    return words


@pulumi.runtime.test
def test_steps_are_children_with_delete_paths(mocks):
    host = GvisorHost("m1", static_machine(SPEC, KEY), GvisorSettings())

    def check(_):
        commands = {r.name: r for r in mocks.of_type("command:remote:Command")}
        assert set(commands) == {f"m1-{s}" for s in ("install", "docker", "containerd", "verify")}
        for step in ("install", "docker", "containerd"):
            r = commands[f"m1-{step}"]
            assert r.inputs.get("delete"), f"{step} has no delete: destroy would leave the host changed"
        # The script reaches the machine once, as a file named by its hash; no step carries it.
        (copy,) = mocks.of_type("command:remote:CopyToRemote")
        assert copy.name == "m1-agent" and copy.inputs["remotePath"] == agent_file()
        assert isinstance(copy.inputs["source"], pulumi.FileAsset)
        assert Path(copy.inputs["source"].path).resolve() == SCRIPT_PATH.resolve()
        # The install step's delete, the last on destroy, removes the copy and its folder.
        assert argv(commands["m1-install"].inputs["delete"])[-1] == "remove-copy"
        for r in commands.values():
            assert "stdin" not in r.inputs, r.name
            assert agent_sha256()[:16] in agent_file() and argv(r.inputs["create"]), r.name
            assert KEY not in r.inputs["create"] and KEY not in r.inputs.get("delete", "")
        (component,) = mocks.of_type("gvisor-fleet:gvisor:GvisorHost")
        assert component.name == "m1"

    return host.facts.apply(check)


def run_order(depends_on: dict[str, set[str]], steps: list[str]) -> list[set[str]]:
    """The steps in the waves the engine can run them: each wave needs only earlier ones."""
    waves: list[set[str]] = []
    done: set[str] = set()
    while len(done) < len(steps):
        wave = {s for s in steps if s not in done and depends_on[s] & set(steps) <= done}
        assert wave, f"a dependency cycle among {set(steps) - done}"
        waves.append(wave)
        done |= wave
    return waves


@pytest.mark.parametrize(
    ("settings", "order"),
    [
        (GvisorSettings(), [{"install"}, {"docker", "containerd"}, {"verify"}]),
        (GvisorSettings(docker="off"), [{"install"}, {"containerd"}, {"verify"}]),
        (GvisorSettings(containerd="off"), [{"install"}, {"docker"}, {"verify"}]),
    ],
    ids=["both-engines", "docker-off", "containerd-off"],
)
@pulumi.runtime.test
def test_steps_run_copy_install_engines_verify(mocks, settings, order):
    host = GvisorHost("m1", static_machine(SPEC, KEY), settings)

    def check(_):
        steps = [r.name for r in mocks.of_type("command:remote:Command")] + ["m1-agent"]
        # The copy comes before the first step; install (whose delete removes the copy) comes
        # before every other step, so destroy (deletes run in reverse) deletes it last.
        expected = [{"agent"}, *order]
        assert run_order(mocks.depends_on, steps) == [{f"m1-{s}" for s in wave} for wave in expected]
        # verify waits for every step that changed what it checks, not only the last one.
        configured = {f"m1-{s}" for wave in order[1:-1] for s in wave}
        assert configured <= mocks.depends_on["m1-verify"]

    return host.facts.apply(check)


@pulumi.runtime.test
def test_facts_and_checks_come_from_agent_output(mocks):
    host = GvisorHost("m1", static_machine(SPEC, KEY), GvisorSettings())

    def check(args):
        facts, ok = args
        assert facts["arch"] == "x86_64"
        assert facts["docker_sandbox_kernel"] == "4.4.0" != facts["host_kernel"]
        assert facts["containerd_config_version"] == "2"
        assert ok is True

    return pulumi.Output.all(host.facts, host.checks_passed).apply(check)


@pulumi.runtime.test
def test_connection_key_is_secret_and_host_key_pinned(mocks):
    machine = static_machine(SPEC, KEY)
    conn = machine.connection

    def check(args):
        is_secret, host_key, port = args
        assert is_secret, "the SSH private key must be a Pulumi secret"
        assert host_key == "ssh-ed25519 AAAA"
        assert port == 2222

    return pulumi.Output.all(pulumi.Output.from_input(conn.private_key).is_secret(), conn.host_key, conn.port).apply(
        check
    )


def test_docker_off_removes_the_step_and_verify_skips_it():
    steps = host_commands(static_machine(SPEC, KEY), GvisorSettings(docker="off"))
    assert "docker" not in steps and "containerd" in steps
    verify = steps["verify"][0].split(" && ")[0]  # then the read-only check
    assert argv(verify)[-4:] == ["off", "auto", "/usr/local/bin", "/etc/containerd/runsc.toml"]


def test_non_root_user_runs_agent_with_sudo():
    spec = MachineSpec(name="m1", arch="aarch64", address="h", user="admin")
    steps = host_commands(static_machine(spec, KEY), GvisorSettings())
    assert all(create.startswith("sudo -n sh ") for create, _ in steps.values())
    root = host_commands(static_machine(SPEC, KEY), GvisorSettings())
    assert not any("sudo" in create for create, _ in root.values())


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_install_passes_release_mirror_and_per_arch_pin(arch):
    gv = GvisorSettings(release="20261109.0", base_url="http://mirror", sha512={"aarch64": "ab" * 64})
    spec = MachineSpec(name="m1", arch=arch, address="h")
    create, delete = host_commands(static_machine(spec, KEY), gv)["install"]
    pin = "ab" * 64 if arch == "aarch64" else "-"
    # The preflight checks first, then the install, in one run.
    assert argv(create) == [
        "preflight",
        arch,
        "systrap",
        "auto",
        "auto",
        "install",
        "http://mirror",
        "20261109.0",
        "/usr/local/bin",
        pin,
    ]
    assert argv(delete) == ["uninstall", "/usr/local/bin", "remove-copy"]


def test_docker_step_carries_runtime_args_and_default_runtime():
    gv = GvisorSettings(docker_network="none", default_runtime=True, runsc_flags={"debug": True})
    create, _ = host_commands(static_machine(SPEC, KEY), gv)["docker"]
    assert argv(create) == [
        "docker-configure", "runsc", "true", "/usr/local/bin",
        "--debug=true", "--network=none", "--platform=systrap",
    ]  # fmt: skip


def test_changing_platform_changes_only_runtime_steps():
    before = host_commands(static_machine(SPEC, KEY), GvisorSettings())
    after = host_commands(static_machine(SPEC, KEY), GvisorSettings(platform="kvm"))
    changed = {step for step in before if before[step] != after[step]}
    assert changed == {"install", "docker", "containerd"}  # install: preflight checks the platform


@pulumi.runtime.test
def test_a_machine_created_anew_gets_every_step_again(mocks):
    machine = dataclasses.replace(static_machine(SPEC, KEY), instance="vm-generation-2")
    host = GvisorHost("m1", machine, GvisorSettings())

    def check(_):
        renewed = [*mocks.of_type("command:remote:Command"), *mocks.of_type("command:remote:CopyToRemote")]
        for r in renewed:
            if r.name == "m1-install":  # updated, not replaced: its delete removes the copy the new one needs
                assert "triggers" not in r.inputs and "-ivm-generation-2" in shlex.split(r.inputs["create"])
            else:
                assert "vm-generation-2" in r.inputs.get("triggers", []), r.name

    return host.facts.apply(check)
