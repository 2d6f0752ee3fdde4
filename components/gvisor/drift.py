"""Drift: what changed on a host since the last `up`, item by item (pure).

After the steps have run, the agent's read-only `check` gives a digest of
each item they put on the host; they are recorded. A refresh checks again:
an item whose digest differs was changed by hand. Repairing it runs again the
step that put it there (each step's create is idempotent), then verify.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from components.gvisor.agent import parse_facts

AS_INSTALLED = "as installed"
CHANGED = "changed by hand"
REMOVED = "removed by hand"
ABSENT = "absent"


@dataclass(frozen=True)
class Item:
    fact: str  # the agent check's fact
    step: str  # the step that puts it right
    what: str  # for messages


# Property names are what `pulumi preview --refresh` shows as the diff ([diff: ~runscBinary]).
ITEMS: dict[str, Item] = {
    "runscBinary": Item("check_runsc", "install", "the runsc binary"),
    "shimBinary": Item("check_shim", "install", "the containerd-shim-runsc-v1 binary"),
    "dockerRuntime": Item("check_docker_runtime", "docker", "the runtime entry in Docker's daemon.json"),
    "containerdBlock": Item("check_containerd_block", "containerd", "the runtime block in containerd's config.toml"),
    "runscToml": Item("check_runsc_toml", "containerd", "runsc.toml"),
}
# The order steps run in, as in `pulumi up`; verify always comes last.
STEP_ORDER = ("install", "docker", "containerd", "verify")


class CheckError(Exception):
    """The host's check could not be read (SSH, the agent, its output)."""


def checked_items(docker: bool, containerd: bool) -> list[str]:
    """The items this stack puts on a host (Docker's and containerd's only when configured)."""
    skip = set() if docker else {"dockerRuntime"}
    skip |= set() if containerd else {"containerdBlock", "runscToml"}
    return [name for name in ITEMS if name not in skip]


def digests(facts: Mapping[str, str], items: Iterable[str]) -> dict[str, str]:
    """Each item's digest from the check's facts; a missing one means the agent is not the expected one."""
    found = {}
    for name in items:
        value = facts.get(ITEMS[name].fact)
        if not value:
            raise CheckError(
                f"the host's check printed no {ITEMS[name].fact} (is the agent copy current? run pulumi up)"
            )
        found[name] = value
    return found


def recorded_digests(verified: str, items: Iterable[str]) -> dict[str, str]:
    """Each item's digest from the verify step's output, which ends with the check's facts ("" when
    missing: that item cannot be compared, and a refresh never reports it)."""
    facts = parse_facts(verified)
    return {name: facts.get(ITEMS[name].fact, "") for name in items}


def status(recorded: str | None, observed: str) -> str:
    if not recorded or recorded == observed:
        return AS_INSTALLED
    return REMOVED if observed == ABSENT else CHANGED


def statuses(recorded: Mapping[str, str], observed: Mapping[str, str]) -> dict[str, str]:
    """Item -> AS_INSTALLED, CHANGED or REMOVED."""
    return {name: status(recorded.get(name), digest) for name, digest in observed.items()}


def drifted(state: Mapping[str, object]) -> list[str]:
    """The items a refresh found changed, from a resource's state."""
    return [name for name in ITEMS if state.get(name) not in (None, AS_INSTALLED)]


def repair_plan(items: Iterable[str], steps: Iterable[str]) -> list[str]:
    """The steps to run again for the drifted ITEMS (of those the host has, STEPS), in order; verify last."""
    wanted = {ITEMS[name].step for name in items}
    have = set(steps)
    if not wanted:
        return []
    return [s for s in STEP_ORDER if (s in wanted or s == "verify") and s in have]


def describe(items: Mapping[str, str]) -> str:
    """'the runsc binary (changed by hand), runsc.toml (removed by hand)'."""
    return ", ".join(f"{ITEMS[n].what} ({s})" for n, s in items.items() if s != AS_INSTALLED)
