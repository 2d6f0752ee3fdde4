"""A throwaway host for the host tests (see sandbox/start.sh)."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
from pathlib import Path

from components.gvisor.agent import SCRIPT_PATH as AGENT
from components.gvisor.agent import agent_file
from tests.support.wait import wait_until

HERE = Path(__file__).parent / "sandbox"

# Joins the sandbox's own cgroups first, so daemons started from here are
# accounted there, then runs the command.
_JOIN = 'for f in /sys/fs/cgroup/*/cgroup.procs; do echo $$ > "$f"; done 2>/dev/null; exec "$@"'
_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}


class Sandbox:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.proc = subprocess.Popen(
            ["sh", str(HERE / "start.sh"), str(work)],
            stdout=subprocess.DEVNULL,
            stderr=open(work.parent / f"{work.name}.start.log", "w"),  # noqa: SIM115
            start_new_session=True,
        )
        wait_until(lambda: (work / "ready").exists() or self.proc.poll() is not None, 20, 0.1)
        if not (work / "ready").exists():
            raise RuntimeError(f"sandbox did not start: {(work.parent / f'{work.name}.start.log').read_text()}")
        self.pid = self._init_pid()

    def _init_pid(self) -> int:
        # start.sh execs unshare, whose forked child is the sandbox's PID 1.
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return int(children[0])

    def _argv(self, argv: list[str]) -> list[str]:
        nsenter = ["nsenter", "-t", str(self.pid), "-m", "-n", "-p", "-C", "-u", "-i", "--"]
        return [*nsenter, "sh", "-c", _JOIN, "sh", *argv]

    def run(
        self,
        argv: list[str],
        stdin: str | None = None,
        check: bool = False,
        timeout: float = 300,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self._argv(argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**_ENV, **(env or {})},
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{shlex.join(argv)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def sh(self, script: str, check: bool = True) -> str:
        return self.run(["sh", "-c", script], check=check).stdout

    def agent(
        self, *args: str, env: dict[str, str] | None = None, script: Path = AGENT
    ) -> subprocess.CompletedProcess[str]:
        """Runs the agent (or another host SCRIPT) with the script on stdin, as the Kubernetes
        node steps do (GvisorHost's steps run the agent from its copy: run_line)."""
        return self.run(["sh", "-s", "--", *args], stdin=script.read_text(), env=env)

    def run_line(self, line: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """A GvisorHost command line (host_commands), run as the command provider runs it: in
        the login home (root's), where the copy is put first unless it is there."""
        return self.run(self._line_argv(line), env=env)

    def _line_argv(self, line: str) -> list[str]:
        copy = f"/root/{agent_file()}"
        if self.read(copy) is None:
            self.sh(f"mkdir -p {shlex.quote(copy.rsplit('/', 1)[0])}")
            self.write(copy, AGENT.read_text())
        return ["sh", "-c", f"cd /root && {line}"]

    def start_agent(
        self, *args: str, env: dict[str, str] | None = None, line: str | None = None, script: Path = AGENT
    ) -> subprocess.Popen[str]:
        """The agent in the background (stdout and stderr piped): ARGS with the script (or
        another host SCRIPT) on stdin, or a GvisorHost command LINE run from the copy."""
        argv = self._line_argv(line) if line is not None else ["sh", "-s", "--", *args]
        proc = subprocess.Popen(
            self._argv(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**_ENV, **(env or {})},
        )
        assert proc.stdin is not None
        proc.stdin.write(script.read_text() if line is None else "")
        proc.stdin.close()
        proc.stdin = None  # sent; communicate() must not flush it again
        return proc

    def stop_agent_at(
        self, point: str, *args: str, line: str | None = None, script: Path = AGENT
    ) -> tuple[subprocess.Popen[str], int]:
        """Runs the agent (as start_agent) until it stops itself at checkpoint POINT (the
        scripts' test hook); returns it, stopped, and its PID inside the sandbox."""
        proc = self.start_agent(*args, env={"GVISOR_FLEET_TEST_STOP_AT": point}, line=line, script=script)
        assert proc.stderr is not None
        seen = []
        for err in proc.stderr:
            seen.append(err)
            m = re.search(rf"stopped at {re.escape(point)} \(pid (\d+)\)", err)
            if m:
                return proc, int(m.group(1))
        proc.wait(timeout=60)
        raise AssertionError(f"the agent never reached {point} (exit {proc.returncode}):\n{''.join(seen)}")

    def kill_agent_at(self, point: str, *args: str, line: str | None = None, script: Path = AGENT) -> None:
        """SIGKILLs the agent (or SCRIPT) exactly at checkpoint POINT, as a crash or `kill -9` would."""
        self.kill_stopped(*self.stop_agent_at(point, *args, line=line, script=script))

    def kill_stopped(self, proc: subprocess.Popen[str], pid: int) -> None:
        """SIGKILLs an agent that stop_agent_at stopped."""
        self.sh(f"kill -KILL {pid}")
        # nsenter stopped itself when its child stopped (job control): wake it to reap.
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.communicate(timeout=60)
        assert proc.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), proc.returncode

    def tree(self, *roots: str) -> dict[str, str]:
        """Every path under ROOTS with its type, mode and content hash (or link target)."""
        script = (
            'for r in "$@"; do [ -e "$r" ] && find "$r" -xdev; done | sort | while IFS= read -r p; do '
            'if [ -L "$p" ]; then echo "$p|L|$(readlink "$p")"; '
            'elif [ -f "$p" ]; then echo "$p|F$(stat -c %a "$p")|$(sha256sum < "$p" | cut -c1-64)"; '
            'else echo "$p|D$(stat -c %a "$p")|"; fi; done'
        )
        out = self.run(["sh", "-c", script, "sh", *roots], check=True).stdout
        return {line.split("|", 1)[0]: line.split("|", 1)[1] for line in out.splitlines()}

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

    def removed() -> bool:
        dirs = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        try:
            for d in [*dirs, root]:
                d.rmdir()
        except OSError:
            return False
        return True

    wait_until(removed, 10, 0.2)
