"""Benchmark (not a test): boot-to-SSH per arch and gVisor converge time on a two-arch fleet.

Boots one x86_64 and one aarch64 VM through the qemu backend's launcher at
the same time (as `pulumi up` does), then runs the host layer's steps
(install from a local mirror after the preflight checks, Docker, containerd, verify under
runsc, Docker and containerd) on both at once, and writes
tests/bench/results/vm.json:

- boot_to_ssh_seconds[arch]: launcher start until SSH answers with the pinned key;
- converge_seconds[arch] and converge_wall_seconds (both machines in parallel);
- accel per arch, image build seconds per arch (from the image cache), cores.

With --alone, each arch is also booted by itself first (no competition for
the two cores). Needs what the VM tests need (root, QEMU, images).

    .venv/bin/python -m tests.bench.bench_vm [--alone]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

from components.gvisor.agent import checks_passed
from components.gvisor.settings import GvisorSettings
from tests.support.loopback import Server
from tests.vm.qemu_vms import (
    Vm,
    converge,
    describe_failure,
    ensure_images,
    ensure_mirror,
    missing_prerequisite,
    start_all,
)

RESULTS = Path(__file__).parent / "results" / "vm.json"


def build_seconds(images: dict[str, Path]) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for arch, d in images.items():
        text = (d / "BUILD").read_text() if (d / "BUILD").exists() else ""
        words = text.split()
        out[arch] = int(words[-1].rstrip("s")) if words and words[-1].endswith("s") else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alone", action="store_true", help="also boot each arch by itself first")
    args = parser.parse_args()
    why = missing_prerequisite()
    if why:
        raise SystemExit(f"bench_vm: {why}")
    images = ensure_images()
    root, release = ensure_mirror()
    result: dict[str, object] = {
        "cores": os.cpu_count(),
        "host_arch": platform.machine(),
        "image_build_seconds": build_seconds(images),
        "release": release,
    }
    with tempfile.TemporaryDirectory(prefix="bench-vm-") as tmp, Server(root) as server:
        work = Path(tmp)
        if args.alone:
            alone: dict[str, float] = {}
            for arch in images:
                vm = Vm(
                    name=f"bench-alone-{arch.replace('_', '-')}",
                    arch=arch,
                    images=images[arch],
                    work=work / f"alone-{arch}",
                )
                try:
                    r = vm.start()
                    assert r.returncode == 0, describe_failure(vm, r)
                    alone[arch] = round(vm.boot_seconds, 1)
                finally:
                    vm.stop()
            result["boot_to_ssh_alone_seconds"] = alone

        vms = [Vm(name=f"bench-{a.replace('_', '-')}", arch=a, images=images[a], work=work / a) for a in images]
        try:
            t0 = time.monotonic()
            started = start_all(vms)
            result["boot_both_wall_seconds"] = round(time.monotonic() - t0, 1)
            for vm in vms:
                assert started[vm.name].returncode == 0, describe_failure(vm, started[vm.name])
            result["boot_to_ssh_seconds"] = {vm.arch: round(vm.boot_seconds, 1) for vm in vms}
            result["accel"] = {vm.arch: vm.accel for vm in vms}

            settings = GvisorSettings(release=release, base_url=f"http://10.0.2.2:{server.port}")
            seconds: dict[str, float] = {}
            passed: dict[str, bool] = {}

            def run(vm: Vm) -> None:
                s = time.monotonic()
                facts = converge(vm, settings)
                seconds[vm.arch] = round(time.monotonic() - s, 1)
                passed[vm.arch] = checks_passed(facts) and facts.get("arch") == vm.arch

            t0 = time.monotonic()
            threads = [threading.Thread(target=run, args=(vm,)) for vm in vms]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            result["converge_wall_seconds"] = round(time.monotonic() - t0, 1)
            result["converge_seconds"] = seconds
            result["checks_passed"] = passed
        finally:
            for vm in vms:
                vm.stop()
    result["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if not all(passed.values()) or len(passed) != len(vms):
        raise SystemExit("bench_vm: gVisor did not converge on every machine")


if __name__ == "__main__":
    main()
