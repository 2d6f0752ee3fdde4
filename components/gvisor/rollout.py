"""Rollout in waves: which machine's steps wait for which (gvisor-fleet:rollout).

The canaries (by default the first machine of each architecture) form the
first wave; the other machines follow in waves of the given sizes, the last
size repeating until every machine has one. Each machine of a wave waits for
the verify step of every machine of the wave before it (GvisorHost's
`after`): the engine starts no step whose dependency failed, so a release or
config change that fails verify on a canary stops there, and the later waves
keep what they run. All of this is pure: the plan is a function of the
machine list and the setting, unit-tested directly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from components.schema import BAD, Kind, key_of

ROLLOUT_KEY = "rollout"
DEFAULT_WAVES: tuple[int | str, ...] = ("100%",)
_PERCENT = re.compile(r"^([1-9][0-9]?|100)%$")


@dataclass(frozen=True)
class Rollout:
    """canaries: machine names, None for the first machine of each architecture; waves: the sizes
    after them, each a count of machines or a percentage of the fleet ("25%")."""

    canaries: tuple[str, ...] | None = None
    waves: tuple[int | str, ...] = DEFAULT_WAVES


def size_problem(value: object) -> str | None:
    """Why VALUE is not a wave size (a whole number from 1, or "N%" from 1% to 100%)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return None if value >= 1 else f"{value} machines: a wave holds at least 1"
    if isinstance(value, str) and ((value.strip().isdigit() and int(value) >= 1) or _PERCENT.match(value.strip())):
        return None
    return f"{value!r} is not a wave size; write a number of machines (2) or a percentage of the fleet ('25%')"


def wave_size(size: int | str, fleet: int) -> int:
    """Machines in a wave of SIZE in a fleet of FLEET machines: a percentage rounds up, to 1 at least."""
    if isinstance(size, str) and size.endswith("%"):
        return max(1, math.ceil(fleet * int(size[:-1]) / 100))
    return int(size)


@dataclass(frozen=True)
class RolloutKind(Kind):
    """false (every machine at once), or {canaries: [names], waves: [sizes]}."""

    type_name: ClassVar[str] = "object"
    example: ClassVar[str] = "{canaries: [web-1], waves: [2, '25%']}"

    def parse(self, value: object, key: str, problems: list[str]) -> object:
        if value is False or value == "false":
            return None
        if not isinstance(value, dict):
            problems.append(f"{key}: must be false or an object, e.g. {self.example}")
            return BAD
        before = len(problems)
        unknown = sorted(set(map(str, value)) - {"canaries", "waves"})
        if unknown:
            problems.append(f"{key}.{unknown[0]}: is not a setting of the rollout; known keys: canaries, waves")
        canaries = value.get("canaries")
        if canaries is not None and not (
            isinstance(canaries, list) and all(isinstance(c, str) and c.strip() for c in canaries)
        ):
            problems.append(f"{key}.canaries: must be a list of machine names, e.g. [web-1, arm-1] ([] for none)")
        elif canaries is not None and len(set(canaries)) != len(canaries):
            problems.append(f"{key}.canaries: names a machine twice; name each canary once")
        waves = value.get("waves", list(DEFAULT_WAVES))
        if not isinstance(waves, list) or not waves:
            problems.append(f"{key}.waves: must be a non-empty list of wave sizes, e.g. [2, '25%']")
        else:
            problems.extend(f"{key}.waves[{i}]: {why}" for i, w in enumerate(waves) if (why := size_problem(w)))
        if len(problems) > before:
            return BAD
        sizes = tuple(w.strip() if isinstance(w, str) and w.strip().endswith("%") else int(w) for w in waves)
        return Rollout(tuple(c.strip() for c in canaries) if canaries is not None else None, sizes)

    def allowed(self) -> str:
        return "false, or object {canaries: list of machine names, waves: list of sizes (N or 'N%')}"


def plan_waves(machines: Sequence[tuple[str, str]], rollout: Rollout | None) -> list[list[str]]:
    """The machines (name, arch), in the order given, as waves: canaries first, then the sizes."""
    names = [name for name, _ in machines]
    if rollout is None or not names:
        return [names] if names else []
    if rollout.canaries is None:
        firsts: dict[str, str] = {}
        for name, arch in machines:
            firsts.setdefault(arch, name)
        canaries = [n for n in names if n in firsts.values()]
    else:
        canaries = [n for n in names if n in rollout.canaries]
    waves = [canaries] if canaries else []
    rest = [n for n in names if n not in canaries]
    sizes = list(rollout.waves)
    while rest:
        count = wave_size(sizes.pop(0) if len(sizes) > 1 else sizes[0], len(names))
        waves.append(rest[:count])
        rest = rest[count:]
    return waves


def waits_for(waves: Sequence[Sequence[str]]) -> list[tuple[str, list[str]]]:
    """Each machine, wave by wave, with the machines whose verify it waits for (the wave before)."""
    order: list[tuple[str, list[str]]] = []
    before: list[str] = []
    for wave in waves:
        order += [(name, list(before)) for name in wave]
        before = list(wave)
    return order


def rollout_problems(rollout: Rollout | None, machine_names: Sequence[str]) -> list[str]:
    """Canaries must be machines of the fleet."""
    if rollout is None or rollout.canaries is None:
        return []
    key = key_of("gvisor-fleet", ROLLOUT_KEY)
    return [
        f"{key}.canaries: '{name}' is not a machine of gvisor-fleet:machines; name one of "
        f"{', '.join(machine_names) or '(no machines)'}"
        for name in rollout.canaries
        if name not in machine_names
    ]
