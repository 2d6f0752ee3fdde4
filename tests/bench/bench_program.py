"""Benchmark (not a test): what one converge costs, and how the program scales.

Writes tests/bench/results/program.json with
- ssh_sessions_per_host: remote commands (one SSH session each) that a full
  converge of one machine runs, counted from the resource graph;
- eval_seconds: time to evaluate the whole program under Pulumi mocks for
  2, 20 and 200 machines (median of 3), and the per-machine cost.

    .venv/bin/python -m tests.bench.bench_program
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from pathlib import Path

import pulumi
from pulumi.runtime.config import set_all_config

from components.fleet.keys import generate_ed25519
from components.program import build
from tests.unit.mocks import RecordingMocks

RESULTS = Path(__file__).parent / "results" / "program.json"
KEY = generate_ed25519("bench").private_key


def evaluate(machines: int) -> tuple[float, RecordingMocks]:
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="gvisor-fleet", stack="bench", preview=False)
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


def main() -> None:
    _, mocks = evaluate(2)
    per_host = Counter(r.name.split("-", 1)[0] for r in mocks.of_type("command:remote:Command"))
    results: dict[str, object] = {"ssh_sessions_per_host": per_host["m0"], "eval_seconds": {}}
    for n in (2, 20, 200):
        median = statistics.median(evaluate(n)[0] for _ in range(3))
        results["eval_seconds"][str(n)] = {"total": round(median, 3), "per_machine": round(median / n, 4)}  # type: ignore[index]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
