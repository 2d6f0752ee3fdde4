"""The machine running the host tier, as the sandboxes must leave it (see test_machine_tree.py)."""

from __future__ import annotations

import json
import os
import stat
import sys
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


# tests/run.sh takes the tree before the host tier's parallel session and
# compares it in a session of its own afterwards: a worker's session start is
# no "before" for the others.
BEFORE_VAR = "GVISOR_FLEET_MACHINE_BEFORE"


def machine_before() -> dict[str, tuple[int, int, int]]:
    """The tree saved in the file BEFORE_VAR names, or else the tree now (a session of its own)."""
    saved = os.environ.get(BEFORE_VAR)
    if not saved:
        return machine_tree()
    return {path: (kind, size, mtime) for path, (kind, size, mtime) in json.loads(Path(saved).read_text()).items()}


if __name__ == "__main__":
    json.dump(machine_tree(), sys.stdout)
