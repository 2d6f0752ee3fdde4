"""Fixtures for host tests: real runsc, dockerd and containerd in a sandbox."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.host.mirror import Releases, build_mirror
from tests.host.sandbox import Sandbox

REPO = Path(__file__).parents[2]
CACHE = Path(os.environ.get("GVISOR_FLEET_CACHE", Path.home() / ".cache" / "gvisor-fleet"))
MIRROR_PORT = 18080
MIRROR_URL = f"http://127.0.0.1:{MIRROR_PORT}"
TEST_IMAGE = "gvisor-fleet.test/busybox:1"

pytestmark = pytest.mark.host


def _missing_prerequisites() -> str | None:
    if os.geteuid() != 0:
        return "host tests need root (namespaces, dockerd, containerd)"
    for tool in ("unshare", "nsenter", "dockerd", "containerd", "ctr", "runc", "busybox", "curl"):
        if shutil.which(tool) is None:
            return f"host tests need '{tool}' (sh .ci/install-host-deps.sh installs it)"
    return None


@pytest.fixture(scope="session")
def gvisor_go() -> Path:
    why = _missing_prerequisites()
    if why:
        pytest.skip(why)
    out = Path(
        subprocess.run(
            ["sh", str(REPO / "tests/toolchain/build-gvisor.sh"), "--print-dir"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    if not (out / "VERSION").exists():
        subprocess.run(["sh", str(REPO / "tests/toolchain/build-gvisor.sh")], check=True)
    return out


@pytest.fixture(scope="session")
def releases(gvisor_go: Path) -> Releases:
    return build_mirror(CACHE / "mirror", gvisor_go, Path(shutil.which("runsc") or "/usr/bin/runsc"))


@pytest.fixture(scope="session")
def image_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny root file system (static busybox) for `docker import`: no registry here."""
    tar_path = tmp_path_factory.mktemp("image") / "busybox-rootfs.tar"
    busybox = shutil.which("busybox")
    assert busybox
    applets = ["sh", "uname", "dmesg", "cat", "head", "echo", "ls", "sleep", "true"]
    with tarfile.open(tar_path, "w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for applet in applets:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return tar_path


@pytest.fixture
def host(tmp_path: Path, releases: Releases, image_tar: Path) -> Iterator[Sandbox]:
    """A fresh machine: Debian's containerd and Docker running, the mirror served."""
    sandbox = Sandbox(tmp_path / "host")
    try:
        sandbox.sh("systemctl start containerd && systemctl start docker")
        sandbox.sh(
            f"nohup python3 -m http.server {MIRROR_PORT} --bind 127.0.0.1 --directory {CACHE / 'mirror'}"
            " > /var/log/mirror.log 2>&1 &"
        )
        sandbox.sh(f"docker import {image_tar} {TEST_IMAGE} >/dev/null")
        sandbox.sh(f"i=0; until curl -fs {MIRROR_URL}/ >/dev/null; do i=$((i+1)); [ $i -lt 50 ]; sleep 0.1; done")
        yield sandbox
    finally:
        sandbox.close()
