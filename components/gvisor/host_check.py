"""HostCheck: one machine's drift, read over SSH on refresh, repaired by `up`.

pulumi-command's remote.Command has no read, so `pulumi refresh` cannot see
a host changed by hand. This resource (a dynamic provider) can:

- its input `recorded` is a digest of each item the steps put on the host
  (drift.py), from the agent's read-only `check`, which the verify step runs
  last: create and a plain update open no SSH session of their own;
- read (`pulumi refresh`, `pulumi preview --refresh`): checks again and sets
  each changed item's property to "changed by hand" or "removed by hand", so
  the preview names the machine (the resource) and the item (the property);
- diff: compares state and program only, so a plain `up` opens no SSH session;
- update after a refresh found drift: runs again the step of each drifted item
  (its create line, which is idempotent), then verify, then checks that every
  item is back as recorded, or fails naming what is not.

Reads and repairs run with the system's `ssh` client: at most READERS at
once, each bounded in time. The login key is a secret input and a secret
output; it reaches `ssh` as a file only this process can read, removed after.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from components.gvisor.agent import parse_facts
from components.gvisor.drift import (
    AS_INSTALLED,
    CheckError,
    describe,
    digests,
    drifted,
    recorded_digests,
    repair_plan,
    statuses,
)

# Reads and repairs at once, across the fleet (the engine may ask for more).
READERS = 4
_slots = threading.BoundedSemaphore(READERS)
# Seconds a read may take in all (connect, run, answer); a repair gets the step timeout.
READ_TIMEOUT = 60
CONNECT_TIMEOUT = 15
# The state keeps these inputs; the items' statuses come on top.
INPUTS = ("connection", "check", "repair", "timeout", "step_timeout", "items", "recorded")


def openssh_key(text: str) -> str:
    """The key as the OpenSSH client reads it: the compact PKCS#8 form (lean_state.py) back to OpenSSH's."""
    if "BEGIN PRIVATE KEY" not in text:
        return text
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(text.encode(), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()


@contextlib.contextmanager
def ssh_argv(connection: Mapping[str, Any]) -> Iterator[tuple[list[str], dict[str, str]]]:
    """The `ssh` command (without the remote command) and environment for CONNECTION."""
    host, port, user = str(connection["host"]), int(connection.get("port") or 22), str(connection.get("user") or "root")
    key, agent = connection.get("privateKey"), connection.get("agentSocketPath")
    if not key and not agent:
        raise CheckError(f"{user}@{host}:{port}: drift checks log in with a key or an SSH agent; it has neither")
    with tempfile.TemporaryDirectory(prefix="gvisor-fleet-ssh-") as tmp:
        options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}", "-o", "LogLevel=ERROR"]
        if connection.get("hostKey"):
            known = Path(tmp) / "known_hosts"
            name = host if port == 22 else f"[{host}]:{port}"
            known.write_text(f"{name} {connection['hostKey']}\n")
            options += ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known}"]
        else:  # as pulumi-command does without a pinned host key
            options += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        env = dict(os.environ)
        if key:
            key_file = Path(tmp) / "id"
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(openssh_key(str(key)).rstrip("\n") + "\n")
            options += ["-i", str(key_file), "-o", "IdentitiesOnly=yes"]
        if agent:
            env["SSH_AUTH_SOCK"] = str(agent)
        yield ["ssh", *options, "-p", str(port), f"{user}@{host}"], env


def _where(connection: Mapping[str, Any]) -> str:
    return f"{connection.get('user') or 'root'}@{connection['host']}:{int(connection.get('port') or 22)}"


def run_remote(connection: Mapping[str, Any], command: str, timeout: float, what: str) -> str:
    """COMMAND's stdout on the host; CheckError naming the host, WHAT ran and the reason otherwise."""
    where = _where(connection)
    with _slots, ssh_argv(connection) as (argv, env):
        try:
            done = subprocess.run(
                [*argv, command], capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            raise CheckError(f"{where}: {what} gave no answer within {timeout:.0f}s (stopped)") from None
        except FileNotFoundError:
            raise CheckError("the OpenSSH client (ssh) is not installed on the machine running Pulumi") from None
    if done.returncode == 255:
        raise CheckError(f"{where}: SSH failed for {what}: {done.stderr.strip()[-400:]}")
    if done.returncode != 0:
        raise CheckError(f"{where}: {what} failed (exit {done.returncode}): {done.stderr.strip()[-600:]}")
    return done.stdout


def _observe(props: Mapping[str, Any]) -> dict[str, str]:
    timeout = float(props.get("timeout") or READ_TIMEOUT)
    facts = parse_facts(run_remote(props["connection"], props["check"], timeout, "the drift check"))
    return digests(facts, props["items"])


class _HostCheckProvider(ResourceProvider):
    # It captures nothing secret (the key comes with each call's properties): kept
    # in the state as it is, not encrypted, which makes each check's record shorter.
    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        connection = props["connection"]
        return CreateResult(id_=f"{connection['host']}:{int(connection.get('port') or 22)}", outs=props)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        found = statuses(props.get("recorded") or {}, _observe(props))
        outs = {**props, **found}
        inputs = {k: outs[k] for k in (*INPUTS, *props["items"]) if k in outs}
        return ReadResult(id_=id_, outs=outs, inputs=inputs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in news if k != "__provider" and olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        found = drifted(olds)
        steps = repair_plan(found, news["repair"])
        timeout = float(news.get("step_timeout") or 900) + 60
        for step in steps:
            run_remote(news["connection"], news["repair"][step], timeout, f"the repair's {step} step")
        if steps:
            left = {n: s for n, s in statuses(news["recorded"], _observe(news)).items() if s != AS_INSTALLED}
            if left:
                raise CheckError(f"{_where(news['connection'])}: still not as installed after repair: {describe(left)}")
        return UpdateResult(outs=news)


def checks_provider() -> pulumi.ProviderResource:
    """An explicit provider for the checks, one per program run (see GvisorHost's `checks` argument).

    The default one of dynamic resources is given the whole stack config as
    its inputs: the state would keep a copy of it, and every change of any
    setting (adding a machine) would show as an update of that provider.
    """
    return pulumi.ProviderResource("pulumi-python", "gvisor-fleet-checks", {})


class HostCheck(Resource):
    """Drift of one machine: read over SSH by refresh, repaired by up (see the module docs)."""

    def __init__(
        self,
        name: str,
        connection: Mapping[str, pulumi.Input[Any]],
        check: str,
        repair: Mapping[str, pulumi.Input[str]],
        items: Sequence[str],
        verified: pulumi.Output[str],
        step_timeout: int,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """VERIFIED: the verify step's stdout, which ends with the check's facts."""
        props: dict[str, Any] = {
            "connection": connection,
            "check": check,
            "repair": dict(repair),
            "timeout": READ_TIMEOUT,
            "step_timeout": step_timeout,
            "items": list(items),
            "recorded": verified.apply(lambda out: recorded_digests(out, items)),
            **{n: AS_INSTALLED for n in items},
        }
        secret = pulumi.ResourceOptions(additional_secret_outputs=["connection"])
        super().__init__(_HostCheckProvider(), name, props, pulumi.ResourceOptions.merge(opts, secret))
