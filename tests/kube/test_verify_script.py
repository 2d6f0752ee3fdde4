"""The verification Job's script, run for real: it passes inside gVisor and fails outside.

Both gVisor generations are covered: Debian's 2022 runsc reports kernel
release 4.4.0, current builds report 4.19.0-gvisor.

Inside: `runsc do` (Debian's runsc, and a current build when
tests/toolchain/build-gvisor.sh has made one) runs the script as the Job's
pod does: as user 65534 with every capability dropped. Outside: the same
script on this machine's own kernel must fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from components.kube.manifests import NOBODY, VERIFY_SCRIPT, verify_job
from components.kube.settings import parse_kube_settings
from tests.support.paths import CACHE


def runsc_binaries() -> list[Path]:
    found = [Path(p) for p in (shutil.which("runsc"),) if p]
    current = CACHE / "gvisor-go" / os.uname().machine / "runsc"
    return found + ([current] if current.exists() else [])


def job_env() -> dict[str, str]:
    problems: list[str] = []
    s = parse_kube_settings({"enabled": True}, "runsc", problems)
    assert s is not None
    (container,) = verify_job(s, "x86_64")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


@pytest.mark.parametrize(
    ("release", "known"),
    [("4.4.0", True), ("4.19.0-gvisor", True), ("6.1.0-28-amd64", False), ("4.4.0-generic", False)],
)
def test_kernel_release_patterns(tmp_path, release, known):
    fake = tmp_path / "uname"
    fake.write_text(f"#!/bin/sh\necho {release}\n")
    fake.chmod(0o755)
    env = {**os.environ, **job_env(), "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    proc = subprocess.run(["sh", "-c", VERIFY_SCRIPT], env=env, capture_output=True, text=True, timeout=30)
    assert ("FAIL: kernel release" not in proc.stdout) is known, proc.stdout


def test_fails_on_an_ordinary_kernel():
    proc = subprocess.run(
        ["sh", "-c", VERIFY_SCRIPT], env={**os.environ, **job_env()}, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 1
    assert "gvisor_verified=false" in proc.stdout
    assert "FAIL: kernel release" in proc.stdout


@pytest.mark.skipif(os.geteuid() != 0 or not runsc_binaries(), reason="needs root and a runsc binary")
@pytest.mark.parametrize("runsc", runsc_binaries() or [Path("runsc")], ids=str)
def test_passes_inside_gvisor_as_an_unprivileged_user(runsc):
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) drops to the Job's user and capabilities")
    env = [f"{k}={v}" for k, v in job_env().items()]
    drop = [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]
    proc = subprocess.run(
        [str(runsc), "--network=none", "do", "env", *env, "setpriv", *drop, "sh", "-c", f"id -u; {VERIFY_SCRIPT}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == str(NOBODY)
    assert "kernel_release=4.4.0" in lines or "kernel_release=4.19.0-gvisor" in lines
    assert any(line.startswith("boot_banner=") and "Starting gVisor" in line for line in lines)
    assert lines[-1] == "gvisor_verified=true"
