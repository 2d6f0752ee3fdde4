"""Benchmark (not a test): the program's Kubernetes layer on one real node.

Brings up the cluster tier's live stack (tests/cluster/live_stack.py: an SSH
test machine that is the node of a one-node Kubernetes 1.37 cluster, the
program's stack with `cluster: existing` through the real engine and the
upstream pulumi-kubernetes provider) and writes tests/bench/results/kube.json:

- up_to_jobs_complete_seconds: per run, from `pulumi up` start to the last
  verification Job's `completionTime` (the API server's clock, whole
  seconds) on a node the program has not touched yet (each run after the
  first follows a `pulumi destroy`, which restores the node): host layer
  (runsc installed from the local mirror, containerd configured, verified),
  node label, RuntimeClass, namespace, sample pod, Jobs; plus the whole
  `pulumi up` command's time (the engine also waits for the Jobs);
- pod_start_seconds[runtime]: on the same node after the last up, the same
  busybox pod created N times under a RuntimeClass whose handler is the
  agent's runtime and N times without one (runc), alternating, from apply
  until the pod is Running and its container has printed its first line;
- medians, and the runsc/runc ratio (the machine is shared, so the ratio is
  the figure to compare across runs);
- cluster_start_seconds: sandbox to node Ready (host layer not included: the
  stack converges it).

    .venv/bin/python -m tests.bench.bench_kube [--up-runs N] [--samples N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.cluster.live_stack import NAMESPACE, Deployment, live_stack, missing_prerequisites
from tests.cluster.node import RUNTIME, Cluster
from tests.cluster.probe_pods import apply, probe_pod, runtime_class
from tests.support.mirror import MIRROR_ROOT, build_mirror, debian_runsc
from tests.support.toolchain import containerd2_dir, gvisor_dir
from tests.support.wait import wait_until

RESULTS = Path(__file__).parent / "results" / "kube.json"
VERIFICATION_JOBS = "app.kubernetes.io/component=verification"


def start_seconds(cluster: Cluster, name: str, runtime_class_name: str | None) -> float:
    start = time.monotonic()
    apply(cluster, probe_pod(name, runtime_class_name))

    def running_with_output() -> bool:
        status = cluster.kubectl_json("get", "pod", name, "-n", "default")["status"]
        running = status.get("phase") == "Running"
        return running and bool(cluster.kubectl("logs", "-n", "default", name, check=False).stdout.strip())

    if wait_until(running_with_output, 180, 0.1):
        elapsed = time.monotonic() - start
        cluster.kubectl("delete", "pod", "-n", "default", name, "--wait=true")
        return elapsed
    raise SystemExit(f"bench_kube: pod {name} did not start in 180 s")


def completed_at(job: dict[str, Any]) -> float:
    stamp = job.get("status", {}).get("completionTime")
    if not stamp:
        raise SystemExit(f"bench_kube: Job {job['metadata']['name']} did not complete: {job.get('status')}")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def up_to_jobs_complete(d: Deployment) -> dict[str, float]:
    """One `pulumi up` on an untouched node; when every verification Job completed, from its start."""
    start = time.time()
    run = d.stack.pulumi("up", "--yes", "--skip-preview", timeout=1200).check()
    verification: Any = d.stack.outputs()["kubernetesVerification"]
    if not all(result["passed"] for result in verification.values()):
        raise SystemExit(f"bench_kube: verification did not pass: {verification}")
    jobs = d.cluster.kubectl_json("get", "jobs", "-n", NAMESPACE, "-l", VERIFICATION_JOBS)["items"]
    if len(jobs) != len(verification):
        raise SystemExit(f"bench_kube: {len(jobs)} verification Jobs for {sorted(verification)}")
    return {"jobs_complete": max(completed_at(j) for j in jobs) - start, "up": run.seconds}


def destroy(d: Deployment) -> None:
    """Back to an untouched node: the stack's objects gone (namespace included), the host restored."""
    d.stack.pulumi("destroy", "--yes", "--skip-preview", timeout=900).check()
    if not wait_until(lambda: d.cluster.kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0, 120, 1):
        raise SystemExit(f"bench_kube: namespace {NAMESPACE} still there 120 s after destroy")


def median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--up-runs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=7)
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    why = missing_prerequisites()
    if why:
        raise SystemExit(f"bench_kube: {why}")
    containerd = containerd2_dir()
    releases = build_mirror(MIRROR_ROOT, gvisor_dir(), debian_runsc())
    ups: list[dict[str, float]] = []
    samples: dict[str, list[float]] = {"runsc": [], "runc": []}
    with tempfile.TemporaryDirectory(prefix="bench-kube-") as tmp:
        begin = time.monotonic()
        with live_stack(Path(tmp), releases, containerd) as d:
            ready = time.monotonic() - begin
            for i in range(args.up_runs):
                if i:
                    destroy(d)
                ups.append(up_to_jobs_complete(d))
            apply(d.cluster, runtime_class("bench-runsc", RUNTIME))
            for i in range(args.samples):
                samples["runsc"].append(start_seconds(d.cluster, f"bench-runsc-{i}", "bench-runsc"))
                samples["runc"].append(start_seconds(d.cluster, f"bench-runc-{i}", None))
    medians = {k: median(v) for k, v in samples.items()}
    result = {
        "cores": os.cpu_count(),
        "load_average_1m": {"start": round(load_at_start, 1), "end": round(os.getloadavg()[0], 1)},
        "release": releases.current,
        "kubernetes": "v1.37.2",
        "cluster_start_seconds": round(ready, 1),
        "up_runs": len(ups),
        "up_to_jobs_complete_seconds": [round(u["jobs_complete"], 1) for u in ups],
        "up_to_jobs_complete_median_seconds": median([u["jobs_complete"] for u in ups]),
        "up_command_seconds": [round(u["up"], 1) for u in ups],
        "up_command_median_seconds": median([u["up"] for u in ups]),
        "pod_start_samples": args.samples,
        "pod_start_seconds": {k: [round(x, 2) for x in v] for k, v in samples.items()},
        "pod_start_median_seconds": medians,
        "runsc_over_runc": round(medians["runsc"] / medians["runc"], 2),
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
