"""Every shell script the Kubernetes layer ships or runs in pods is shellcheck-clean."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from components.kube.manifests import SAMPLE_SCRIPT, VERIFY_SCRIPT
from tests.support.paths import REPO

FILES = [REPO / "components/kube/scripts/k3s-node.sh", *sorted((REPO / "tests/kube/fake").iterdir())]

pytestmark = pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_script_files(path):
    proc = subprocess.run(["shellcheck", "-s", "sh", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize(("name", "script"), [("verify", VERIFY_SCRIPT), ("sample", SAMPLE_SCRIPT)])
def test_pod_scripts(tmp_path, name, script):
    path = tmp_path / f"{name}.sh"
    # EXPECTED_KERNEL_RELEASES comes from the Job's env.
    path.write_text('#!/bin/sh\n: "${EXPECTED_KERNEL_RELEASES:=}"\n' + script)
    proc = subprocess.run(["shellcheck", "-s", "sh", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
