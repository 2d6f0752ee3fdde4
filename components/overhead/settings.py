"""`gvisor-fleet:overhead`: one optional config object, checked at preview.

`parse_overhead_settings` is pure: it returns None when the measurement is
off (the default) and raises `SettingsError` naming `gvisor-fleet:overhead.<key>`
and the fix otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, cast

from components.gvisor.settings import config_bool
from components.settings import SettingsError

KEY = "gvisor-fleet:overhead"
CONFIG_NAME = "overhead"
ENGINES = ("auto", "docker", "containerd")
BUDGET_RANGE = (30, 3600)
RUNS_RANGE = (1, 100)
FIELDS = ("enabled", "budget", "runs", "engine")

Engine = Literal["auto", "docker", "containerd"]


@dataclass(frozen=True)
class OverheadSettings:
    enabled: bool = False
    # Seconds the whole measurement on one machine may take, clean-up included.
    budget: int = 300
    # Samples per figure (start-to-exit latency, each micro-benchmark).
    runs: int = 5
    # auto: Docker where it is configured and running, else containerd.
    engine: Engine = "auto"


def _whole(name: str, value: object, default: int, bounds: tuple[int, int], unit: str, problems: list[str]) -> int:
    if value is None:
        return default
    number = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    low, high = bounds
    if number is None or not low <= number <= high:
        problems.append(f"{KEY}.{name}: '{value}' must be a whole number of {unit} from {low} to {high}")
        return default
    return number


def parse_overhead_settings(raw: object, docker: str = "auto", containerd: str = "auto") -> OverheadSettings | None:
    """The measurement's settings, or None when it is off; `docker` and
    `containerd` are the host layer's modes (gvisor-fleet:docker, :containerd)."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        raw = {"enabled": raw}
    if not isinstance(raw, Mapping):
        raise SettingsError([f"{KEY}: must be an object, e.g. {{enabled: true, budget: 300, runs: 5}}"])
    problems = [
        f"{KEY}.{k}: is not a setting of the measurement; use {', '.join(FIELDS)}" for k in raw if k not in FIELDS
    ]
    d = OverheadSettings()
    enabled = config_bool(raw.get("enabled", True))
    if enabled is None:
        problems.append(f"{KEY}.enabled: must be true or false")
        enabled = False
    budget = _whole("budget", raw.get("budget"), d.budget, BUDGET_RANGE, "seconds", problems)
    runs = _whole("runs", raw.get("runs"), d.runs, RUNS_RANGE, "runs", problems)
    engine = raw.get("engine", d.engine)
    if engine not in ENGINES:
        problems.append(f"{KEY}.engine: '{engine}' is not supported; use one of {', '.join(ENGINES)}")
        engine = d.engine
    elif engine != "auto" and {"docker": docker, "containerd": containerd}[str(engine)] == "off":
        problems.append(
            f"{KEY}.engine: '{engine}' is off for gVisor (gvisor-fleet:{engine}: off); use auto or the other engine"
        )
    if problems:
        raise SettingsError(problems)
    if not enabled:
        return None
    return OverheadSettings(enabled=True, budget=budget, runs=runs, engine=cast(Engine, engine))
