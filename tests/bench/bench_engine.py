"""Benchmark (not a test): the real Pulumi engine against 1 and against 4 SSH test machines.

For each fleet size, a fresh stack (the end-to-end tests' machines and stack,
see tests/e2e/ssh_machines.py) goes through preview, up, a no-op up and destroy.
Writes tests/bench/results/engine.json with, per fleet size:
- seconds: wall time of each `pulumi` command (median over --repeat rounds),
  and spread: min/median/max over the rounds (on a shared 2-core machine the
  rounds can differ 2-3x, so the median alone would hide it);
- remote_commands_per_machine: commands run over SSH on each machine during
  each `pulumi` command (each machine's sshd logs every one);
ratio_4_to_1 per command, and for fleets of more than one machine a second
up with `--parallel 1` (one resource operation at a time, then destroyed):
parallel_speedup = that serial up / the default up. On 2 cores the machines'
installs (unpacking, first sandboxes) compete for CPU, so a 4-machine up
takes longer than a 1-machine up even when all machines converge at once;
the serial up shows what one-after-the-other would cost.

    .venv/bin/python -m tests.bench.bench_engine [--machines 1,4] [--repeat 1]

Needs root and what tests/setup.sh installs (as the end-to-end tests do).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.e2e import pulumi_stack, ssh_machines
from tests.support import mirror, toolchain
from tests.support.image import make_image_tar
from tests.support.mirror import Releases

RESULTS = Path(__file__).parent / "results" / "engine.json"
PHASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("preview", ("preview",)),
    ("up", ("up", "--yes")),
    ("no-op up", ("up", "--yes", "--expect-no-changes")),
    ("destroy", ("destroy", "--yes")),
)
SERIAL: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("up --parallel 1", ("up", "--yes", "--parallel", "1")),
    ("destroy after serial up", ("destroy", "--yes")),
)


@dataclass
class Round:
    machine_setup_seconds: float
    seconds: dict[str, float]
    remote_commands_per_machine: dict[str, dict[str, int]]


def one_round(count: int, work: Path, key: ssh_machines.KeyPair, image_tar: Path, releases: Releases) -> Round:
    start = time.monotonic()
    machines = ssh_machines.start_machines(count, work / "machines", key, image_tar)
    setup = time.monotonic() - start
    try:
        stack = pulumi_stack.Stack(work / "stack")
        stack.init(pulumi_stack.stack_config(machines, releases, containerd=False), key.private_text)
        result = Round(round(setup, 2), {}, {})
        for phase, args in PHASES + (SERIAL if count > 1 else ()):
            before = {m.name: m.remote_commands() for m in machines}
            run = stack.pulumi(*args).check()
            result.seconds[phase] = round(run.seconds, 2)
            ran = {m.name: m.remote_commands() - before[m.name] for m in machines}
            result.remote_commands_per_machine[phase] = ran
            print(f"  {count} machine(s): {phase} {run.seconds:.1f}s, remote commands {ran}", flush=True)
        return result
    finally:
        for m in machines:
            m.close()


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": round(statistics.median(values), 2), "max": max(values)}


def plugin_versions(bin_dir: Path) -> dict[str, str]:
    """The plugins the engine runs, as `pulumi plugin ls` lists them, and the language host's own version."""
    pulumi = [str(bin_dir / "pulumi"), "plugin", "ls", "--json"]
    listed = subprocess.run(pulumi, env=toolchain.pulumi_env(), capture_output=True, text=True, check=True)
    plugins = {f"{p['kind']}/{p['name']}": p["version"] for p in json.loads(listed.stdout or "[]")}
    host = bin_dir / "pulumi-language-python"
    if host.exists():
        reported = subprocess.run([str(host), "-version"], capture_output=True, text=True, check=True)
        plugins["language/python"] = reported.stdout.strip()
    return dict(sorted(plugins.items()))


def engine_and_mirror(tool: str) -> tuple[Path, Releases, dict[str, object]] | None:
    """The engine (built or cached), the release mirror, and what the results record of both; None if missing."""
    why = ssh_machines.missing_prerequisites()
    if why:
        print(f"{tool}: cannot run: {why}", file=sys.stderr)
        return None
    bin_dir = toolchain.build_pulumi()
    engine = subprocess.run([str(bin_dir / "pulumi"), "version"], capture_output=True, text=True).stdout.strip()
    described: dict[str, object] = {
        "engine": f"pulumi {engine} (file backend, passphrase secrets)",
        "plugins": plugin_versions(bin_dir),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
    }
    return bin_dir, mirror.prepare_mirror(), described


def write_results(out: Path, results: dict[str, object]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--machines", default="1,4", help="fleet sizes, comma-separated (default 1,4)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds per fleet size; the median is kept")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    ready = engine_and_mirror("bench_engine")
    if ready is None:
        return 2
    _, releases, results = ready
    sizes = [int(n) for n in args.machines.split(",")]
    results.update(
        {
            "repeat": args.repeat,
            # Other work on the machine skews wall times: the 1-minute load when the run started.
            "load_average_at_start": round(os.getloadavg()[0], 2),
        }
    )
    fleets: dict[str, dict[str, object]] = {}
    medians: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        work = Path(tmp)
        key = ssh_machines.make_key(work / "client" / "id_ed25519", "gvisor-fleet-bench")
        image_tar = make_image_tar(work / "busybox-rootfs.tar")
        for count in sizes:
            rounds = [one_round(count, work / f"{count}-{i}", key, image_tar, releases) for i in range(args.repeat)]
            medians[count] = {
                phase: round(statistics.median(r.seconds[phase] for r in rounds), 2) for phase in rounds[0].seconds
            }
            fleets[str(count)] = {
                "seconds": medians[count],
                "spread": {phase: spread([r.seconds[phase] for r in rounds]) for phase in rounds[0].seconds},
                "remote_commands_per_machine": rounds[-1].remote_commands_per_machine,
                "machine_setup_seconds": rounds[-1].machine_setup_seconds,
                "rounds": [r.seconds for r in rounds],
            }
            if "up --parallel 1" in medians[count]:
                speedup = medians[count]["up --parallel 1"] / medians[count]["up"]
                fleets[str(count)]["parallel_speedup"] = round(speedup, 2)
    results["load_average_at_end"] = round(os.getloadavg()[0], 2)
    results["fleets"] = fleets
    if 1 in medians and 4 in medians:
        results["ratio_4_to_1"] = {
            phase: round(medians[4][phase] / medians[1][phase], 2) for phase, _ in PHASES if medians[1][phase]
        }
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
