"""The host agent script and the command lines that run it over SSH.

The script travels on stdin (`sh -s -- <subcommand> ...`): no file copy, no
SFTP (which cannot sudo), no SSH `AcceptEnv`, and a change to the script shows
in `pulumi preview` as a change to the commands that use it.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from functools import cache
from pathlib import Path

SCRIPT_PATH = Path(__file__).parent / "scripts" / "gvisor-host.sh"


@cache
def agent_script() -> str:
    return SCRIPT_PATH.read_text()


def agent_stdin(step_timeout: int) -> str:
    """The script as sent: the stack's time bound for one step (gvisor-fleet:stepTimeout)
    set on its second line, so the command lines stay as they are."""
    shebang, _, rest = agent_script().partition("\n")
    return f"{shebang}\nGVISOR_FLEET_STEP_TIMEOUT={int(step_timeout)} # gvisor-fleet:stepTimeout\n{rest}"


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
