"""The host agent script and the command lines that run it over SSH.

The script reaches each machine once, as a file named by its content hash in
the login user's home (copied over SFTP, which needs no sudo), and each step
runs it from there: `[sudo -n] sh FILE [-tTIMEOUT] [-iINSTANCE] SUBCOMMAND ...`.
The file checks itself against the hash in its name before it does anything.
The steps name the hash, so a change to the script still shows in `pulumi
preview` as a change to every step, while the state keeps the script
once per machine as an asset hash, not as text in every step's inputs and
outputs. The lines are short on purpose: each step keeps its create and its
delete twice in the state (inputs and outputs).
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Mapping
from functools import cache
from pathlib import Path

SCRIPT_PATH = Path(__file__).parent / "scripts" / "gvisor-host.sh"


@cache
def agent_script() -> str:
    return SCRIPT_PATH.read_text()


@cache
def agent_sha256() -> str:
    return hashlib.sha256(agent_script().encode()).hexdigest()


# The folder in the login user's home that holds the copied script (SFTP paths
# are relative to it); the install step's delete removes it, last on destroy.
AGENT_DIR = ".gvisor-fleet"
# The copies' name before the hash. The folder's older remover (an
# `agent-cleanup` step, gone since) matched `agent-*`: a stack updated from
# that version deletes it, and it must not take the new copy along.
AGENT_PREFIX = "gvisor-host-"


# The script's own step timeout when the line names none (its STEP_TIMEOUT).
SCRIPT_STEP_TIMEOUT = 900


def agent_file() -> str:
    """Where the script lands, relative to the login user's home: named by its SHA-256 (the
    first 64 bits, which the script checks itself against)."""
    return f"{AGENT_DIR}/{AGENT_PREFIX}{agent_sha256()[:16]}"


def agent_run(
    subcommand: str, *args: str, sudo: bool, step_timeout: int, instance: str = "", requested: str = ""
) -> str:
    """A command line running one subcommand of the copied script.

    step_timeout is the stack's bound for one step (gvisor-fleet:stepTimeout);
    instance, when given, names the machine's generation: the script ignores it,
    so a new one only makes the step run again (an update, not a replacement);
    requested, when given, is the release the stack asked for (`latest`) when the
    line installs what it resolved to: the script ignores it too, policies read it.
    """
    options = [f"-t{int(step_timeout)}"] if int(step_timeout) != SCRIPT_STEP_TIMEOUT else []
    options += [f"-i{instance}"] if instance else []
    options += [f"-r{requested}"] if requested else []
    line = shlex.join(("sh", agent_file(), *options, subcommand, *args))
    return f"sudo -n {line}" if sudo else line


def agent_command(subcommand: str, *args: str, sudo: bool = False) -> str:
    """A shell command line running one agent subcommand; every part quoted."""
    line = " ".join(shlex.quote(part) for part in ("sh", "-s", "--", subcommand, *args))
    return f"sudo -n {line}" if sudo else line


def parse_facts(stdout: str) -> dict[str, str]:
    """key=value lines from the agent's stdout; other lines are ignored."""
    facts: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and key.replace("_", "").isalnum():
            facts[key] = value
    return facts


def checks_passed(facts: Mapping[str, str]) -> bool:
    """True when every runtime the agent verified behaved like gVisor."""
    results = [facts.get(k) for k in ("runsc_ok", "docker_ok", "containerd_ok")]
    return results[0] == "true" and all(r in ("true", "skipped") for r in results[1:])
