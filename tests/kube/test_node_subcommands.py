"""Each Kubernetes node script offers exactly the subcommands its module calls: no dead code."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.support.paths import REPO

# Each node script and the module that builds its command lines.
SCRIPTS = {
    "k3s-node.sh": "k3s.py",
    "kubeadm-node.sh": "kubeadm.py",
}


def dispatched(script: str) -> set[str]:
    """The arms of the script's final `case $sub in`."""
    text = (REPO / "components/kube/scripts" / script).read_text()
    return set(re.findall(r"^    ([a-z-]+)\) cmd_[a-z_]+ \"\$@\" ;;$", text, re.MULTILINE))


def called(module: str) -> set[str]:
    """Every subcommand the module builds a command line for."""
    source = (REPO / "components/kube" / module).read_text()
    return set(re.findall(r'agent_command\(\s*"([a-z-]+)"', source))


@pytest.mark.parametrize(("script", "module"), SCRIPTS.items())
def test_every_subcommand_has_a_caller_and_every_call_a_subcommand(script, module):
    assert dispatched(script), "the dispatch pattern no longer matches the script: update this test"
    assert dispatched(script) == called(module)


@pytest.mark.parametrize("script", SCRIPTS)
def test_usage_lists_exactly_the_dispatched_subcommands(script):
    (usage,) = re.findall(r"usage: sh -s -- ([a-z|-]+) ARGS", (REPO / "components/kube/scripts" / script).read_text())
    assert set(usage.split("|")) == dispatched(script)


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_removed_subcommand_is_refused_with_the_usage(script, tmp_path):
    proc = subprocess.run(
        ["sh", "-s", "--", "template-plan"],
        input=(REPO / "components/kube/scripts" / script).read_text(),
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "GVISOR_FLEET_ROOT": str(tmp_path)},
        cwd=tmp_path,
        timeout=30,
    )
    assert proc.returncode == 1
    assert "usage: sh -s -- install|" in proc.stderr
    assert list(tmp_path.iterdir()) == [], "a refused subcommand must touch nothing"
