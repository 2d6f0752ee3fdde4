"""runsc flags: validation against known traps, and the two places they go.

Docker gets them as `runtimeArgs` in daemon.json; containerd reads them from
runsc.toml's `[runsc_config]` table, where every key becomes `--key=value`.
The host agent checks the keys again against the installed binary's
`runsc flags`, since only the binary knows its full flag set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

PLATFORMS = ("systrap", "kvm")
NETWORKS = ("sandbox", "host", "none")

# Keys from older guides that now break or mislead; value = what to write instead.
OBSOLETE_FLAGS: Mapping[str, str] = {
    "vfs2": "remove it: VFS2 is the only file system now, the flag is a no-op due for removal in 2027-01",
    "fsgofer-host-uds": 'use host-uds = "open" (or "create", "all") instead; '
    "fsgofer-host-uds is deprecated and due for removal in 2027-01",
    "overlay": 'use overlay2 (e.g. "root:self", the default, or "none"); overlay = "true" now fails validation',
}

# Flags owned by dedicated settings, so they are set in exactly one place.
RESERVED_FLAGS: Mapping[str, str] = {
    "platform": "gvisor-fleet:platform",
    "network": "gvisor-fleet:dockerNetwork and gvisor-fleet:containerdNetwork",
}

_FLAG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def flag_value(value: object) -> str | None:
    """The string runsc expects for a config value, or None if it has none.

    runsc.toml's table is map[string]string: booleans must be quoted strings.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return str(value)
    return None


def flag_errors(flags: Mapping[str, object], key: str = "gvisor-fleet:runscFlags") -> list[str]:
    """Every problem with user-supplied runsc flags, each naming the config key."""
    errors: list[str] = []
    for name, value in flags.items():
        if name in OBSOLETE_FLAGS:
            errors.append(f"{key}: '{name}' is obsolete; {OBSOLETE_FLAGS[name]}")
        elif name in RESERVED_FLAGS:
            errors.append(f"{key}: '{name}' is set by {RESERVED_FLAGS[name]}; move it there")
        elif not _FLAG_NAME.match(name):
            errors.append(f"{key}: '{name}' is not a runsc flag name (write it without leading dashes)")
        elif flag_value(value) is None:
            errors.append(f"{key}: '{name}' must be a string, number or boolean, not {type(value).__name__}")
        elif any(c in str(flag_value(value)) for c in "\n\r\"'"):
            errors.append(f"{key}: '{name}' has a newline or a quote in its value; runsc flag values cannot hold them")
    rendered = {k: flag_value(v) for k, v in flags.items()}
    if rendered.get("file-access") == "shared" and rendered.get("overlay2", "root:self") != "none":
        errors.append(f'{key}: file-access = "shared" needs overlay2 = "none" as well; add it')
    return errors


def effective_flags(platform: str, network: str, extra: Mapping[str, object]) -> dict[str, str]:
    """All runsc flags for one runtime, sorted so renders are stable."""
    flags = {"platform": platform, "network": network}
    for name, value in extra.items():
        rendered = flag_value(value)
        if rendered is not None:
            flags[name] = rendered
    return dict(sorted(flags.items()))


def docker_runtime_args(flags: Mapping[str, str]) -> list[str]:
    """daemon.json runtimeArgs for runsc."""
    return [f"--{name}={value}" for name, value in flags.items()]


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def render_runsc_toml(flags: Mapping[str, str]) -> str:
    """runsc.toml for containerd's ConfigPath, values always quoted."""
    lines = [
        "# Written by gvisor-fleet; the next `pulumi up` replaces manual edits.",
        "[runsc_config]",
    ]
    lines += [f"  {name} = {_toml_string(value)}" for name, value in flags.items()]
    return "\n".join(lines) + "\n"
