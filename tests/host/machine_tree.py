"""The machine running the host tier, as the sandboxes must leave it (see test_machine_tree.py)."""

from __future__ import annotations

import stat
from pathlib import Path

# Paths of the machine running the tests that an engine or the agent in a
# sandbox would write if the sandbox leaked (containerd creates /opt/containerd).
MACHINE_PATHS = (
    "/opt", "/srv", "/etc/docker", "/etc/containerd", "/var/lib/containerd", "/var/lib/docker",
    "/var/lib/gvisor-fleet", "/usr/local/bin", "/root/.docker", "/run/lock/gvisor-fleet.lock",
)  # fmt: skip


def machine_tree() -> dict[str, tuple[int, int, int]]:
    """Type, size and mtime of every entry under MACHINE_PATHS on this machine."""
    entries = {}
    for root in map(Path, MACHINE_PATHS):
        if not root.exists():
            continue
        for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
            st = path.lstat()
            entries[str(path)] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns)
    return entries
