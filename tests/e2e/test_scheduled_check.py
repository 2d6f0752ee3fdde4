"""The scheduled check (.github/scheduled_check.py) under the real engine.

Two SSH test machines (containerd 2) get gVisor pinned to the mirror's
current release; the mirror, served on the machine running Pulumi too, also
holds newer dated releases. The check's own commands then run against the
stack, as the scheduled workflow runs them: with no drift it reports only
the newer release; with the runsc binary changed and runsc.toml removed on
the first machine it names that machine and both items, and nothing on the
other; with the second machine unreachable it reports the SSH failure. No
login key reaches the report.

With GVISOR_FLEET_RECORD=1 the commands' output is written to
tests/unit/recorded/scheduled-check/, which the unit tests replay.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import pulumi_stack, ssh_machines
from tests.e2e.pulumi_stack import Stack, record
from tests.e2e.ssh_machines import KeyPair, Machine
from tests.support import toolchain
from tests.support.loopback import Server
from tests.support.mirror import MIRROR_PORT, MIRROR_ROOT, Releases
from tests.support.scheduled_check import RECORDED, script

pytestmark = pytest.mark.e2e


@dataclass
class Checked:
    machines: list[Machine]
    stack: Stack
    key: KeyPair
    releases: Releases


def kind(argv: Sequence[str]) -> str:
    if "--refresh" in argv:
        return "drift"
    return "latest" if "--config-file" in argv else "outputs"


def runner_for(stack: Stack, phase: str) -> Callable[[Sequence[str]], subprocess.CompletedProcess[str]]:
    """Runs the check's pulumi commands in the stack's environment; records them when asked."""

    def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        start = time.monotonic()
        done = subprocess.run(list(argv), env=stack.env, capture_output=True, text=True, timeout=900, check=False)
        took = time.monotonic() - start
        record(f"scheduled check: {phase} {kind(argv)}", pulumi_stack.Run(list(argv), done.returncode, "", "", took))
        # The unit tests replay the clean run's three commands and the drift preview of the others.
        if os.environ.get("GVISOR_FLEET_RECORD") == "1" and (phase == "clean" or kind(argv) == "drift"):
            RECORDED.mkdir(parents=True, exist_ok=True)
            stdout: object = json.loads(done.stdout) if done.stdout.strip().startswith("{") else done.stdout
            entry = {"returncode": done.returncode, "stdout": stdout, "stderr": done.stderr}
            (RECORDED / f"{phase}.{kind(argv)}.json").write_text(json.dumps(entry, indent=1) + "\n")
        return done

    return run


@pytest.fixture(scope="module")
def checked(
    engine: Path, mirror: Releases, image_tar: Path, client_key: KeyPair, fleet_work: Path
) -> Iterator[Checked]:
    containerd2 = toolchain.build_containerd2()
    try:
        # `latest` is resolved on the machine running Pulumi: the mirror at the address the stack names.
        server = Server(MIRROR_ROOT, port=MIRROR_PORT)
    except OSError as err:
        pytest.skip(f"port {MIRROR_PORT} is taken on this machine ({err})")
    machines = ssh_machines.start_machines(2, fleet_work / "machines", client_key, image_tar, containerd2, prefix="s")
    try:
        stack = Stack(fleet_work / "stack")
        stack.init(pulumi_stack.stack_config(machines, mirror, containerd=True), client_key.private_text)
        stack.pulumi("up", "--yes").check()
        yield Checked(machines, stack, client_key, mirror)
    finally:
        for m in machines:
            m.close()
        server.close()


def report(checked: Checked, phase: str) -> tuple[Any, str]:
    check = script()
    (findings,) = [
        check.findings(check.check_stack(checked.stack.name, checked.stack.dir, runner_for(checked.stack, phase)))
    ]
    body = check.render([findings], "now", None, [checked.stack.passphrase])
    assert not pulumi_stack.leaks([checked.key.private_text, checked.stack.passphrase], [("report", body)])
    return findings, body


def newest_for_x86_64(releases: Releases) -> str:
    """What `latest` resolves to on the mirror: the newest dated release with a published x86_64 checksum."""
    check = script()
    names = [p.name for p in MIRROR_ROOT.iterdir() if (p / "x86_64").is_dir() and check.DATED.match(p.name)]
    return max(names, key=check.release_key)


def test_no_drift_reports_only_the_newer_release(checked: Checked) -> None:
    findings, body = report(checked, "clean")
    newest = newest_for_x86_64(checked.releases)
    assert findings.errors == [] and findings.drift == [] and findings.other_changes == {}, body
    assert findings.newer is not None, body
    assert findings.newer.release == newest and findings.newer.running == checked.releases.current
    assert findings.newer.configured == checked.releases.current
    assert findings.newer.machines == sorted(m.name for m in checked.machines)
    assert f"**A newer gVisor release**: {newest}; the stack runs {checked.releases.current}." in body


def test_items_changed_by_hand_are_named_with_their_machine(checked: Checked) -> None:
    first, other = checked.machines
    first.sandbox.sh("printf x >> /usr/local/bin/runsc && rm /etc/containerd/runsc.toml")
    findings, body = report(checked, "drift")
    assert findings.errors == [], body
    assert [(d.machine, d.items) for d in findings.drift] == [
        (first.name, {"runscBinary": "changed by hand", "runscToml": "removed by hand"})
    ], body
    assert f"- `{first.name}`: the runsc binary (`runscBinary`, changed by hand), runsc.toml" in body
    assert other.name not in body.split("**Drift**")[1].split("**A newer")[0]


def test_an_unreachable_machine_is_reported_as_an_error(checked: Checked) -> None:
    other = checked.machines[1]
    other.close()
    findings, body = report(checked, "unreachable")
    assert findings.errors, body
    assert any(f"127.0.0.1:{other.port}" in e and "SSH failed" in e for e in findings.errors), findings.errors
    assert "**Errors**" in body and "| not known (the preview failed) |" in body
    assert "Traceback" not in body and "/tmp/" not in body, body
