"""A loopback port on this machine that reaches into a sandbox, one socat per test object."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

from tests.support.loopback import free_port


class Forwarder:
    """socat listening on 127.0.0.1:<port> (free unless given) that runs `sh script`
    for each connection, the connection as its standard input and output.

    `script` does the reaching in (nsenter into the sandbox, then sshd -i or
    socat to an address there). A script, not an inline command: socat would
    split an inner address at its colons. socat's own messages go to `log`.
    """

    def __init__(self, script: Path, log: Path | None = None, port: int = 0) -> None:
        socat = shutil.which("socat")
        assert socat, "the forwarder needs socat (Debian package socat)"
        if any(c in str(script) for c in " ,:!\"'"):
            raise ValueError(f"path unsuitable for a socat address: {script}")
        self.port = port or free_port()
        self.log = log
        self.proc = subprocess.Popen(
            [socat, f"TCP-LISTEN:{self.port},bind=127.0.0.1,reuseaddr,fork", f"EXEC:/bin/sh {script}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(log, "w") if log else subprocess.DEVNULL,  # noqa: SIM115
            start_new_session=True,  # its per-connection children stop with it
        )

    def running(self) -> bool:
        return self.proc.poll() is None

    def messages(self) -> str:
        return self.log.read_text() if self.log and self.log.exists() else ""

    def close(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
                return
