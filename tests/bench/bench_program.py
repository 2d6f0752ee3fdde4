"""Benchmark (not a test): what the program declares per machine, and how its evaluation scales.

Writes tests/bench/results/program.json with
- remote_commands_per_host_in_graph: the remote.Command steps the resource
  graph declares for one machine (Docker and containerd both on), counted
  under Pulumi mocks. Each runs once over SSH on a first `pulumi up`; what a
  real run does over SSH is counted from sshd's log by bench_engine;
- eval_seconds: wall time to evaluate the whole program under Pulumi mocks
  for 2, 20 and 200 machines: min, median and max over the rounds (on a
  shared machine rounds differ by 2-3x), every round, and median per machine;
- skeleton: the same 200-machine evaluation against a bare skeleton that
  registers exactly the resources the program registered (types, names,
  parents, inputs, dependencies), in the same order, with no program logic,
  rounds interleaved so both see the same load; program_over_skeleton is the
  ratio of their medians (goal: at most 1.5), i.e. what the program itself
  adds to what the SDK and engine need for its resources anyway. The
  skeleton registers the command provider's resources through its own
  classes, as any program must (`remote.Command` makes every connection an
  Output secret, which costs the SDK more than the rest of a registration);
  `generic_skeleton` registers everything as plain `CustomResource`s with
  resolved inputs, a floor no program using the provider can reach;
- the CPU count and 1-minute load average around the run, since other work
  on the machine skews wall times.

    .venv/bin/python -m tests.bench.bench_program [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import rpc
from pulumi.runtime.config import set_all_config
from pulumi_command import remote

from components.fleet.keys import generate_ed25519
from components.program import build
from tests.unit.mocks import RecordingMocks, RecordingMonitor, use

RESULTS = Path(__file__).parent / "results" / "program.json"
KEY = generate_ed25519("bench").private_key
SIZES = (2, 20, 200)
SKELETON_SIZE = 200


@dataclass(frozen=True)
class Registration:
    """One resource as the program registered it."""

    urn: str
    type: str
    name: str
    custom: bool
    parent: str  # URN (the stack's for top-level resources)
    dependencies: tuple[str, ...]  # URNs
    inputs: dict[str, Any]


class Recorder(RecordingMonitor):
    """The mock monitor, also keeping every registration in order, for the skeleton to replay."""

    registrations: list[Registration]

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            # Registrations run on threads: find this one's inputs by its name, not by order.
            mine = (r for r in reversed(self.mocks.resources) if (r.name, r.typ) == (request.name, request.type))
            inputs = next(mine).inputs
            self.registrations.append(
                Registration(
                    response.urn,
                    request.type,
                    request.name,
                    bool(request.custom),
                    request.parent,
                    tuple(request.dependencies),
                    inputs,
                )
            )
        return response


def configure(machines: int) -> None:
    specs = [
        {"name": f"m{i}", "address": f"10.0.22.{i % 250 + 1}", "port": 22, "arch": "x86_64"} for i in range(machines)
    ]
    set_all_config(
        {"gvisor-fleet:machines": json.dumps(specs), "gvisor-fleet:sshPrivateKey": KEY},
        secret_keys=["gvisor-fleet:sshPrivateKey"],
    )


def record(machines: int) -> list[Registration]:
    """What the program registers for a fleet of this size."""
    mocks = RecordingMocks()
    monitor = Recorder(mocks)
    monitor.registrations = []
    pulumi.runtime.set_mocks(mocks, project="gvisor-fleet", stack="bench", preview=False, monitor=monitor)
    configure(machines)

    @pulumi.runtime.test
    def run() -> pulumi.Output[object]:
        return pulumi.Output.all(*build(pulumi.Config("gvisor-fleet")).outputs().values())

    run()
    return monitor.registrations


# The provider's own classes, for the resources it serves.
TYPED: dict[str, type[pulumi.CustomResource]] = {
    "command:remote:Command": remote.Command,
    "command:remote:CopyToRemote": remote.CopyToRemote,
}


def _unwrapped(value: Any) -> Any:
    """A recorded input with its secret markers removed (the classes mark what they must)."""
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            return _unwrapped(value["value"])
        return {k: _unwrapped(v) for k, v in value.items()}
    return value


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _typed(r: Registration, opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    """The command provider's resource through its class, with the recorded (resolved) inputs."""
    kwargs = {_snake(k): _unwrapped(v) for k, v in r.inputs.items()}
    if "connection" in kwargs:
        kwargs["connection"] = remote.ConnectionArgs(**{_snake(k): v for k, v in kwargs["connection"].items()})
    return TYPED[r.type](r.name, opts=opts, **kwargs)


def evaluate_skeleton(registrations: list[Registration], typed: bool = True) -> float:
    """Registers the same resources with no program logic; the wall time.

    typed: the command provider's resources through its classes (else all as
    plain CustomResources)."""
    use(RecordingMocks(), stack="bench")

    @pulumi.runtime.test
    def run() -> pulumi.Output[object]:
        made: dict[str, pulumi.Resource] = {}
        for r in registrations:
            opts = pulumi.ResourceOptions(
                parent=made.get(r.parent), depends_on=[made[d] for d in r.dependencies if d in made]
            )
            res: pulumi.Resource
            if typed and r.type in TYPED:
                res = _typed(r, opts)
            elif r.custom:
                res = pulumi.CustomResource(r.type, r.name, dict(r.inputs), opts)
            else:
                res = pulumi.ComponentResource(r.type, r.name, None, opts)
            made[r.urn] = res
        return pulumi.Output.all(*[res.urn for res in made.values()])

    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def evaluate(machines: int) -> tuple[float, RecordingMocks]:
    mocks = use(RecordingMocks(), stack="bench")
    configure(machines)

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
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="fleet sizes (default 2,20,200)")
    args = parser.parse_args(argv)

    _, mocks = evaluate(2)
    # Steps that run something on up (the agent folder's remover only deletes, on destroy).
    commands = [r.name.split("-", 1) for r in mocks.of_type("command:remote:Command") if r.inputs.get("create")]
    per_host = Counter(host for host, _ in commands)
    results: dict[str, object] = {
        # In the order they were declared (the order they run in; see test_host_graph).
        "remote_commands_per_host_in_graph": {"count": per_host["m0"], "steps": [s for h, s in commands if h == "m0"]},
        "cpus": os.cpu_count(),
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }
    sizes = [int(n) for n in args.sizes.split(",")]
    results["eval_seconds"] = {str(n): spread([evaluate(n)[0] for _ in range(args.rounds)], n) for n in sizes}
    registrations = record(SKELETON_SIZE)
    program_rounds, skeleton_rounds, generic_rounds = [], [], []
    for _ in range(args.rounds):  # interleaved: all see the same load
        # What earlier rounds left on the heap would otherwise slow whichever runs next
        # (the collector walks it): collect, and keep what survives out of later collections.
        for rounds, evaluation in (
            (program_rounds, lambda: evaluate(SKELETON_SIZE)[0]),
            (skeleton_rounds, lambda: evaluate_skeleton(registrations)),
            (generic_rounds, lambda: evaluate_skeleton(registrations, typed=False)),
        ):
            gc.collect()
            gc.freeze()
            rounds.append(evaluation())
    program = statistics.median(program_rounds)
    results["skeleton"] = {
        "machines": SKELETON_SIZE,
        "resources": len(registrations),
        "program": spread(program_rounds, SKELETON_SIZE),
        "skeleton": spread(skeleton_rounds, SKELETON_SIZE),
        "generic_skeleton": spread(generic_rounds, SKELETON_SIZE),
        "program_over_skeleton": round(program / statistics.median(skeleton_rounds), 2),
        "program_over_generic_skeleton": round(program / statistics.median(generic_rounds), 2),
    }
    results["load_average_at_end"] = round(os.getloadavg()[0], 2)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
