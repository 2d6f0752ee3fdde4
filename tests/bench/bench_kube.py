"""Benchmark (not a test): pod start latency under runsc and runc on one real Kubernetes node.

Starts the cluster tier's single-node cluster (tests/cluster/node.py: the
host agent converges containerd 2, then etcd and Kubernetes 1.37), then
creates the same busybox pod N times under the RuntimeClass whose handler is
the agent's runtime and N times without one (runc), alternating, and writes
tests/bench/results/kube.json:

- pod_start_seconds[runtime]: every sample, apply until the pod is Running
  and its container has printed its first line (the kernel release);
- median per runtime and the runsc/runc ratio (the machine is shared, so the
  ratio is the figure to compare across runs);
- cluster_start_seconds: sandbox to node Ready, host layer included.

    .venv/bin/python -m tests.bench.bench_kube [--samples N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from tests.cluster.node import RUNTIME, Binaries, Cluster, kubernetes_bin
from tests.cluster.test_cluster import apply, probe_pod, runtime_class
from tests.host.conftest import CACHE, REPO
from tests.host.mirror import build_mirror

RESULTS = Path(__file__).parent / "results" / "kube.json"


def start_seconds(cluster: Cluster, name: str, runtime_class_name: str | None) -> float:
    start = time.monotonic()
    apply(cluster, probe_pod(name, runtime_class_name))
    while time.monotonic() - start < 180:
        status = cluster.kubectl_json("get", "pod", name, "-n", "default")["status"]
        running = status.get("phase") == "Running"
        if running and cluster.kubectl("logs", "-n", "default", name, check=False).stdout.strip():
            elapsed = time.monotonic() - start
            cluster.kubectl("delete", "pod", "-n", "default", name, "--wait=true")
            return elapsed
        time.sleep(0.1)
    raise SystemExit(f"bench_kube: pod {name} did not start in 180 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()
    gvisor_go = Path(os.popen(f"sh {REPO}/tests/toolchain/build-gvisor.sh --print-dir").read().strip())
    containerd = Path(os.popen(f"sh {REPO}/tests/toolchain/build-containerd.sh --print-dir").read().strip())
    releases = build_mirror(CACHE / "mirror", gvisor_go, Path(shutil.which("runsc") or "/usr/bin/runsc"))
    bins = Binaries(kubernetes=kubernetes_bin(REPO), containerd=containerd, etcd=Path(shutil.which("etcd") or ""))
    with tempfile.TemporaryDirectory(prefix="bench-kube-") as tmp:
        cluster = Cluster(Path(tmp), bins, CACHE / "mirror", releases.current)
        try:
            begin = time.monotonic()
            cluster.start()
            ready = time.monotonic() - begin
            apply(cluster, runtime_class("runsc", RUNTIME))
            samples: dict[str, list[float]] = {"runsc": [], "runc": []}
            for i in range(args.samples):
                samples["runsc"].append(start_seconds(cluster, f"bench-runsc-{i}", "runsc"))
                samples["runc"].append(start_seconds(cluster, f"bench-runc-{i}", None))
        finally:
            cluster.close()
    medians = {k: round(statistics.median(v), 2) for k, v in samples.items()}
    result = {
        "cores": os.cpu_count(),
        "release": releases.current,
        "kubernetes": "v1.37.2",
        "cluster_start_seconds": round(ready, 1),
        "pod_start_seconds": {k: [round(x, 2) for x in v] for k, v in samples.items()},
        "pod_start_median_seconds": medians,
        "runsc_over_runc": round(medians["runsc"] / medians["runc"], 2),
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
