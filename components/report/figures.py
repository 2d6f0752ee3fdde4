"""Stack outputs -> the report's figures (pure: no plotting, no files).

Reads what `pulumi stack output --json` prints: `machines.<name>.overhead`
as the measurement step left it (components/overhead/scripts/measure.sh).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# figure key -> (what it is, unit shown, factor from the measured unit)
FIGURES: dict[str, tuple[str, str, float]] = {
    "start_ms": ("Container start to exit", "ms", 1.0),
    "syscall_ms": ("Syscall-heavy loop", "ms", 1.0),
    "file_ms": ("Small files and metadata", "ms", 1.0),
    "net_ms": ("Loopback TCP transfer", "ms", 1.0),
    "idle_rss_kib": ("Idle sandbox memory (RSS)", "MiB", 1 / 1024),
}
BASELINE = "runc"


@dataclass(frozen=True)
class Stat:
    median: float
    p90: float
    n: int


@dataclass(frozen=True)
class Row:
    figure: str
    runtime: str  # runsc/<platform>
    runc: Stat | None
    runsc: Stat

    @property
    def ratio(self) -> float | None:
        """How many times runc's median runsc's median is (None without a baseline)."""
        if self.runc is None or self.runc.median <= 0:
            return None
        return self.runsc.median / self.runc.median


@dataclass(frozen=True)
class MachineReport:
    name: str
    arch: str
    release: str
    runsc_version: str
    engine: str
    virt: str
    emulated: bool
    partial: bool
    rounds: int
    runs: int
    work: Mapping[str, int]
    rows: tuple[Row, ...]
    skipped: Mapping[str, str]

    @property
    def platforms(self) -> list[str]:
        return sorted({r.runtime for r in self.rows})

    def describe_work(self, figure: str) -> str:
        w = self.work
        syscall_bytes = w.get("syscall_bytes", 0)
        return {
            "start_ms": "`sh -c 'echo ok'` in a fresh container",
            "syscall_ms": f"`dd bs=1` of {syscall_bytes:,} bytes ({2 * syscall_bytes:,} syscalls)",
            "file_ms": f"create, stat, list and remove {w.get('files', 0)} files",
            "net_ms": f"{w.get('net_kib', 0) // 1024} MiB over 127.0.0.1 with busybox nc",
            "idle_rss_kib": "one container running `sleep`",
        }[figure]


class ReportError(ValueError):
    """The stack output holds nothing the report can show."""


def _stat(raw: object, factor: float) -> Stat | None:
    if not isinstance(raw, Mapping) or "median" not in raw:
        return None
    return Stat(median=float(raw["median"]) * factor, p90=float(raw.get("p90", raw["median"])) * factor,
                n=int(raw.get("n", 1)))  # fmt: skip


def machine_report(name: str, data: Mapping[str, Any]) -> MachineReport:
    runtimes: Mapping[str, Mapping[str, Any]] = data.get("runtimes") or {}
    base = runtimes.get(BASELINE, {})
    rows = []
    for runtime in sorted(r for r in runtimes if r != BASELINE):
        for figure, (_, _, factor) in FIGURES.items():
            runsc = _stat(runtimes[runtime].get(figure), factor)
            if runsc is not None:
                rows.append(Row(figure, runtime, _stat(base.get(figure), factor), runsc))
    virt = str(data.get("virt", "unknown"))
    return MachineReport(
        name=name, arch=str(data.get("arch", "?")), release=str(data.get("release", "?")),
        runsc_version=str(data.get("runsc_version", "")), engine=str(data.get("engine", "?")), virt=virt,
        # QEMU without KVM (TCG) emulates the CPU: its figures are not hardware figures.
        emulated=virt == "qemu" or data.get("accel") == "tcg",
        partial=bool(data.get("partial")), rounds=int(data.get("rounds", 0)), runs=int(data.get("runs", 0)),
        work=dict(data.get("work") or {}), rows=tuple(rows), skipped=dict(data.get("skipped") or {}),
    )  # fmt: skip


def load_reports(stack_output: Mapping[str, Any]) -> list[MachineReport]:
    """Every measured machine in a `pulumi stack output --json` document, by name."""
    machines = stack_output.get("machines")
    if not isinstance(machines, Mapping):
        raise ReportError("no 'machines' output: pass the output of `pulumi stack output --json`")
    reports = []
    for name in sorted(machines):
        overhead = machines[name].get("overhead") if isinstance(machines[name], Mapping) else None
        if isinstance(overhead, str):
            overhead = json.loads(overhead)
        if isinstance(overhead, Mapping) and overhead.get("runtimes"):
            reports.append(machine_report(name, overhead))
    if not reports:
        raise ReportError(
            "no machine has an 'overhead' output: turn the measurement on with "
            "gvisor-fleet:overhead {enabled: true} and run `pulumi up`"
        )
    return reports


def fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
