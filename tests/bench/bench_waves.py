"""Benchmark (not a test): an upgrade of a fleet in waves against all at once, real engine.

For each fleet size N (default 8 and 32) it starts N cheap SSH test machines
(as bench_scale does: sandboxes with sshd, Docker and containerd off, so each
machine's steps are preflight, install and verify), installs the mirror's
release on all of them at once, then upgrades them with the upstream engine
and command provider, one `pulumi up` per case:

- a release that passes verify (the mirror's binaries repacked under a new
  name), every machine at once (`rollout: false`), then in waves: the default
  (the canary, then the rest) and `waves: ['25%']`;
- a release whose runsc refuses to run anything (tests/support/made_releases.py),
  every machine at once, then in the default waves.

Per case it writes tests/bench/results/waves.json with the wall time, the
machines whose install step ran and the ones that failed, and the most
machines without a verified runtime at any moment: a machine counts from the
start of its install step (which replaces runsc) until its verify step
passed, or until its install step failed (the install rolls back to the
release it had before it exits). The spans are the engine's own event
timestamps (whole seconds).

    .venv/bin/python -m tests.bench.bench_waves [--machines 8,32] [--parallel N]

Needs root and what tests/setup.sh installs (as the end-to-end tests do).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from tests.bench.bench_engine import engine_and_mirror, write_results
from tests.e2e import pulumi_stack, ssh_machines
from tests.e2e.pulumi_stack import Run
from tests.support import made_releases
from tests.support.image import make_image_tar
from tests.support.mirror import MIRROR_ROOT, Releases

RESULTS = Path(__file__).parent / "results" / "waves.json"
ALL_AT_ONCE: object = False
DEFAULT_WAVES: object = {}  # the setting's default: the first machine of each arch, then the rest
QUARTERS: object = {"waves": ["25%"]}


def most_unverified(run: Run, names: list[str]) -> int:
    """The most machines at any moment between their install step's start and their verify's end
    (or their install's failure): machines whose runtime was not yet verified again."""
    spans = run.step_spans()
    edges: list[tuple[int, int]] = []
    for name in names:
        install = spans.get(f"{name}-install")
        if install is None:
            continue
        verify = spans.get(f"{name}-verify")
        end = verify[1] if verify is not None and verify[1] >= install[1] else install[1]
        edges += [(install[0], 1), (end, -1)]
    most = now = 0
    # A wave starts only after the engine saw the verify of the one before end:
    # in the same whole second, the end comes first.
    for _, step in sorted(edges):
        now += step
        most = max(most, now)
    return most


def upgrade(
    stack: pulumi_stack.Stack, config: dict[str, object], names: list[str], parallel: int | None
) -> dict[str, object]:
    stack.set_config(config)
    extra = ("--parallel", str(parallel)) if parallel else ()
    run = stack.pulumi("up", "--yes", "--skip-preview", *extra, timeout=3600, events=True)
    ops, failed = run.ops(), run.failed_steps()
    return {
        "seconds": round(run.seconds, 1),
        "up_passed": run.returncode == 0,
        "installs_run": sum(1 for n in names if ops.get(f"{n}-install", set()) & {"create", "update", "replace"}),
        "machines_failed": sum(1 for n in names if {f"{n}-install", f"{n}-verify"} & failed),
        "most_without_a_verified_runtime": most_unverified(run, names),
    }


def installed(machines: list[ssh_machines.Machine]) -> dict[str, int]:
    """Release -> machines that run it, as their install state says."""
    counts: dict[str, int] = {}
    for m in machines:
        state = (m.read("/var/lib/gvisor-fleet/install.state") or b"").decode()
        release = next((line[8:] for line in state.splitlines() if line.startswith("release=")), "none")
        counts[release] = counts.get(release, 0) + 1
    return counts


def one_fleet(
    count: int, work: Path, key: ssh_machines.KeyPair, image_tar: Path, mirror: Releases, parallel: int | None
) -> dict[str, object]:
    root = work / "releases"
    shutil.copytree(MIRROR_ROOT / mirror.current, root / mirror.current)
    day = mirror.current.split(".")[0]
    made = {f"good{i}": made_releases.repacked(root / mirror.current, root, f"{day}.{10 + i}") for i in (1, 2, 3)}
    made["failing"] = made_releases.refusing(root / mirror.current, root, f"{day}.19", ("do", "run", "create"))
    cases = (
        ("first install, all at once", mirror.current, ALL_AT_ONCE),
        ("upgrade, all at once", made["good1"], ALL_AT_ONCE),
        ("upgrade, canary then the rest", made["good2"], DEFAULT_WAVES),
        ("upgrade, canary then waves of 25%", made["good3"], QUARTERS),
        ("failing upgrade, all at once", made["failing"], ALL_AT_ONCE),
        ("failing upgrade, canary then the rest", made["failing"], DEFAULT_WAVES),
    )
    machines = ssh_machines.start_machines(count, work / "machines", key, image_tar, daemons=False)
    names = [m.name for m in machines]
    results: dict[str, object] = {}
    try:
        stack = pulumi_stack.Stack(work / "stack")
        base = {"docker": "off", "baseUrl": root.as_uri()}
        stack.init(pulumi_stack.stack_config(machines, mirror, containerd=False, overrides=base), key.private_text)
        for label, release, rollout in cases:
            config = pulumi_stack.stack_config(
                machines, mirror, containerd=False, overrides={**base, "release": release, "rollout": rollout}
            )
            result = upgrade(stack, config, names, parallel)
            result["releases_after"] = installed(machines)
            results[label] = result
            print(f"  {count} machines: {label}: {result}", flush=True)
        return results
    finally:
        for m in machines:
            m.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--machines", default="8,32", help="fleet sizes, comma-separated (default 8,32)")
    parser.add_argument("--parallel", type=int, default=None, help="pulumi --parallel for each up")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    ready = engine_and_mirror("bench_waves")
    if ready is None:
        return 2
    _, mirror, results = ready
    results |= {
        "parallel": args.parallel or "engine default",
        "steps_per_machine": "preflight, install, verify (Docker and containerd off)",
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }
    fleets: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="bench-waves-") as tmp:
        work = Path(tmp)
        key = ssh_machines.make_key(work / "client" / "id_ed25519", "gvisor-fleet-bench")
        image_tar = make_image_tar(work / "busybox-rootfs.tar")
        for count in (int(n) for n in args.machines.split(",")):
            fleets[str(count)] = one_fleet(count, work / str(count), key, image_tar, mirror, args.parallel)
    results["fleets"] = fleets
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
