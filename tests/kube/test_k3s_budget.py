"""The k3s node script's step budget, from the shared parts: a hung mirror or a
node that never comes stops the step within its budget, naming what to check.

Real: the script under sh, curl against a loopback server that accepts
connections and never answers. Stand-ins: the k3s binary and systemctl
(tests/kube/fake), as in test_k3s_script.py.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent
SCRIPT = HERE.parents[1] / "components/kube/scripts/k3s-node.sh"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("curl") is None, reason="the k3s node script runs as root and needs curl"
)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback address whose server takes connections into its backlog and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def run(tmp_path: Path, *args: str, budget: int, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    shutil.copy(HERE / "fake/systemctl", bin_dir / "systemctl")
    (tmp_path / "root").mkdir(exist_ok=True)
    started = time.monotonic()
    proc = subprocess.run(
        ["sh", "-s", "--", *args],
        input=SCRIPT.read_text(),
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "GVISOR_FLEET_ROOT": str(tmp_path / "root"),
            "GVISOR_FLEET_STEP_TIMEOUT": str(budget),
            "HOME": str(tmp_path),
            **env,
        },
    )
    return proc, time.monotonic() - started


def test_a_hung_mirror_stops_within_the_budget_naming_the_setting(tmp_path: Path, silent_server: str):
    args = ["server", "v1.36.4+k3s1", silent_server, f"{silent_server}/install.sh", "-", "n1", "-", "-"]
    proc, took = run(tmp_path, "install", *args, budget=4)
    assert proc.returncode == 1
    assert took < 30, f"the step's budget bounds the download: {took:.0f}s"
    assert "stopped at a limit" in proc.stderr, proc.stderr
    assert re.search(r"or [34]s left of the step's 4s;", proc.stderr), proc.stderr
    assert "check the mirror (gvisor-fleet:kubernetes.k3s.releaseUrl)" in proc.stderr
    assert not (tmp_path / "root/usr/local/bin/k3s").exists()


def test_waiting_for_a_node_stops_within_the_budget(tmp_path: Path):
    k3s = tmp_path / "root/usr/local/bin/k3s"
    k3s.parent.mkdir(parents=True)
    shutil.copy(HERE / "fake/k3s", k3s)
    (tmp_path / "root/run").mkdir()
    (tmp_path / "root/run/k3s.active").write_text("")
    proc, took = run(tmp_path, "wait-nodes", "n9", budget=3, GVISOR_FLEET_READY_TRIES="180")
    assert proc.returncode == 1 and "node n9 never joined the cluster" in proc.stderr, proc.stderr
    # (Whole seconds: the budget may have crossed one by the time the wait starts.)
    assert re.search(r"node n9 to register did not become ready within [23]s", proc.stderr), proc.stderr
    assert took < 30
