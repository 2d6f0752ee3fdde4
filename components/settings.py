"""Stack settings: one typed, validated object built from stack config.

`load_settings` is pure: it takes the raw config values (as Pulumi returns
them) and either returns `Settings` or raises `SettingsError` listing every
problem at once, each naming the config key and what to write instead. It
runs while the program is evaluated, so bad input stops `pulumi preview`
before anything touches a host. Each layer parses its own keys (fleet/specs.py,
gvisor/settings.py, kube/settings.py); this module gathers them and checks
what spans layers.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from components.fleet.specs import MachineSpec, parse_machines
from components.gvisor import settings as gvisor_settings
from components.gvisor.settings import GvisorSettings, parse_gvisor_settings
from components.kube.settings import KubeSettings, fleet_problems, parse_kube_settings

NS = gvisor_settings.NS


class SettingsError(ValueError):
    """Invalid stack configuration; `problems` holds one line per setting."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        body = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid stack configuration:\n{body}")


@dataclass(frozen=True)
class Settings:
    gvisor: GvisorSettings
    machines: tuple[MachineSpec, ...]
    has_private_key: bool = False
    kubernetes: KubeSettings | None = None


def _key(name: str) -> str:
    return f"{NS}:{name}"


SCALAR_KEYS = gvisor_settings.SCALAR_KEYS
OBJECT_KEYS = (*gvisor_settings.OBJECT_KEYS, "machines", "kubernetes")
SECRET_KEYS = ("sshPrivateKey", "kubeconfig")
KNOWN_KEYS = (*SCALAR_KEYS, *OBJECT_KEYS, *SECRET_KEYS)


def unknown_key_problems(keys: Sequence[str]) -> list[str]:
    """A key the program does not read is a typo or a leftover: name it, and the nearest known key."""
    problems = []
    for key in sorted(set(keys) - set(KNOWN_KEYS)):
        near = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
        hint = f"; did you mean '{near[0]}'?" if near else "; README.md, Configuration reference, lists every key"
        problems.append(f"{_key(key)}: is not a setting of this program{hint}")
    return problems


def load_settings(raw: Mapping[str, object], has_private_key: bool) -> Settings:
    """Validate raw config values (plain Python data) into Settings."""
    problems = unknown_key_problems(list(raw))
    gvisor = parse_gvisor_settings(raw, problems)
    machines = parse_machines(raw.get("machines"), has_private_key, problems)
    if gvisor.default_runtime:
        for i, spec in enumerate(machines):
            if spec.builds_images:
                problems.append(
                    f"{_key('machines')}[{i}].buildsImages: machine '{spec.name}' builds images; "
                    f"{_key('defaultRuntime')} true would make runsc its Docker default (BuildKit RUN steps "
                    "are not sandboxed, Compose DNS breaks); set defaultRuntime to false"
                )
    if gvisor.release_fetch == "once":
        for i, spec in enumerate(machines):
            if spec.arch not in ("x86_64", "aarch64"):
                problems.append(
                    f"{_key('machines')}[{i}].arch: machine '{spec.name}' has arch '{spec.arch}', but "
                    f"{_key('releaseFetch')} once fetches the release for a known arch before any host is "
                    "reached; write x86_64 or aarch64"
                )
    kube = parse_kube_settings(raw.get("kubernetes"), gvisor.runtime_name, problems)
    if kube:
        problems.extend(fleet_problems(kube, machines, gvisor.containerd))
    if problems:
        raise SettingsError(problems)
    return Settings(gvisor=gvisor, machines=machines, has_private_key=has_private_key, kubernetes=kube)
