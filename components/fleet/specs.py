"""Machines as the stack describes them: `gvisor-fleet:machines` parsed and checked.

Pure: no Pulumi resources. Each backend's own fields are checked here too, so
every mistake in the machine list is reported at preview, with the config key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

KEY = "gvisor-fleet:machines"
ARCHES = ("x86_64", "aarch64")
ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64", "x86-64": "x86_64", "aarch_64": "aarch64"}
BACKENDS = ("static",)
NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class MachineSpec:
    """One machine from stack config, before any backend makes or reaches it."""

    name: str
    arch: str  # x86_64, aarch64, or "detect" (static machines only)
    backend: str = "static"
    address: str = ""
    port: int = 22
    user: str = "root"
    host_key: str | None = None


def arch_problem(key: str, value: object, allow_detect: bool) -> str | None:
    allowed = ARCHES + (("detect",) if allow_detect else ())
    if value in allowed:
        return None
    hint = ARCH_ALIASES.get(str(value))
    if hint:
        return f"{key}: '{value}' is not an architecture name gVisor uses; write '{hint}' (as `uname -m` prints)"
    return f"{key}: unknown architecture '{value}'; use one of {', '.join(allowed)}"


def _static(at: str, name: str, item: Mapping[str, object], problems: list[str]) -> MachineSpec | None:
    address = item.get("address")
    if not isinstance(address, str) or not address:
        problems.append(f"{at}.address: missing; give the host name or IP that SSH reaches")
        return None
    port = item.get("port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        problems.append(f"{at}.port: '{port}' must be a TCP port number")
        port = 22
    user = item.get("user", "root")
    if not isinstance(user, str) or not user:
        problems.append(f"{at}.user: must be a user name")
        user = "root"
    arch = item.get("arch", "detect")
    p = arch_problem(f"{at}.arch", arch, allow_detect=True)
    if p:
        problems.append(p)
    host_key = item.get("hostKey")
    if host_key is not None and (not isinstance(host_key, str) or not host_key.startswith(("ssh-", "ecdsa-"))):
        problems.append(f"{at}.hostKey: must be an OpenSSH public key line, e.g. from `ssh-keyscan -t ed25519 HOST`")
        host_key = None
    return MachineSpec(name=name, arch=str(arch), address=address, port=port, user=user, host_key=host_key)


def parse_machines(items: object, has_private_key: bool, problems: list[str]) -> tuple[MachineSpec, ...]:
    """Checks the machine list, appending one line per problem to `problems`."""
    if items is None:
        return ()
    if not isinstance(items, list):
        problems.append(f"{KEY}: must be a list of machines, e.g. [{{name: web1, address: 192.0.2.10}}]")
        return ()
    specs: list[MachineSpec] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        at = f"{KEY}[{i}]"
        if not isinstance(item, Mapping):
            problems.append(f"{at}: must be an object with at least name and address")
            continue
        name = item.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            problems.append(f"{at}.name: '{name}' must be a lower-case DNS label (letters, digits, '-')")
            continue
        if name in seen:
            problems.append(f"{at}.name: '{name}' is used twice; machine names must be unique")
        seen.add(name)
        backend = item.get("backend", "static")
        if backend not in BACKENDS:
            problems.append(f"{at}.backend: '{backend}' is not supported; use one of {', '.join(BACKENDS)}")
            continue
        spec = _static(at, name, item, problems)
        if spec:
            specs.append(spec)
    needs_key = [s.name for s in specs if s.backend == "static"]
    if needs_key and not has_private_key:
        problems.append(
            f"gvisor-fleet:sshPrivateKey: missing; machines {', '.join(needs_key)} need an "
            "SSH key: `pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519`"
        )
    return tuple(specs)
