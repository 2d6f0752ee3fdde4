"""Drift under the real engine: each item changed by hand on one machine, named by
`pulumi preview --refresh` and `pulumi refresh`, put right by `pulumi up`.

Two SSH test machines (containerd 2, see ssh_machines.py) get gVisor with
Docker and containerd; then, item by item, the first machine is edited by hand
(the runsc or shim binary, Docker's runtime entry, the containerd block,
runsc.toml). The preview must name that machine's check and the item and
nothing on the other machine; `up` must bring the file back byte for byte.
A plain no-op `up` opens no SSH session; with no drift `--expect-no-changes`
passes; the login key never shows in the state or the output.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from components.gvisor.drift import ITEMS
from tests.e2e import pulumi_stack, ssh_machines
from tests.e2e.pulumi_stack import Run, Stack, record
from tests.e2e.ssh_machines import KeyPair, Machine, snapshot
from tests.support import toolchain
from tests.support.image import TEST_IMAGE
from tests.support.mirror import Releases

pytestmark = pytest.mark.e2e

CHECK = "pulumi-python:dynamic:Resource"
# A hand edit per item, and the file it changes.
TAMPER = {
    "runscBinary": ("/usr/local/bin/runsc", "printf x >> /usr/local/bin/runsc"),
    "shimBinary": ("/usr/local/bin/containerd-shim-runsc-v1", "printf x >> /usr/local/bin/containerd-shim-runsc-v1"),
    "dockerRuntime": (
        "/etc/docker/daemon.json",
        'python3 -c \'import json; p="/etc/docker/daemon.json"; d=json.load(open(p)); '
        'd["runtimes"]["runsc"]["runtimeArgs"].append("--debug=true"); json.dump(d, open(p, "w"), indent=4)\'',
    ),
    "containerdBlock": (
        "/etc/containerd/config.toml",
        "sed -i 's/^  TypeUrl = /  TypeUrl =  /' /etc/containerd/config.toml",
    ),
    "runscToml": ("/etc/containerd/runsc.toml", "printf '# edited by hand\\n' >> /etc/containerd/runsc.toml"),
}


@dataclass
class Fleet:
    machines: list[Machine]
    stack: Stack
    key: KeyPair
    done: set[str] = field(default_factory=set)

    def require(self, step: str) -> None:
        if step not in self.done:
            pytest.skip(f"needs the '{step}' step, which failed or did not run")

    def sessions(self) -> dict[str, int]:
        return {m.name: m.remote_commands() for m in self.machines}


def diffs(run: Run) -> dict[str, set[str]]:
    """Resource name -> the inputs that differ between the state and the program, from the engine's event log."""
    found: dict[str, set[str]] = {}
    for event in run.events:
        pre = event.get("resourcePreEvent")
        if not isinstance(pre, dict):
            continue
        meta = pre.get("metadata", {})
        old, new = (meta.get(side) or {} for side in ("old", "new"))
        olds, news = old.get("inputs") or {}, new.get("inputs") or {}
        keys = {k for k in {*olds, *news} if olds.get(k) != news.get(k)} | set(meta.get("diffs") or [])
        if keys:
            found.setdefault(str(meta.get("urn", "")).rsplit("::", 1)[-1], set()).update(keys)
    return found


@pytest.fixture(scope="module")
def fleet(engine: Path, mirror: Releases, image_tar: Path, client_key: KeyPair, fleet_work: Path) -> Iterator[Fleet]:
    containerd2 = toolchain.build_containerd2()
    machines = ssh_machines.start_machines(2, fleet_work / "machines", client_key, image_tar, containerd2, prefix="d")
    try:
        stack = Stack(fleet_work / "stack")
        stack.init(pulumi_stack.stack_config(machines, mirror, containerd=True), client_key.private_text)
        yield Fleet(machines, stack, client_key)
    finally:
        for m in machines:
            m.close()


def test_up_records_each_machine_and_a_refresh_finds_no_drift(fleet: Fleet) -> None:
    run = fleet.stack.pulumi("up", "--yes", events=True).check()
    record("drift: up", run)
    assert run.ops(CHECK) == {f"{m.name}-check": {"create"} for m in fleet.machines}
    preview = fleet.stack.pulumi("preview", "--refresh", "--expect-no-changes", events=True).check()
    record("drift: preview --refresh, no drift", preview)
    before = fleet.sessions()
    noop = fleet.stack.pulumi("up", "--yes", "--expect-no-changes", events=True).check()
    assert all(op == {"same"} for op in noop.ops().values()), noop.ops()
    assert fleet.sessions() == before, "a plain no-op up must open no SSH session"
    fleet.done.add("up")


@pytest.mark.parametrize("item", list(TAMPER))
def test_an_item_changed_by_hand_is_named_and_put_right(fleet: Fleet, item: str) -> None:
    fleet.require("up")
    assert set(TAMPER) == set(ITEMS)
    first, other = fleet.machines
    path, edit = TAMPER[item]
    as_installed = snapshot(first)[path]
    other_before = snapshot(other)
    first.sandbox.sh(edit)
    assert first.read(path) != as_installed

    preview = fleet.stack.pulumi("preview", "--refresh", events=True).check()
    record(f"drift: preview --refresh ({item})", preview)
    changed = {name: ops - {"refresh"} for name, ops in preview.ops(CHECK).items()}
    assert changed == {f"{first.name}-check": {"update"}, f"{other.name}-check": {"same"}}, preview.stdout
    assert diffs(preview).get(f"{first.name}-check", set()) >= {item}, preview.stdout
    assert f"{first.name}-check update [diff: ~{item}]" in preview.stdout, preview.stdout

    refresh = fleet.stack.pulumi("refresh", "--yes", events=True).check()
    record(f"drift: refresh ({item})", refresh)
    assert f"{first.name}-check" in refresh.stdout and item in refresh.stdout, refresh.stdout

    up = fleet.stack.pulumi("up", "--yes", events=True).check()
    record(f"drift: up repairs ({item})", up)
    assert {n: ops for n, ops in up.ops(CHECK).items() if ops != {"same"}} == {f"{first.name}-check": {"update"}}
    assert first.read(path) == as_installed, f"{path} on {first.name} is not back as installed"
    assert snapshot(other) == other_before
    kernel = first.sandbox.sh("uname -r").strip()
    assert first.sandbox.sh(f"docker run --rm --runtime=runsc {TEST_IMAGE} uname -r").strip() not in ("", kernel)
    fleet.done.add(item)


def test_no_drift_is_left_and_the_key_stays_secret(fleet: Fleet) -> None:
    fleet.require("up")
    run = fleet.stack.pulumi("preview", "--refresh", "--expect-no-changes").check()
    record("drift: preview --refresh after repairs", run)

    exported = fleet.stack.pulumi("stack", "export").check().stdout
    checks = [r for r in json.loads(exported)["deployment"]["resources"] if r["type"] == CHECK]
    assert len(checks) == len(fleet.machines)
    for res in checks:
        for side in ("inputs", "outputs"):
            assert pulumi_stack.secret_values(res[side]["connection"]), (side, res["urn"])
    texts = [(str(p), p.read_text(errors="replace")) for p in fleet.stack.state_files()]
    texts += [(f"`pulumi {' '.join(r.args)}` output", r.output) for r in fleet.stack.runs]
    assert not pulumi_stack.leaks([fleet.key.private_text], texts)
