"""The real Pulumi engine, through a stack that uses the program as users do (no mocks).

Test machines are sandboxes with their own file systems, real dockerd and
containerd 2 (built from source: Debian's 1.6 cannot run the current shim)
with their owner's daemon.json, config.toml and runsc.toml, and an OpenSSH
server on 127.0.0.1 (see ssh_machines.py). The engine runs the upstream language
host and command provider (tests/toolchain/build-pulumi.sh). The steps run
in order, each on what the one before left: preview, up, a no-op up, a change
of one runsc flag, destroy; then the state and every line the engine printed
are searched for the SSH private key.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from components.gvisor.agent import agent_file
from tests.e2e import pulumi_stack, ssh_machines
from tests.e2e.pulumi_stack import Stack, largest_resources, record
from tests.e2e.ssh_machines import KeyPair, Machine, snapshot
from tests.support import toolchain
from tests.support.image import TEST_IMAGE
from tests.support.mirror import Releases

pytestmark = pytest.mark.e2e

MACHINES = 2
COMMAND = "command:remote:Command"
COPY = "command:remote:CopyToRemote"
# For machines with every step (Docker and containerd on) and the drift check:
# measured 33.8 KB per machine with two machines (the stack's own records
# included; each machine's `-check` keeps its login, the steps' lines it
# re-runs to repair, and the digests it compares). test_state.py holds
# 25 KB for six machines with two steps.
STATE_BYTES_PER_MACHINE = 34_500
HOST = "gvisor-fleet:gvisor:GvisorHost"
DEBUG_FLAGS = {"debug": True, "debug-log": "/var/log/runsc/"}


@dataclass
class Fleet:
    machines: list[Machine]
    stack: Stack
    key: KeyPair
    releases: Releases
    as_found: dict[str, dict[str, bytes | None]] = field(default_factory=dict)
    as_found_home: dict[str, list[str]] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    checkpoints: list[Path] = field(default_factory=list)

    def steps(self) -> list[str]:
        return ["install", "docker", "containerd", "verify"]

    def commands(self) -> list[str]:
        """Every remote.Command of every machine: its steps."""
        return [f"{m.name}-{s}" for m in self.machines for s in self.steps()]

    def require(self, *steps: str) -> None:
        for step in steps:
            if step not in self.done:
                pytest.skip(f"needs the '{step}' step, which failed or did not run")

    def remote_commands(self) -> dict[str, int]:
        return {m.name: m.remote_commands() for m in self.machines}

    def keep_checkpoint(self, label: str) -> None:
        """A copy of the state file as it is now, for the secret scan at the end."""
        src = self.stack.state / ".pulumi" / "stacks" / "gvisor-fleet" / f"{self.stack.name}.json"
        dest = self.stack.work / f"checkpoint-{label}.json"
        shutil.copy2(src, dest)
        self.checkpoints.append(dest)

    def config(self, **overrides: object) -> dict[str, object]:
        return pulumi_stack.stack_config(self.machines, self.releases, containerd=True, overrides=overrides)


def docker_runtimes(machine: Machine) -> dict[str, object]:
    out = machine.sandbox.sh("docker info --format '{{json .Runtimes}}'")
    runtimes = json.loads(out)
    assert isinstance(runtimes, dict)
    return runtimes


@pytest.fixture(scope="module")
def fleet(engine: Path, mirror: Releases, image_tar: Path, client_key: KeyPair, fleet_work: Path) -> Iterator[Fleet]:
    containerd2 = toolchain.build_containerd2()
    machines = ssh_machines.start_machines(MACHINES, fleet_work / "machines", client_key, image_tar, containerd2)
    try:
        stack = Stack(fleet_work / "stack")
        fleet = Fleet(machines, stack, client_key, mirror)
        stack.init(fleet.config(), client_key.private_text)
        fleet.as_found = {m.name: snapshot(m) for m in machines}
        fleet.as_found_home = {m.name: m.sandbox.sh("ls -A /root").split() for m in machines}
        yield fleet
    finally:
        for m in machines:
            m.close()


def test_preview_lists_the_expected_resources(fleet: Fleet) -> None:
    before = fleet.remote_commands()
    # Without any network: engine, language host and provider need nothing from outside.
    run = fleet.stack.pulumi("preview", events=True, offline=True).check()
    record("preview", run)

    expected = set(fleet.commands())
    assert run.ops(COMMAND) == {name: {"create"} for name in expected}
    assert run.ops(COPY) == {f"{m.name}-agent": {"create"} for m in fleet.machines}
    assert run.ops(HOST) == {m.name: {"create"} for m in fleet.machines}
    for name in expected:
        assert f"{COMMAND} {name} create" in run.stdout, run.stdout
    assert fleet.remote_commands() == before, "preview must not run anything on the machines"
    fleet.done.add("preview")


def test_up_installs_and_verifies_gvisor_on_every_machine(fleet: Fleet) -> None:
    fleet.require("preview")
    before = fleet.remote_commands()
    run = fleet.stack.pulumi("up", "--yes", events=True).check()
    record("up", run)
    fleet.keep_checkpoint("up")

    assert run.ops(COMMAND) == {name: {"create"} for name in fleet.commands()}
    outputs = fleet.stack.outputs()
    assert outputs["gvisorRelease"] == fleet.releases.current
    assert outputs["allChecksPassed"] is True
    facts_by_machine = outputs["machines"]
    assert isinstance(facts_by_machine, dict)
    assert set(facts_by_machine) == {m.name for m in fleet.machines}
    runtimes = ["runsc", "docker", "containerd"]
    for m in fleet.machines:
        facts = facts_by_machine[m.name]
        host_kernel = m.sandbox.sh("uname -r").strip()
        assert facts["host_kernel"] == host_kernel
        assert facts["release"] == fleet.releases.current
        assert facts["arch"] == "x86_64"
        for rt in runtimes:
            assert facts[f"{rt}_ok"] == "true", (m.name, rt, facts)
            assert facts[f"{rt}_sandbox_kernel"] not in ("", host_kernel), (m.name, rt, facts)
            assert "Starting gVisor" in facts[f"{rt}_banner"], (m.name, rt, facts)
        # The owner's containerd files were replaced (destroy must bring them back).
        assert m.read("/etc/containerd/config.toml") != ssh_machines.USER_CONTAINERD_TOML.encode()
        assert m.read("/etc/containerd/runsc.toml") != ssh_machines.USER_RUNSC_TOML.encode()
        # Independently of the agent: Docker on the machine runs containers under gVisor.
        assert "runsc" in docker_runtimes(m)
        sandbox_kernel = m.sandbox.sh(f"docker run --rm --runtime=runsc {TEST_IMAGE} uname -r").strip()
        assert sandbox_kernel and sandbox_kernel != host_kernel
    steps = len(fleet.steps())
    assert {k: v - before[k] for k, v in fleet.remote_commands().items()} == {m.name: steps for m in fleet.machines}
    fleet.done.add("up")


def test_second_up_changes_nothing_and_runs_no_remote_command(fleet: Fleet) -> None:
    fleet.require("up")
    before = fleet.remote_commands()
    run = fleet.stack.pulumi("up", "--yes", "--expect-no-changes", events=True).check()
    record("no-op up", run)

    ops = run.ops()
    assert ops and all(op == {"same"} for op in ops.values()), ops
    assert fleet.remote_commands() == before, "a no-op up must not run any remote command"
    fleet.done.add("no-op up")


def test_state_per_machine_stays_small(fleet: Fleet) -> None:
    """The script is in the state once per machine as a hash, not as every step's stdin."""
    fleet.require("up")
    exported = fleet.stack.pulumi("stack", "export").check().stdout.encode()
    per_machine = len(exported) / len(fleet.machines)
    assert per_machine <= STATE_BYTES_PER_MACHINE, (
        f"{per_machine:.0f} bytes of state per machine; the largest resources:\n{largest_resources(exported)}"
    )
    resources = json.loads(exported)["deployment"]["resources"]
    for res in resources:
        assert "gVisor host agent" not in json.dumps(res), f"the script's text is in the state: {res['urn']}"
    for m in fleet.machines:
        copied = m.sandbox.sh("ls /root/.gvisor-fleet").split()
        assert copied == [agent_file().rsplit("/", 1)[1]], copied


def test_changing_a_runsc_flag_updates_only_the_affected_steps(fleet: Fleet) -> None:
    fleet.require("up")
    for m in fleet.machines:
        assert not m.sandbox.sh("ls -A /var/log/runsc 2>/dev/null || true").strip()
    fleet.stack.set_config(fleet.config(runscFlags=DEBUG_FLAGS))
    before = fleet.remote_commands()
    run = fleet.stack.pulumi("up", "--yes", events=True).check()
    record("flag change up", run)
    fleet.keep_checkpoint("flag-change")

    changed = {"docker", "containerd"}
    expected: dict[str, set[str]] = {}
    for m in fleet.machines:
        expected[f"{m.name}-install"] = {"same"}
        expected.update({f"{m.name}-{s}": {"update"} for s in changed})
        # verify's triggers are the configure commands: it is replaced, so it runs again.
        expected[f"{m.name}-verify"] = {"create-replacement", "replace", "delete-replaced"}
    assert run.ops(COMMAND) == expected
    ran = {k: v - before[k] for k, v in fleet.remote_commands().items()}
    assert ran == {m.name: len(changed) + 1 for m in fleet.machines}

    assert fleet.stack.outputs()["allChecksPassed"] is True
    for m in fleet.machines:
        args = docker_runtimes(m)["runsc"]
        assert isinstance(args, dict)
        assert {"--debug=true", "--debug-log=/var/log/runsc/"} <= set(args.get("runtimeArgs", [])), args
        # In effect, not just written: the verify step's containers logged there.
        assert m.sandbox.sh("ls -A /var/log/runsc/").split(), f"no runsc debug logs on {m.name}"
        toml = (m.read("/etc/containerd/runsc.toml") or b"").decode()
        assert 'debug = "true"' in toml and 'debug-log = "/var/log/runsc/"' in toml, toml
    fleet.done.add("flag change")


def test_the_measurement_runs_once_when_turned_on_and_again_only_when_its_setting_changes(fleet: Fleet) -> None:
    fleet.require("flag change")
    before = fleet.remote_commands()

    def up(budget: int, label: str) -> dict[str, set[str]]:
        overhead = {"budget": budget, "runs": 1, "engine": "docker"}
        fleet.stack.set_config(fleet.config(runscFlags=DEBUG_FLAGS, overhead=overhead))
        run = fleet.stack.pulumi("up", "--yes", events=True).check()
        record(label, run)
        return run.ops(COMMAND)

    ops = up(60, "overhead on up")
    for m in fleet.machines:
        assert ops.pop(f"{m.name}-overhead") == {"create"}, ops
    assert all(op == {"same"} for op in ops.values()), ops
    outputs = fleet.stack.outputs()["machines"]
    assert isinstance(outputs, dict)
    for m in fleet.machines:
        measured = outputs[m.name]["overhead"]
        assert measured["engine"] == "docker" and measured["budget_s"] == 60
        assert measured["runtimes"]["runc"]["start_ms"]["median"] > 0, measured
        assert measured["runtimes"]["runsc/systrap"]["start_ms"]["median"] > 0, measured
    ran = {k: v - before[k] for k, v in fleet.remote_commands().items()}
    assert ran == {m.name: 1 for m in fleet.machines}, "only the measurement ran"

    before = fleet.remote_commands()
    run = fleet.stack.pulumi("up", "--yes", "--expect-no-changes", events=True).check()
    assert all(op == {"same"} for op in run.ops().values())
    assert fleet.remote_commands() == before, "a no-op up must not measure again"

    ops = up(70, "overhead change up")
    for m in fleet.machines:
        assert ops.pop(f"{m.name}-overhead") == {"update"}, ops
    assert all(op == {"same"} for op in ops.values()), ops
    ran = {k: v - before[k] for k, v in fleet.remote_commands().items()}
    assert ran == {m.name: 1 for m in fleet.machines}
    fleet.done.add("overhead")


def test_destroy_puts_docker_and_containerd_configs_back(fleet: Fleet) -> None:
    fleet.require("up")
    run = fleet.stack.pulumi("destroy", "--yes", events=True).check()
    record("destroy", run)

    ops = run.ops(COMMAND)
    measured = [f"{m.name}-overhead" for m in fleet.machines] if "overhead" in fleet.done else []
    assert ops == {name: {"delete"} for name in [*fleet.commands(), *measured]}
    assert not fleet.stack.checkpoint()["checkpoint"].get("latest", {}).get("resources")
    for m in fleet.machines:
        assert snapshot(m) == fleet.as_found[m.name], f"{m.name} differs from before `pulumi up`"
        assert m.read("/etc/containerd/config.toml") == ssh_machines.USER_CONTAINERD_TOML.encode()
        assert m.read("/etc/containerd/runsc.toml") == ssh_machines.USER_RUNSC_TOML.encode()
        assert "runsc" not in docker_runtimes(m)
        # The copied agent script and its folder are gone too.
        assert m.sandbox.sh("ls -A /root").split() == fleet.as_found_home[m.name]
    fleet.done.add("destroy")


def test_no_private_key_in_state_or_engine_output(fleet: Fleet) -> None:
    fleet.require("up")
    shown = fleet.stack.pulumi("config", "--show-secrets", "--json").check()
    secret_values = [str(v["value"]) for v in json.loads(shown.stdout).values() if v.get("secret")]
    assert fleet.key.private_text.strip() in [s.strip() for s in secret_values]

    texts: list[tuple[str, str]] = []
    files = [*fleet.stack.state_files(), *fleet.checkpoints, *fleet.stack.logs.iterdir(), fleet.stack.config_file]
    texts += [(str(p), p.read_text(errors="replace")) for p in files]
    texts += [(f"`pulumi {' '.join(r.args)}` output", r.output) for r in fleet.stack.runs if r is not shown]
    assert not pulumi_stack.leaks(secret_values, texts)
    # The scan itself finds the key where state would hold it (JSON-escaped).
    assert pulumi_stack.leaks(secret_values, [("probe", json.dumps({"privateKey": fleet.key.private_text}))])
    # The key is there, encrypted: each step's connection is a secret in the state.
    resources = json.loads(fleet.checkpoints[0].read_text())["checkpoint"]["latest"]["resources"]
    for res in resources:
        if res["type"] == COMMAND:
            connection = res["outputs"]["connection"]
            assert pulumi_stack.secret_values(connection) and "ciphertext" in connection, res["urn"]
