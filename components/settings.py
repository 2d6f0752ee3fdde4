"""Stack settings: one typed, validated object built from stack config.

`load_settings` is pure: it takes the raw config values (as Pulumi returns
them) and either returns `Settings` or raises `SettingsError` listing every
problem at once, each naming the config key and what to write instead. It
runs while the program is evaluated, so bad input stops `pulumi preview`
before anything touches a host. Each layer declares and reads its own keys
(fleet/specs.py, gvisor/settings.py, kube/settings.py, overhead/settings.py,
all through components/schema.py); this module gathers them and checks what
spans layers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from components.fleet import specs as fleet_settings
from components.fleet.specs import MachineSpec, parse_machines
from components.gvisor import settings as gvisor_settings
from components.gvisor.rollout import rollout_problems
from components.gvisor.settings import GvisorSettings, parse_gvisor_settings
from components.kube import settings as kube_settings
from components.kube.settings import KubeSettings, fleet_problems, parse_kube_settings
from components.overhead import settings as overhead_settings
from components.overhead.settings import OverheadSettings, read_overhead
from components.schema import NS, SettingsError, key_of, unknown_problem

# Every top-level key, in the order the reference lists them.
TOP_LEVEL = (
    *gvisor_settings.SETTINGS,
    *fleet_settings.SETTINGS,
    *kube_settings.SETTINGS,
    *overhead_settings.SETTINGS,
)
SECRET_KEYS = tuple(s.name for s in TOP_LEVEL if s.secret)
SCALAR_KEYS = tuple(s.name for s in TOP_LEVEL if not s.secret and s.kind.type_name in ("string", "integer", "boolean"))
OBJECT_KEYS = tuple(s.name for s in TOP_LEVEL if not s.secret and s.name not in SCALAR_KEYS)
KNOWN_KEYS = tuple(s.name for s in TOP_LEVEL)


@dataclass(frozen=True)
class Settings:
    gvisor: GvisorSettings
    machines: tuple[MachineSpec, ...]
    has_private_key: bool = False
    kubernetes: KubeSettings | None = None
    overhead: OverheadSettings | None = None


def unknown_key_problems(keys: Sequence[str]) -> list[str]:
    """A key the program does not read is a typo or a leftover: name it, and the nearest known key."""
    everything = "the Configuration reference (docs/configuration.md) lists every key"
    return [
        unknown_problem(key_of(NS, key), key, KNOWN_KEYS, "this program", everything)
        for key in sorted(set(keys) - set(KNOWN_KEYS))
    ]


def _cross_problems(gvisor: GvisorSettings, machines: Sequence[MachineSpec]) -> list[str]:
    """Rules between the gVisor keys and the machines."""
    problems = []
    machines_key, runtime_key = key_of(NS, "machines"), key_of(NS, "defaultRuntime")
    for i, spec in enumerate(machines):
        if gvisor.default_runtime and spec.builds_images:
            problems.append(
                f"{machines_key}[{i}].buildsImages: machine '{spec.name}' builds images; {runtime_key} true would "
                "make runsc its Docker default (BuildKit RUN steps are not sandboxed, Compose DNS breaks); "
                "set defaultRuntime to false"
            )
        if gvisor.release_fetch == "once" and spec.arch not in ("x86_64", "aarch64"):
            problems.append(
                f"{machines_key}[{i}].arch: machine '{spec.name}' has arch '{spec.arch}', but "
                f"{key_of(NS, 'releaseFetch')} once fetches the release for a known arch before any host is "
                "reached; write x86_64 or aarch64"
            )
    return problems


def load_settings(raw: Mapping[str, object], has_private_key: bool) -> Settings:
    """Validate raw config values (plain Python data) into Settings."""
    problems = unknown_key_problems(list(raw))
    gvisor = parse_gvisor_settings(raw, problems)
    machines = parse_machines(raw.get("machines"), has_private_key, problems)
    problems.extend(_cross_problems(gvisor, machines))
    problems.extend(rollout_problems(gvisor.rollout, [m.name for m in machines]))
    kube = parse_kube_settings(raw.get("kubernetes"), gvisor.runtime_name, problems)
    if kube:
        problems.extend(fleet_problems(kube, machines, gvisor.containerd))
    overhead = read_overhead(raw.get("overhead"), gvisor.docker, gvisor.containerd, problems)
    if problems:
        raise SettingsError(problems)
    return Settings(
        gvisor=gvisor, machines=machines, has_private_key=has_private_key, kubernetes=kube, overhead=overhead
    )
