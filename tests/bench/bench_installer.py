"""Benchmark (not a test): the in-cluster node installer, from `pulumi up` to every node verified.

Brings up the cluster tier's installer stack (tests/cluster/installer_stack.py:
a one-node Kubernetes 1.37 cluster whose containerd has no gVisor runtime, a
stack with no machines and `kubernetes.nodeInstaller` on, the real engine and
the upstream pulumi-kubernetes provider) and writes
tests/bench/results/installer.json. Each round, on a node as found (every
round after the first follows a `pulumi destroy`, which puts the node back):

- per node, `up` start to the node's GvisorVerified Event (the installer
  verified it and labelled it), and the installer DaemonSet's creation to
  that Event (the API server's clock, whole seconds, on this machine);
- the whole `pulumi up` command (the engine also waits for the sample pod and
  the verification Job under runsc);
- a node that joins later (tests/cluster/installer_stack.py's
  node_joins_anew): its kubelet's start to Ready, and Ready to verified, with
  no `up`;
- `pulumi destroy` (the cleanup DaemonSet puts the node back first).

    .venv/bin/python -m tests.bench.bench_installer [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.cluster.installer_stack import (
    WATCHED,
    Live,
    daemonset_created,
    installer_stack,
    missing_tools,
    node_joins_anew,
    verified_at,
)
from tests.cluster.live_stack import missing_prerequisites
from tests.cluster.node import NODE
from tests.support.mirror import MIRROR_ROOT, build_mirror, debian_runsc
from tests.support.toolchain import containerd2_dir, gvisor_dir

RESULTS = Path(__file__).parent / "results" / "installer.json"


def one_round(live: Live) -> dict[str, float]:
    c = live.cluster
    started = time.time()
    run = live.stack.pulumi("up", "--yes", "--skip-preview", timeout=1200).check()
    verification: Any = live.stack.outputs()["kubernetesVerification"]
    if not all(result["passed"] for result in verification.values()):
        raise SystemExit(f"bench_installer: verification did not pass: {verification}")
    created = daemonset_created(c)
    verified = verified_at(c, created)
    ready, joined_to_verified = node_joins_anew(live)
    destroy = live.stack.pulumi("destroy", "--yes", "--skip-preview", timeout=900).check()
    if {p: c.node.read(p) for p in WATCHED} != live.as_found:
        raise SystemExit("bench_installer: destroy did not put the node back as found")
    return {
        "up_to_verified": verified - started,
        "daemonset_to_verified": verified - created,
        "up": run.seconds,
        "joined_node_ready": ready,
        "joined_node_ready_to_verified": joined_to_verified,
        "destroy": destroy.seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    why = missing_prerequisites() or missing_tools()
    if why:
        raise SystemExit(f"bench_installer: {why}")
    releases = build_mirror(MIRROR_ROOT, gvisor_dir(), debian_runsc())
    rounds: list[dict[str, float]] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-installer-") as tmp,
        installer_stack(Path(tmp), releases, containerd2_dir()) as live,
    ):
        for _ in range(args.rounds):
            rounds.append(one_round(live))
    figures = {key: [round(r[key], 1) for r in rounds] for key in rounds[0]}
    result = {
        "cores": os.cpu_count(),
        "load_average_1m": {"start": round(load_at_start, 1), "end": round(os.getloadavg()[0], 1)},
        "release": releases.current,
        "kubernetes": "v1.37.2",
        "nodes": [NODE],
        "rounds": len(rounds),
        "seconds": {NODE: figures},
        "median_seconds": {NODE: {key: round(statistics.median(v), 1) for key, v in figures.items()}},
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
