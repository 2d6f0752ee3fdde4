"""Benchmark (not a test): what the program declares per machine, and how its evaluation scales.

Writes tests/bench/results/program.json with
- remote_commands_per_host_in_graph: the remote.Command steps the resource
  graph declares for one machine (Docker and containerd both on), counted
  under Pulumi mocks. Each runs once over SSH on a first `pulumi up`; what a
  real run does over SSH is counted from sshd's log by bench_engine;
- eval_seconds: wall time to evaluate the whole program under Pulumi mocks
  for 2, 20 and 200 machines: min, median and max over the rounds (on a
  shared machine rounds differ by 2-3x), every round, and median per machine;
- the CPU count and 1-minute load average around the run, since other work
  on the machine skews wall times.

    .venv/bin/python -m tests.bench.bench_program [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import Counter
from pathlib import Path

import pulumi
from pulumi.runtime.config import set_all_config

from components.fleet.keys import generate_ed25519
from components.program import build
from tests.unit.mocks import RecordingMocks, use

RESULTS = Path(__file__).parent / "results" / "program.json"
KEY = generate_ed25519("bench").private_key
SIZES = (2, 20, 200)


def evaluate(machines: int) -> tuple[float, RecordingMocks]:
    mocks = use(RecordingMocks(), stack="bench")
    specs = [
        {"name": f"m{i}", "address": f"192.0.2.{i % 250 + 1}", "port": 22, "arch": "x86_64"} for i in range(machines)
    ]
    set_all_config(
        {"gvisor-fleet:machines": json.dumps(specs), "gvisor-fleet:sshPrivateKey": KEY},
        secret_keys=["gvisor-fleet:sshPrivateKey"],
    )

    @pulumi.runtime.test
    def run() -> pulumi.Output[object]:
        return pulumi.Output.all(*build(pulumi.Config("gvisor-fleet")).outputs().values())

    start = time.perf_counter()
    run()
    return time.perf_counter() - start, mocks


def spread(rounds: list[float], machines: int) -> dict[str, object]:
    median = statistics.median(rounds)
    return {
        "min": round(min(rounds), 3),
        "median": round(median, 3),
        "max": round(max(rounds), 3),
        "max_over_min": round(max(rounds) / min(rounds), 2),
        "median_per_machine": round(median / machines, 4),
        "rounds": [round(r, 3) for r in rounds],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5, help="evaluations per fleet size (default 5)")
    args = parser.parse_args(argv)

    _, mocks = evaluate(2)
    commands = [r.name.split("-", 1) for r in mocks.of_type("command:remote:Command")]
    per_host = Counter(host for host, _ in commands)
    results: dict[str, object] = {
        # In the order they were declared (the order they run in; see test_host_graph).
        "remote_commands_per_host_in_graph": {"count": per_host["m0"], "steps": [s for h, s in commands if h == "m0"]},
        "cpus": os.cpu_count(),
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }
    results["eval_seconds"] = {str(n): spread([evaluate(n)[0] for _ in range(args.rounds)], n) for n in SIZES}
    results["load_average_at_end"] = round(os.getloadavg()[0], 2)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
