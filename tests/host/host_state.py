"""Reshaping a sandboxed host (a command or device it lacks) and proving the agent changed nothing on it."""

from __future__ import annotations

import hashlib
import os
import shlex
import stat
import subprocess
from pathlib import Path

from components.gvisor.agent import parse_facts
from tests.host.sandbox import Sandbox

# What the sandbox lets anything write without touching the machine: the upper
# layers of its overlays (/etc, /usr/local, /var/lib, /var/log: configs, the
# install prefix, the agent's state and backups) and its own /run (pid files of
# the services it restarts). The machine's files below the overlays are left
# out: other work on the machine may change them at any time.
PRIVATE_TMPFS = ("/run",)
# Written by the daemons while idle, and by sudo for each attempt; never by the agent.
NOT_THE_AGENTS = (
    "/var/log/sandbox-docker.log",
    "/var/log/sandbox-containerd.log",
    "/var/log/docker.log",
    "/var/log/mirror.log",
    "/run/sudo",
)


def _entry(path: Path) -> str:
    st = path.lstat()
    entry = f"{stat.filemode(st.st_mode)} {st.st_uid}:{st.st_gid} {st.st_size} {st.st_mtime_ns}"
    if stat.S_ISLNK(st.st_mode):
        entry += f" -> {os.readlink(path)}"
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        entry += f" dev={st.st_rdev}"  # 0 marks an overlay whiteout: a deleted file
    elif stat.S_ISREG(st.st_mode):
        try:
            entry += f" sha256={hashlib.sha256(path.read_bytes()).hexdigest()}"
        except OSError as e:  # namespace files in /run/docker/netns
            entry += f" unreadable={e.errno}"
    return entry


def _tree(root: Path, shown_as: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    for directory, dirs, files in os.walk(root):
        for name in ["", *dirs, *files]:
            path = Path(directory, name) if name else Path(directory)
            where = shown_as + str(path)[len(str(root)) :]
            if not where.startswith(NOT_THE_AGENTS):
                entries[where] = _entry(path)
        dirs[:] = [d for d in dirs if not f"{shown_as}{directory[len(str(root)) :]}/{d}".startswith(NOT_THE_AGENTS)]
    return entries


def digest(host: Sandbox) -> dict[str, str]:
    """Type, mode, owner, size, mtime, link target or SHA-256 of every entry the sandbox wrote, by path."""
    entries: dict[str, str] = {}
    for line in host.sh("findmnt -rn -t overlay -o TARGET,OPTIONS").splitlines():
        target, options = line.split(" ", 1)
        upper = next(o.split("=", 1)[1] for o in options.split(",") if o.startswith("upperdir="))
        entries.update(_tree(Path(upper), target))
    for tmpfs in PRIVATE_TMPFS:
        entries.update(_tree(Path(f"/proc/{host.pid}/root{tmpfs}"), tmpfs))
    return entries


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Human-readable differences between two digests (empty when byte-identical)."""
    return [
        f"{path}: {before.get(path, '(absent)')} => {after.get(path, '(absent)')}"
        for path in sorted(before.keys() | after.keys())
        if before.get(path) != after.get(path)
    ]


def ok(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """The agent's facts, once it is shown to have succeeded."""
    assert result.returncode == 0, f"agent failed ({result.returncode}):\n{result.stderr}"
    return parse_facts(result.stdout)


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """What the agent (or sudo before it) said, once it is shown to have refused."""
    assert result.returncode != 0, f"should have refused:\n{result.stdout}\n{result.stderr}"
    return result.stderr


class HostSnapshot:
    """The host's digest now, to compare with later."""

    def __init__(self, host: Sandbox) -> None:
        self.host = host
        self.before = digest(host)

    def assert_unchanged(self) -> None:
        diff = changes(self.before, digest(self.host))
        assert not diff, "the host changed:\n" + "\n".join(diff)


def remove_from_view(host: Sandbox, scratch: Path, path: str) -> None:
    """Makes PATH absent in the sandbox only, as on a machine without it.

    The directory holding it gets a private overlay (upper layer in scratch,
    mounted in the sandbox's own mount namespace) and the file is deleted
    there: the sandbox sees no such file, exactly like a host that never had
    it, while the machine keeps its copy (/usr and /dev are shared otherwise).
    """
    directory, name = path.rsplit("/", 1)
    key = directory.strip("/").replace("/", "_") or "root"
    upper, work = scratch / f"upper_{key}", scratch / f"work_{key}"
    upper.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    d = shlex.quote(directory)
    on_machine = Path(path).exists() or Path(path).is_symlink()
    # Mount first and check it took, so a failed mount can never delete the machine's file.
    host.sh(
        f"findmnt -rn -o SOURCE --mountpoint {d} | grep -qx gvisor-fleet-absent ||"
        f" mount -t overlay gvisor-fleet-absent -o lowerdir={d},upperdir={upper},workdir={work} {d}"
        f" && findmnt -rn -o SOURCE --mountpoint {d} | grep -qx gvisor-fleet-absent"
        f" && rm {shlex.quote(f'{directory}/{name}')}"
    )
    if on_machine:
        assert Path(path).exists() or Path(path).is_symlink(), f"{path} vanished from the machine itself"


def remove_command(host: Sandbox, scratch: Path, name: str) -> None:
    """Removes every copy of command NAME on the sandbox's PATH (see remove_from_view)."""
    while found := host.sh(f"command -v {shlex.quote(name)} || true").strip():
        # /bin and /sbin are symlinks to /usr/...: delete where the file really is.
        real_dir = host.sh(f'cd "$(dirname {shlex.quote(found)})" && pwd -P').strip()
        remove_from_view(host, scratch, f"{real_dir}/{name}")
