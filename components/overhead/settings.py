"""`gvisor-fleet:overhead`: one optional config object, checked at preview.

Each key is declared once in `SETTINGS` (components/schema.py reads them).
`read_overhead` appends one line per problem, naming
`gvisor-fleet:overhead.<key>` and the fix, so components/settings.py reports
them with every other layer's; `parse_overhead_settings` raises them alone.
Either returns None when the measurement is off (the default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

from components.kinds import Choice, Flag, Obj, Whole
from components.schema import NS, Setting, SettingsError, Values, key_of

CONFIG_NAME = "overhead"
KEY = key_of(NS, CONFIG_NAME)
ENGINES = ("auto", "docker", "containerd")
BUDGET_RANGE = (30, 3600)
RUNS_RANGE = (1, 100)

Engine = Literal["auto", "docker", "containerd"]

FIELDS = (
    Setting("enabled", Flag(), "Measure gVisor's overhead on every machine after its checks.", True,
            doc_default="true (when the object is set)"),
    Setting("budget", Whole(*BUDGET_RANGE, "seconds"),
            "Seconds the whole measurement on one machine may take, clean-up included.", 300),
    Setting("runs", Whole(*RUNS_RANGE, "runs"), "Samples per figure (start-to-exit latency, each micro-benchmark).",
            5),
    Setting("engine", Choice(ENGINES), "auto: Docker where it is configured and running, else containerd.", "auto"),
)  # fmt: skip
SETTINGS = (
    Setting(CONFIG_NAME, Obj(FIELDS, "the measurement", "{enabled: true, budget: 300, runs: 5}", off=True),
            "Measure gVisor's overhead (latency, syscalls, I/O) on each machine; off when unset."),
)  # fmt: skip


@dataclass(frozen=True)
class OverheadSettings:
    """The measurement as read; each field is described by its declaration in FIELDS."""

    enabled: bool = False
    budget: int = 300
    runs: int = 5
    engine: Engine = "auto"


def read_overhead(raw: object, docker: str, containerd: str, problems: list[str]) -> OverheadSettings | None:
    """The measurement's settings, or None when it is off; `docker` and
    `containerd` are the host layer's modes (gvisor-fleet:docker, :containerd)."""
    if raw is None:
        return None
    v = SETTINGS[0].kind.parse({"enabled": raw} if isinstance(raw, bool) else raw, KEY, problems)
    if not isinstance(v, Values):
        return None
    engine = str(v["engine"])
    if engine != "auto" and {"docker": docker, "containerd": containerd}[engine] == "off":
        problems.append(
            f"{KEY}.engine: '{engine}' is off for gVisor ({NS}:{engine}: off); use auto or the other engine"
        )
    if not v.flag("enabled"):
        return None
    return OverheadSettings(enabled=True, budget=v.number("budget"), runs=v.number("runs"), engine=cast(Engine, engine))


def parse_overhead_settings(raw: object, docker: str = "auto", containerd: str = "auto") -> OverheadSettings | None:
    """`read_overhead`, raising SettingsError with every problem."""
    problems: list[str] = []
    settings = read_overhead(raw, docker, containerd, problems)
    if problems:
        raise SettingsError(problems)
    return settings
