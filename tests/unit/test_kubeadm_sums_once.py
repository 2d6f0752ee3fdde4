"""The kubeadm node script's check of a releaseDir copy: each file hashed once, every name still checked.

Runs the script's own sums_once with the system's sha512sum on a folder laid
out as the copy unpacks (the three commands hard links to one file).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from components.kube.kubeadm import node_script
from tests.support.shell import shell_function


def digest(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest()


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    (tmp_path / "kubeadm").write_bytes(b"one multi-call program")
    for name in ("kubelet", "kubectl"):
        os.link(tmp_path / "kubeadm", tmp_path / name)
    (tmp_path / "cni-plugins.tgz").write_bytes(b"plugins")
    return tmp_path


def sums(copy: Path, **wrong: str) -> str:
    lines = [f"{wrong.get(p.name, digest(p.read_bytes()))}  {p.name}" for p in sorted(copy.iterdir())]
    return "\n".join(lines) + "\n"


def check(copy: Path, listed: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """(sha512sum -c on what sums_once keeps, what it kept)."""
    function = shell_function(node_script(), "sums_once")
    kept = subprocess.run(["sh", "-c", f"{function}sums_once"], input=listed, cwd=copy, capture_output=True, text=True)
    assert kept.returncode == 0, kept.stderr
    checked = subprocess.run(["sha512sum", "-c", "--quiet", "-"], input=kept.stdout, cwd=copy, capture_output=True,
                             text=True)  # fmt: skip
    return checked, kept.stdout


def test_hard_links_are_hashed_once_and_the_copy_passes(copy: Path):
    checked, kept = check(copy, sums(copy))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    names = [line.split("  ", 1)[1] for line in kept.splitlines()]
    assert names == ["cni-plugins.tgz", "kubeadm"], kept


def test_a_corrupt_file_fails(copy: Path):
    (copy / "cni-plugins.tgz").write_bytes(b"changed")
    checked, _ = check(copy, sums(copy, **{"cni-plugins.tgz": digest(b"plugins")}))
    assert checked.returncode != 0 and "cni-plugins.tgz: FAILED" in checked.stdout


def test_a_link_listed_with_another_digest_is_still_checked_and_fails(copy: Path):
    checked, _ = check(copy, sums(copy, kubectl=digest(b"another program")))
    assert checked.returncode != 0 and "kubectl: FAILED" in checked.stdout, checked.stdout


def test_a_missing_file_fails(copy: Path):
    listed = sums(copy) + f"{digest(b'x')}  images/pause.tar\n"
    checked, _ = check(copy, listed)
    assert checked.returncode != 0 and "images/pause.tar" in checked.stdout + checked.stderr
