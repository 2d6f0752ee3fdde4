"""Benchmark (not a test): what one more machine costs in time and state, real engine.

For each fleet size N (default 1, 8, 32) it starts N cheap SSH test machines
(tests/e2e/ssh_machines.py sandboxes with sshd and the local release mirror; no
Docker, no containerd: the stack turns both off, so each machine runs
install, after the preflight checks, and verify), then runs, with the upstream engine and
command provider: `pulumi up`, a no-op `up --expect-no-changes`, `preview`
and `destroy`. It writes tests/bench/results/scale.json with, per N:
- seconds: wall time of each command;
- state_bytes_per_machine: `pulumi stack export` bytes after `up` / N;
- remote_sessions: SSH sessions each command opened on the machines (sshd
  logs every one: commands and SFTP copies), in total and per machine; a
  no-op up must open none;
- machine_setup_seconds and the load average, since other work on the
  machine skews wall times;
and the ratios up(N)/up(1) and noop(N)/noop(1) (goals for 32: <= 4 and <= 3).

    .venv/bin/python -m tests.bench.bench_scale [--machines 1,8,32] [--parallel N]

Needs root and what tests/setup.sh installs (as the end-to-end tests do).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.bench_engine import engine_and_mirror, write_results
from tests.e2e import pulumi_stack, ssh_machines
from tests.support.image import make_image_tar
from tests.support.mirror import Releases

RESULTS = Path(__file__).parent / "results" / "scale.json"
PHASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("up", ("up", "--yes")),
    ("no-op up", ("up", "--yes", "--expect-no-changes")),
    ("preview", ("preview",)),
    ("destroy", ("destroy", "--yes")),
)


def sessions(machine: ssh_machines.Machine) -> int:
    """SSH sessions sshd started on the machine so far (commands and SFTP)."""
    if not machine.sshd_log.exists():
        return 0
    return sum("Starting session:" in line for line in machine.sshd_log.read_text().splitlines())


def memory_available_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return -1


def one_fleet(
    count: int, work: Path, key: ssh_machines.KeyPair, image_tar: Path, releases: Releases, parallel: int | None
) -> dict[str, object]:
    memory_before = memory_available_mib()
    start = time.monotonic()
    machines = ssh_machines.start_machines(count, work / "machines", key, image_tar, daemons=False)
    setup = time.monotonic() - start
    result: dict[str, object] = {
        "machine_setup_seconds": round(setup, 1),
        # What N idle machines (sandbox, sshd listener, mirror) take from the host.
        "memory_used_by_machines_mib": memory_before - memory_available_mib(),
    }
    try:
        stack = pulumi_stack.Stack(work / "stack")
        overrides = {"docker": "off"}
        stack.init(
            pulumi_stack.stack_config(machines, releases, containerd=False, overrides=overrides), key.private_text
        )
        seconds: dict[str, float] = {}
        ran: dict[str, dict[str, int]] = {}
        extra = ("--parallel", str(parallel)) if parallel else ()
        for phase, args in PHASES:
            before = [sessions(m) for m in machines]
            argv = (*args, *extra) if args[0] in ("up", "destroy") else args
            run = stack.pulumi(*argv, timeout=3600).check()
            seconds[phase] = round(run.seconds, 2)
            opened = [sessions(m) - b for m, b in zip(machines, before, strict=True)]
            ran[phase] = {"total": sum(opened), "max_per_machine": max(opened), "min_per_machine": min(opened)}
            print(f"  {count} machine(s): {phase} {run.seconds:.1f}s, SSH sessions {ran[phase]}", flush=True)
            if phase == "up":
                exported = stack.pulumi("stack", "export").check().stdout.encode()
                result["state_bytes"] = len(exported)
                result["state_bytes_per_machine"] = round(len(exported) / count)
        result["seconds"] = seconds
        result["remote_sessions"] = ran
        return result
    finally:
        for m in machines:
            m.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--machines", default="1,8,32", help="fleet sizes, comma-separated (default 1,8,32)")
    parser.add_argument("--parallel", type=int, default=None, help="pulumi --parallel for up and destroy")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    ready = engine_and_mirror("bench_scale")
    if ready is None:
        return 2
    _, releases, results = ready
    sizes = [int(n) for n in args.machines.split(",")]
    results |= {
        "parallel": args.parallel or "engine default (pulumi up --help: 8 here)",
        "steps_per_machine": "install (after the preflight checks), verify (Docker and containerd off)",
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }
    fleets: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        key = ssh_machines.make_key(work / "client" / "id_ed25519", "gvisor-fleet-bench")
        image_tar = make_image_tar(work / "busybox-rootfs.tar")
        for count in sizes:
            fleets[str(count)] = one_fleet(count, work / str(count), key, image_tar, releases, args.parallel)
            fleets[str(count)]["load_average_after"] = round(os.getloadavg()[0], 2)
    results["fleets"] = fleets
    smallest, largest = str(min(sizes)), str(max(sizes))
    if smallest != largest:
        low, high = fleets[smallest]["seconds"], fleets[largest]["seconds"]
        assert isinstance(low, dict) and isinstance(high, dict)
        results[f"ratio_{largest}_to_{smallest}"] = {phase: round(high[phase] / low[phase], 2) for phase in low}
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
