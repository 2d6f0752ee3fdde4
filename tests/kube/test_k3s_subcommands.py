"""The k3s node script offers exactly the subcommands the program calls: no dead code."""

from __future__ import annotations

import re
import subprocess

from tests.support.paths import REPO

SCRIPT = REPO / "components/kube/scripts/k3s-node.sh"


def dispatched() -> set[str]:
    """The arms of the script's final `case $sub in`."""
    return set(re.findall(r"^    ([a-z-]+)\) cmd_[a-z_]+ \"\$@\" ;;$", SCRIPT.read_text(), re.MULTILINE))


def called() -> set[str]:
    """Every subcommand the Kubernetes layer builds a command line for."""
    sources = "".join(p.read_text() for p in sorted((REPO / "components/kube").glob("*.py")))
    return set(re.findall(r'agent_command\(\s*"([a-z-]+)"', sources))


def test_every_subcommand_has_a_caller_and_every_call_a_subcommand():
    assert dispatched(), "the dispatch pattern no longer matches the script: update this test"
    assert dispatched() == called()


def test_usage_lists_exactly_the_dispatched_subcommands():
    (usage,) = re.findall(r"usage: sh -s -- ([a-z|-]+) ARGS", SCRIPT.read_text())
    assert set(usage.split("|")) == dispatched()


def test_a_removed_subcommand_is_refused_with_the_usage(tmp_path):
    proc = subprocess.run(
        ["sh", "-s", "--", "template-plan"],
        input=SCRIPT.read_text(),
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "GVISOR_FLEET_ROOT": str(tmp_path)},
        timeout=30,
    )
    assert proc.returncode == 1
    assert "usage: sh -s -- install|" in proc.stderr
    assert list(tmp_path.iterdir()) == [], "a refused subcommand must touch nothing"
