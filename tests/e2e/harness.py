"""Real test machines and a real Pulumi stack for the end-to-end tests and the engine benchmark.

A machine is a sandbox from tests/host/sandbox.py (its own mount, network, PID
and cgroup namespaces, real Debian dockerd and containerd) with an OpenSSH
server in it: socat listens on 127.0.0.1:<port> and, per connection, starts
`sshd -i` inside the sandbox's namespaces. Each sandbox serves the local gVisor
release mirror at 127.0.0.1:18080 in its own network namespace, so the agent
downloads from the machine's point of view, as on a real host.

A stack is a copy of the project (Pulumi.yaml, __main__.py, components/) in a
temporary directory, with a local file backend and a passphrase secrets
provider, driven by the Pulumi CLI that tests/toolchain/build-pulumi.sh builds.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.host.mirror import Releases, build_mirror
from tests.host.sandbox import Sandbox

REPO = Path(__file__).parents[2]
TOOLCHAIN = REPO / "tests" / "toolchain"
CACHE = Path(os.environ.get("GVISOR_FLEET_CACHE", Path.home() / ".cache" / "gvisor-fleet"))
MIRROR_PORT = 18080
MIRROR_URL = f"http://127.0.0.1:{MIRROR_PORT}"
TEST_IMAGE = "gvisor-fleet.test/busybox:1"
STACK = "e2e"
# Wall time of each engine command the tests ran, printed at the end of the run.
TIMINGS: dict[str, float] = {}
# The project files a user's checkout has; the copy runs exactly this code.
PROJECT_FILES = ("Pulumi.yaml", "__main__.py", "requirements.txt", "components")

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


# --- toolchain ---------------------------------------------------------------


def pulumi_bin_dir() -> Path:
    out = subprocess.run(
        ["sh", str(TOOLCHAIN / "build-pulumi.sh"), "--print-bin-dir"], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


def build_pulumi() -> Path:
    """Builds (or finds cached) the engine, language host and command provider."""
    out = subprocess.run(["sh", str(TOOLCHAIN / "build-pulumi.sh")], stdout=subprocess.PIPE, text=True, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


def pulumi_env() -> dict[str, str]:
    """The environment tests/toolchain/pulumi-env.sh sets up (offline engine)."""
    out = subprocess.run(
        ["sh", "-c", '. "$1" && env -0', "sh", str(TOOLCHAIN / "pulumi-env.sh")],
        capture_output=True,
        check=True,
    )
    env = {}
    for item in out.stdout.split(b"\0"):
        key, sep, value = item.decode().partition("=")
        if sep:
            env[key] = value
    return env


def build_gvisor() -> Path:
    out = Path(
        subprocess.run(
            ["sh", str(TOOLCHAIN / "build-gvisor.sh"), "--print-dir"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    if not (out / "VERSION").exists():
        subprocess.run(["sh", str(TOOLCHAIN / "build-gvisor.sh")], check=True, stdout=subprocess.DEVNULL)
    return out


def build_containerd2() -> Path:
    """containerd 2.x binaries for the machines (tests/toolchain/build-containerd.sh, built on first use).

    Debian's containerd 1.6 cannot run the current gVisor shim (it speaks
    containerd 2's shim bootstrap protocol), so the machines run containerd 2.
    """
    script = TOOLCHAIN / "build-containerd.sh"
    out = Path(
        subprocess.run(["sh", str(script), "--print-dir"], capture_output=True, text=True, check=True).stdout.strip()
    )
    if not (out / "containerd").exists():
        subprocess.run(["sh", str(script)], check=True, stdout=subprocess.DEVNULL)
    return out


def prepare_mirror() -> Releases:
    gvisor_go = build_gvisor()
    return build_mirror(CACHE / "mirror", gvisor_go, Path(shutil.which("runsc") or "/usr/bin/runsc"))


def make_image_tar(path: Path) -> Path:
    """A tiny root file system (static busybox) for `docker import`: no registry here."""
    busybox = shutil.which("busybox")
    assert busybox
    with tarfile.open(path, "w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for applet in ("sh", "uname", "dmesg", "cat", "head", "echo", "ls", "sleep", "true"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return path


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    socat: subprocess.Popen[bytes]
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
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.socat.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.socat.wait(timeout=10)
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

        sandbox.sh(
            f"nohup python3 -m http.server {MIRROR_PORT} --bind 127.0.0.1 --directory {CACHE / 'mirror'}"
            " > /var/log/mirror.log 2>&1 &"
        )
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
        for p in (config, log, wrapper):
            if any(c in str(p) for c in " ,:!\"'"):
                raise ValueError(f"path unsuitable for a socat address: {p}")
        sandbox.sh(f"i=0; until curl -fs {MIRROR_URL}/ >/dev/null; do i=$((i+1)); [ $i -lt 50 ]; sleep 0.1; done")
    except BaseException:
        sandbox.close()
        raise
    port = free_port()
    socat = subprocess.Popen(
        ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", f"EXEC:/bin/sh {wrapper}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(work / "socat.log", "w"),  # noqa: SIM115
        start_new_session=True,
    )
    machine = Machine(
        name=name, sandbox=sandbox, port=port, host_key=host_key.public_line, sshd_log=log, socat=socat, work=work
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            r = machine.ssh(client, "true")
            if r.returncode == 0:
                break
            if socat.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"sshd on {name} (port {port}) is not reachable: {r.stderr}\n"
                    f"{(work / 'socat.log').read_text()}\n{log.read_text() if log.exists() else ''}"
                )
            time.sleep(0.2)
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


# --- Pulumi stack ------------------------------------------------------------


@dataclass
class Run:
    """One `pulumi` command: what it printed, how long it took, what the engine did."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    events: list[dict[str, object]] = field(default_factory=list)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def ops(self, type_: str | None = None) -> dict[str, set[str]]:
        """Resource name -> the engine's operations on it (create, same, update, replace, ...).

        Read from the engine's own event log, optionally for one resource type.
        """
        result: dict[str, set[str]] = {}
        for event in self.events:
            pre = event.get("resourcePreEvent")
            if not isinstance(pre, dict):
                continue
            meta = pre.get("metadata", {})
            if type_ is not None and meta.get("type") != type_:
                continue
            urn = str(meta.get("urn", ""))
            result.setdefault(urn.rsplit("::", 1)[-1], set()).add(str(meta.get("op")))
        return result

    def check(self) -> Run:
        if self.returncode != 0:
            raise AssertionError(
                f"`pulumi {shlex.join(self.args)}` failed ({self.returncode}) after {self.seconds:.1f}s:\n"
                f"{self.stdout[-6000:]}\n{self.stderr[-4000:]}"
            )
        return self


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Cancels a pulumi command as Ctrl-C twice would (it then stops its plugins), then kills it."""
    for sig, grace in ((signal.SIGINT, 20), (signal.SIGINT, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            return proc.communicate(timeout=grace)
    return "", ""


class Stack:
    """A copy of the project with its own state, secrets passphrase and stack."""

    def __init__(self, work: Path, name: str = STACK) -> None:
        self.work = work
        self.name = name
        self.dir = work / "project"
        self.state = work / "state"
        self.logs = work / "logs"
        # The engine's plugins write temporary files (the kubernetes provider its
        # kubeconfig copies): keep them in the test's own folder.
        self.tmp = work / "tmp"
        for d in (self.dir, self.state, self.logs, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        for item in PROJECT_FILES:
            src = REPO / item
            if src.is_dir():
                shutil.copytree(src, self.dir / item, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(src, self.dir / item)
        (self.dir / "stacks").mkdir(exist_ok=True)
        (self.dir / ".venv").symlink_to(REPO / ".venv")
        self.passphrase = secrets.token_urlsafe(24)
        self.env = pulumi_env()
        self.env.update(
            PULUMI_BACKEND_URL=self.state.as_uri(),
            PULUMI_CONFIG_PASSPHRASE=self.passphrase,
            NO_COLOR="1",
            TMPDIR=str(self.tmp),
        )
        self.env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
        self.env.pop("PULUMI_ACCESS_TOKEN", None)
        self.runs: list[Run] = []
        self._count = 0

    @property
    def config_file(self) -> Path:
        return self.dir / "stacks" / f"Pulumi.{self.name}.yaml"

    def pulumi(
        self, *args: str, stdin: str | None = None, timeout: float = 900, events: bool = False, offline: bool = False
    ) -> Run:
        """Runs `pulumi ARGS` in the project copy; offline=True runs it in a network namespace with only loopback."""
        argv = [*args, "--non-interactive", "--color", "never"]
        event_log = None
        if events:
            self._count += 1
            event_log = self.logs / f"{self._count:02d}-{args[0]}.events.jsonl"
            argv += ["--event-log", str(event_log)]
        env = dict(self.env)
        if event_log:
            env["PULUMI_DEBUG_COMMANDS"] = "true"  # --event-log is one of the debug flags
        start = time.monotonic()
        prefix = ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"] if offline else []
        proc = subprocess.Popen(
            [*prefix, "pulumi", *argv],
            cwd=self.dir,
            env=env,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            stdout, stderr = _stop(proc)
            stderr += f"\n(stopped after {timeout:.0f}s)"
        run = Run(list(args), proc.returncode, stdout, stderr, time.monotonic() - start)
        if event_log and event_log.exists():
            run.events = [json.loads(line) for line in event_log.read_text().splitlines() if line.strip()]
        self.runs.append(run)
        return run

    def init(self, config: Mapping[str, object], private_key: str) -> None:
        """Creates the stack, writes its config as a user would, sets the key as a secret."""
        self.pulumi("stack", "init", self.name, "--secrets-provider", "passphrase").check()
        self.set_config(config)
        self.pulumi("config", "set", "--secret", "sshPrivateKey", stdin=private_key).check()

    def set_config(self, config: Mapping[str, object]) -> None:
        """Replaces every plain gvisor-fleet:* value in the stack file; secure values stay."""
        doc = yaml.safe_load(self.config_file.read_text()) if self.config_file.exists() else None
        doc = doc or {}
        current = doc.get("config") or {}
        kept: dict[str, object] = {k: v for k, v in current.items() if isinstance(v, dict) and "secure" in v}
        kept.update({f"gvisor-fleet:{k}": v for k, v in config.items()})
        doc["config"] = kept
        self.config_file.write_text(yaml.safe_dump(doc, sort_keys=True))

    def outputs(self) -> dict[str, object]:
        run = self.pulumi("stack", "output", "--json").check()
        result = json.loads(run.stdout)
        assert isinstance(result, dict)
        return result

    def state_files(self) -> list[Path]:
        return sorted(p for p in self.state.rglob("*") if p.is_file())

    def checkpoint(self) -> Any:
        """The stack's state file (JSON) as the file backend keeps it."""
        return json.loads((self.state / ".pulumi" / "stacks" / "gvisor-fleet" / f"{self.name}.json").read_text())


def stack_config(
    machines: Sequence[Machine],
    releases: Releases,
    containerd: bool,
    overrides: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """The test stack's settings (see Pulumi.yaml): the local mirror and image.

    containerd=False turns the containerd step off, for machines with Debian's
    containerd 1.6, which cannot run the current gVisor shim (it speaks
    containerd 2's shim bootstrap protocol).
    """
    config: dict[str, object] = {
        "machines": [m.spec() for m in machines],
        "baseUrl": MIRROR_URL,
        "release": releases.current,
        "verifyImage": TEST_IMAGE,
        "docker": "required",
        "containerd": "required" if containerd else "off",
    }
    config.update(overrides or {})
    return config


SECRET_SIG = ("4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270")


def secret_values(node: object) -> list[dict[str, object]]:
    """Every secret value object (Pulumi's secret signature) in a state document."""
    found: list[dict[str, object]] = []
    if isinstance(node, dict):
        if node.get(SECRET_SIG[0]) == SECRET_SIG[1]:
            found.append(node)
        for v in node.values():
            found += secret_values(v)
    elif isinstance(node, list):
        for v in node:
            found += secret_values(v)
    return found


def leaks(secrets_: Iterable[str], texts: Iterable[tuple[str, str]]) -> list[str]:
    """Where any secret (or any line of a multi-line secret) appears in plain text."""
    needles: set[str] = set()
    for s in secrets_:
        needles.add(s.strip())
        needles.update(line.strip() for line in s.splitlines() if len(line.strip()) >= 16 and "PRIVATE KEY" not in line)
    found = []
    for where, text in texts:
        for needle in needles:
            if needle and needle in text:
                found.append(f"{where}: {needle[:24]}...")
                break
    return found
