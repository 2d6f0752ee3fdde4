"""A real Pulumi stack for the end-to-end tests, the cluster tier and the engine benchmarks.

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
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.ssh_machines import Machine
from tests.support.image import TEST_IMAGE
from tests.support.mirror import MIRROR_URL, Releases
from tests.support.paths import REPO
from tests.support.toolchain import pulumi_env

STACK = "e2e"
# Wall time of each engine command the tests ran, printed at the end of the run.
TIMINGS: dict[str, float] = {}
# The project files a user's checkout has; the copy runs exactly this code.
PROJECT_FILES = ("Pulumi.yaml", "__main__.py", "requirements.txt", "components")


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

    def step_seconds(self) -> dict[str, int]:
        """Resource name -> seconds from the engine's start of its step to its outputs (or failure)."""
        return {name: end - start for name, (start, end) in self.step_spans().items()}

    def step_spans(self) -> dict[str, tuple[int, int]]:
        """Resource name -> (start, end) of its step: the engine's timestamps (seconds) of its
        start and of its outputs (or failure)."""
        started: dict[str, int] = {}
        spans: dict[str, tuple[int, int]] = {}
        for event in self.events:
            stamp = event.get("timestamp")
            for kind in ("resourcePreEvent", "resOutputsEvent", "resOpFailedEvent"):
                body = event.get(kind)
                if not isinstance(body, dict) or not isinstance(stamp, int):
                    continue
                name = str(body.get("metadata", {}).get("urn", "")).rsplit("::", 1)[-1]
                if kind == "resourcePreEvent":
                    started[name] = stamp
                elif name in started:
                    spans[name] = (started[name], stamp)
        return spans

    def failed_steps(self) -> set[str]:
        """Names of the resources whose step failed, from the engine's event log."""
        return {
            str(body.get("metadata", {}).get("urn", "")).rsplit("::", 1)[-1]
            for event in self.events
            if isinstance(body := event.get("resOpFailedEvent"), dict)
        }

    def errors(self) -> str:
        """The engine's error diagnostics, each with the lines under it, without Python tracebacks.

        A failed step's own message sits in the middle of a long output, above the
        tracebacks of the program being cancelled: this is what to show.
        """
        kept: list[str] = []
        in_error = False
        for line in self.output.splitlines():
            text = line.strip()
            if text.startswith("error:"):
                in_error = True
            elif not text or text.startswith(("Traceback", "File ", "During handling", "Resources:", "Outputs:")):
                in_error = False
            elif line.startswith("  ") and text.endswith("):") and "(" in text:
                in_error = False  # the next resource's diagnostics heading
            if in_error:
                kept.append(line)
        return "\n".join(kept)[-12000:]

    def check(self) -> Run:
        if self.returncode != 0:
            raise AssertionError(
                f"`pulumi {shlex.join(self.args)}` failed ({self.returncode}) after {self.seconds:.1f}s:\n"
                f"{self.errors() or self.stdout[-6000:]}\n{self.stderr[-4000:]}"
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


def largest_resources(exported: str | bytes, count: int = 8) -> str:
    """The state's largest resources by bytes of JSON, one per line: what a state-size failure shows."""
    resources = json.loads(exported)["deployment"]["resources"]
    sized = sorted(((len(json.dumps(r)), r["urn"].rsplit("::", 1)[-1]) for r in resources), reverse=True)
    return "\n".join(f"  {size:6d}  {name}" for size, name in sized[:count])


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


def record(name: str, run: Run) -> None:
    """Keeps the wall time of `run` for the end-of-run summary (TIMINGS)."""
    TIMINGS[name] = round(run.seconds, 2)
