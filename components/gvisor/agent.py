"""The host agent script and the command lines that run it over SSH.

The script reaches each machine once, as a file named by its content hash in
the login user's home (copied over SFTP, which needs no sudo), and each step
runs it from there: `sh -c CHECK <copy's name> FILE TIMEOUT -- <subcommand>
...`. CHECK refuses a file that is missing or differs from the hash in its
name (saying how to copy it again), then runs it, through `sudo -n` for
other users than root. The steps name the hash, so a change to
the script still shows in `pulumi preview` as a change to every step, while
the state keeps the 47 KB script once per machine as an asset hash, not as
text in every step's inputs and outputs.
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
# are relative to it); destroy removes it after the last step that needs it.
AGENT_DIR = ".gvisor-fleet"


def agent_file() -> str:
    """Where the script lands, relative to the login user's home: named by its SHA-256 (the
    first 128 bits, which the steps check the file against)."""
    return f"{AGENT_DIR}/agent-{agent_sha256()[:32]}"


# Runs on the login user's shell as `sh -c`, so any login shell works: $0 is
# the copy's resource name, then FILE TIMEOUT -- SUBCOMMAND ARGS. A file that
# is missing or whose SHA-256 does not start with the hash in its name is
# refused. Short on purpose: each step keeps its lines twice in the state.
_CHECK = 'f=$1 t=$2;shift 3;case $(sha256sum<"$f") in "${f##*-}"*)'
_RUN = 'GVISOR_FLEET_STEP_TIMEOUT=$t sh "$f" "$@";;esac;'
_REFUSE = (
    'echo "gvisor-fleet: $HOME/$f is missing or altered; copy it again: pulumi up --replace <URN of $0>">&2;exit 3'
)


def agent_run(subcommand: str, *args: str, sudo: bool, step_timeout: int, copy_name: str) -> str:
    """A command line running one subcommand of the copied script, after checking its hash.

    step_timeout is the stack's bound for one step (gvisor-fleet:stepTimeout);
    copy_name names the resource that copies the script, for the error message.
    """
    run = "exec sudo -n env " if sudo else "exec env "
    program = _CHECK + run + _RUN + _REFUSE
    parts = ("sh", "-c", program, copy_name, agent_file(), str(int(step_timeout)), "--", subcommand, *args)
    return shlex.join(parts)


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
