"""A throwaway host for the host tests (see sandbox/start.sh)."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).parent / "sandbox"
AGENT = Path(__file__).parents[2] / "components" / "gvisor" / "scripts" / "gvisor-host.sh"

# Joins the sandbox's own cgroups first, so daemons started from here are
# accounted there, then runs the command.
_JOIN = 'for f in /sys/fs/cgroup/*/cgroup.procs; do echo $$ > "$f"; done 2>/dev/null; exec "$@"'


class Sandbox:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.proc = subprocess.Popen(
            ["sh", str(HERE / "start.sh"), str(work)],
            stdout=subprocess.DEVNULL,
            stderr=open(work.parent / f"{work.name}.start.log", "w"),  # noqa: SIM115
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while not (work / "ready").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sandbox did not start: {(work.parent / f'{work.name}.start.log').read_text()}")
            time.sleep(0.1)
        self.pid = self._init_pid()

    def _init_pid(self) -> int:
        # start.sh execs unshare, whose forked child is the sandbox's PID 1.
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return int(children[0])

    def run(
        self, argv: list[str], stdin: str | None = None, check: bool = False, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        nsenter = ["nsenter", "-t", str(self.pid), "-m", "-n", "-p", "-C", "-u", "-i", "--"]
        result = subprocess.run(
            [*nsenter, "sh", "-c", _JOIN, "sh", *argv],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"},
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{shlex.join(argv)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def sh(self, script: str, check: bool = True) -> str:
        return self.run(["sh", "-c", script], check=check).stdout

    def agent(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Runs the agent exactly as the GvisorHost component does: script on stdin."""
        return self.run(["sh", "-s", "--", *args], stdin=AGENT.read_text())

    def read(self, path: str) -> bytes | None:
        r = subprocess.run(["nsenter", "-t", str(self.pid), "-m", "--", "cat", path], capture_output=True, timeout=30)
        return r.stdout if r.returncode == 0 else None

    def write(self, path: str, content: str) -> None:
        self.run(["sh", "-c", f"mkdir -p \"$(dirname {shlex.quote(path)})\" && cat > {shlex.quote(path)}"],
                 stdin=content, check=True)  # fmt: skip

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        # Empty cgroups go away once every process in them has exited.
        for line in reversed((self.work / "cgroups").read_text().split()):
            _remove_cgroup_tree(Path(line))


def _remove_cgroup_tree(root: Path) -> None:
    if not root.is_dir():
        return
    for _ in range(50):
        dirs = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        try:
            for d in [*dirs, root]:
                d.rmdir()
            return
        except OSError:
            time.sleep(0.2)
