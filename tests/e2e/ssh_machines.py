"""SSH-reachable test machines, for the end-to-end tests, the cluster tier and the engine benchmarks.

A machine is a sandbox from tests/host/sandbox.py (its own mount, network, PID
and cgroup namespaces, real Debian dockerd and containerd) with an OpenSSH
server in it: a forwarder (tests/support/forward.py) listens on
127.0.0.1:<port> and, per connection, starts `sshd -i` inside the sandbox's
namespaces. Each sandbox serves the local gVisor release mirror at
127.0.0.1:18080 in its own network namespace, so the agent downloads from the
machine's point of view, as on a real host.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.host.sandbox import Sandbox
from tests.support import mirror
from tests.support.forward import Forwarder
from tests.support.image import TEST_IMAGE
from tests.support.toolchain import pulumi_bin_dir
from tests.support.wait import wait_until

# Settings a machine's owner had before gvisor-fleet came: destroy must put them back.
USER_DAEMON_JSON = '{\n  "log-level": "warn",\n  "max-concurrent-downloads": 2\n}\n'
# containerd's, for machines that run containerd 2: custom settings, and a
# runsc.toml left from an earlier hand-made set-up.
USER_CONTAINERD_TOML = """# this machine's containerd settings
version = 2
root = "/var/lib/containerd"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.example.test/pause:3.10"
"""
USER_RUNSC_TOML = '# written by hand before gvisor-fleet\n[runsc_config]\n  platform = "systrap"\n'

# Files gvisor-fleet may change on a machine; destroy must leave them as found.
WATCHED = (
    "/etc/docker/daemon.json",
    "/etc/containerd/config.toml",
    "/etc/containerd/runsc.toml",
    "/usr/local/bin/runsc",
    "/usr/local/bin/containerd-shim-runsc-v1",
)

_TOOLS = (
    "unshare",
    "nsenter",
    "ip",
    "dockerd",
    "containerd",
    "ctr",
    "runc",
    "busybox",
    "curl",
    "socat",
    "ssh-keygen",
    "ssh",
)


def missing_prerequisites() -> str | None:
    """Why the end-to-end tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "end-to-end tests need root (namespaces, dockerd, containerd, sshd)"
    for tool in _TOOLS:
        if shutil.which(tool) is None:
            return f"end-to-end tests need '{tool}' on PATH (Debian: socat, openssh-server, docker.io, ...)"
    if not Path("/usr/sbin/sshd").exists():
        return "end-to-end tests need /usr/sbin/sshd (Debian package openssh-server)"
    if shutil.which("go") is None and not (pulumi_bin_dir() / "pulumi").exists():
        return "end-to-end tests need Go to build the Pulumi engine (tests/toolchain/build-pulumi.sh)"
    return None


# --- SSH ---------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public_line: str  # OpenSSH public key line, "ssh-ed25519 AAAA... comment"

    @property
    def private_text(self) -> str:
        return self.private.read_text()


def make_key(path: Path, comment: str) -> KeyPair:
    """A throwaway ed25519 key pair (no passphrase)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return KeyPair(private=path, public_line=path.with_name(path.name + ".pub").read_text().strip())


_SSHD_CONFIG = """\
HostKey {host_key}
AuthorizedKeysFile {authorized_keys}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
LogLevel VERBOSE
Subsystem sftp internal-sftp
"""

# One sshd per connection, inside the sandbox's namespaces; it first joins the
# sandbox's own cgroups, so daemons it restarts are accounted there.
_SSHD_WRAPPER = """\
#!/bin/sh
exec nsenter -t {pid} -m -n -p -C -u -i -- sh -c \
'for f in /sys/fs/cgroup/*/cgroup.procs; do echo $$ > "$f"; done 2>/dev/null; exec "$@"' \
sh /usr/sbin/sshd -i -f {config} -E {log}
"""


@dataclass
class Machine:
    """One SSH-reachable test machine with Docker and containerd running."""

    name: str
    sandbox: Sandbox
    port: int
    host_key: str  # the server's public key line, pinned in the stack
    sshd_log: Path
    forwarder: Forwarder
    work: Path

    def remote_commands(self) -> int:
        """Commands run on this machine so far over SSH (sshd logs each one)."""
        if not self.sshd_log.exists():
            return 0
        return sum("Starting session: command" in line for line in self.sshd_log.read_text().splitlines())

    def ssh(self, key: KeyPair, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Runs a command over SSH with strict host key checking (as the provider does)."""
        known = self.work / "known_hosts"
        known.write_text(f"[127.0.0.1]:{self.port} {self.host_key}\n")
        return subprocess.run(
            [
                "ssh", "-i", str(key.private), "-p", str(self.port),
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known}",
                "-o", "ConnectTimeout=10", "root@127.0.0.1", command,
            ],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def spec(self) -> dict[str, object]:
        """This machine's entry in gvisor-fleet:machines."""
        return {
            "name": self.name,
            "address": "127.0.0.1",
            "port": self.port,
            "user": "root",
            "arch": "x86_64",
            "hostKey": self.host_key,
        }

    def read(self, path: str) -> bytes | None:
        return self.sandbox.read(path)

    def close(self) -> None:
        self.forwarder.close()
        self.sandbox.close()


def _start_daemons(sandbox: Sandbox, image_tar: Path, containerd2: Path | None) -> None:
    if containerd2:
        sandbox.sh(f"cp {shlex.quote(str(containerd2))}/* /usr/local/sbin/")
        sandbox.write("/etc/containerd/config.toml", USER_CONTAINERD_TOML)
        sandbox.write("/etc/containerd/runsc.toml", USER_RUNSC_TOML)
    sandbox.write("/etc/docker/daemon.json", USER_DAEMON_JSON)
    sandbox.sh("systemctl start containerd && systemctl start docker")
    sandbox.sh(f"docker import {image_tar} {TEST_IMAGE} >/dev/null")


def start_machine(
    name: str,
    work: Path,
    client: KeyPair,
    image_tar: Path,
    containerd2: Path | None = None,
    daemons: bool = True,
) -> Machine:
    """A fresh machine: Docker and containerd running with the owner's settings, mirror served, sshd reachable.

    With `containerd2` (a bin directory from build-containerd.sh) the machine runs
    that containerd 2.x instead of Debian's 1.6, which cannot run the current shim,
    with its owner's config.toml and runsc.toml. daemons=False starts neither
    Docker nor containerd (a fleet of cheap machines for the scale benchmark).
    """
    work.mkdir(parents=True, exist_ok=True)
    sandbox = Sandbox(work / "host")
    try:
        if daemons:
            _start_daemons(sandbox, image_tar, containerd2)

        sandbox.sh(mirror.serve_in_sandbox())
        sandbox.sh("mkdir -p /run/sshd && chmod 0755 /run/sshd")
        host_key = make_key(work / "ssh_host_ed25519_key", f"{name}-host")
        (work / "authorized_keys").write_text(client.public_line + "\n")
        config = work / "sshd_config"
        config.write_text(
            _SSHD_CONFIG.format(host_key=host_key.private, authorized_keys=work / "authorized_keys"),
        )
        log = work / "sshd.log"
        wrapper = work / "sshd-inetd.sh"
        wrapper.write_text(_SSHD_WRAPPER.format(pid=sandbox.pid, config=config, log=log))
        for p in (config, log):  # unquoted in the wrapper
            if any(c in str(p) for c in " ,:!\"'"):
                raise ValueError(f"path unsuitable for a socat address: {p}")
        sandbox.sh(mirror.WAIT_IN_SANDBOX)
        forwarder = Forwarder(wrapper, log=work / "socat.log")
    except BaseException:
        sandbox.close()
        raise
    machine = Machine(
        name=name,
        sandbox=sandbox,
        port=forwarder.port,
        host_key=host_key.public_line,
        sshd_log=log,
        forwarder=forwarder,
        work=work,
    )
    try:
        last: list[subprocess.CompletedProcess[str]] = []

        def answered_or_stopped() -> bool:
            last[:] = [machine.ssh(client, "true")]
            return last[0].returncode == 0 or not forwarder.running()

        wait_until(answered_or_stopped, 30, 0.2)
        if last[0].returncode != 0:
            raise RuntimeError(
                f"sshd on {name} (port {forwarder.port}) is not reachable: {last[0].stderr}\n"
                f"{forwarder.messages()}\n{log.read_text() if log.exists() else ''}"
            )
    except BaseException:
        machine.close()
        raise
    return machine


def start_machines(
    count: int,
    work: Path,
    client: KeyPair,
    image_tar: Path,
    containerd2: Path | None = None,
    prefix: str = "m",
    daemons: bool = True,
) -> list[Machine]:
    machines: list[Machine] = []
    try:
        for i in range(1, count + 1):
            name = f"{prefix}{i}"
            machines.append(start_machine(name, work / name, client, image_tar, containerd2, daemons=daemons))
    except BaseException:
        for m in machines:
            m.close()
        raise
    return machines


def snapshot(machine: Machine) -> dict[str, bytes | None]:
    """The WATCHED files of `machine` (None: absent)."""
    return {path: machine.read(path) for path in WATCHED}
