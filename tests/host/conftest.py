"""Fixtures for host tests: real runsc, dockerd and containerd in a sandbox."""

from __future__ import annotations

import os
import shutil
import stat
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


# Paths of the machine running the tests that an engine or the agent in a
# sandbox would write if the sandbox leaked (containerd creates /opt/containerd).
MACHINE_PATHS = (
    "/opt", "/srv", "/etc/docker", "/etc/containerd", "/var/lib/containerd", "/var/lib/docker",
    "/var/lib/gvisor-fleet", "/usr/local/bin", "/root/.docker", "/run/lock/gvisor-fleet.lock",
)  # fmt: skip


def machine_tree() -> dict[str, tuple[int, int, int]]:
    """Type, size and mtime of every entry under MACHINE_PATHS on this machine."""
    entries = {}
    for root in map(Path, MACHINE_PATHS):
        if not root.exists():
            continue
        for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
            st = path.lstat()
            entries[str(path)] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns)
    return entries


@pytest.fixture(scope="session", autouse=True)
def machine_before() -> dict[str, tuple[int, int, int]]:
    """The machine's own tree before the first host test (see test_machine_tree.py)."""
    return machine_tree()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The machine's tree is compared after every other host test has run.
    items.sort(key=lambda item: "test_machine_tree.py" in item.nodeid)


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


@pytest.fixture(scope="session")
def containerd2_bin() -> Path:
    script = REPO / "tests/toolchain/build-containerd.sh"
    out = Path(subprocess.run(["sh", str(script), "--print-dir"], capture_output=True, text=True).stdout.strip())
    if not (out / "containerd").exists():
        subprocess.run(["sh", str(script)], check=True)
    return out


def _start(work: Path, image_tar: Path, before_start: str = "") -> Sandbox:
    sandbox = Sandbox(work)
    try:
        if before_start:
            sandbox.sh(before_start)
        sandbox.sh("systemctl start containerd && systemctl start docker")
        sandbox.sh(
            f"nohup python3 -m http.server {MIRROR_PORT} --bind 127.0.0.1 --directory {CACHE / 'mirror'}"
            " > /var/log/mirror.log 2>&1 &"
        )
        sandbox.sh(f"docker import {image_tar} {TEST_IMAGE} >/dev/null")
        sandbox.sh(f"i=0; until curl -fs {MIRROR_URL}/ >/dev/null; do i=$((i+1)); [ $i -lt 50 ]; sleep 0.1; done")
    except BaseException:
        sandbox.close()
        raise
    return sandbox


@pytest.fixture
def host(tmp_path: Path, releases: Releases, image_tar: Path) -> Iterator[Sandbox]:
    """A fresh machine: Debian's containerd 1.6 and Docker running, the mirror served."""
    sandbox = _start(tmp_path / "host", image_tar)
    yield sandbox
    sandbox.close()


@pytest.fixture(params=["no-config", "debian-version-2-config"])
def host2(request: pytest.FixtureRequest, tmp_path: Path, releases: Releases, image_tar: Path, containerd2_bin: Path):
    """A fresh machine with containerd 2.x (built from source) instead of Debian's 1.6."""
    setup = f"cp {containerd2_bin}/* /usr/local/sbin/"
    if request.param == "no-config":
        setup += " && rm /etc/containerd/config.toml"
    sandbox = _start(tmp_path / "host", image_tar, setup)
    yield sandbox
    sandbox.close()


@pytest.fixture
def host_containerd2(tmp_path: Path, releases: Releases, image_tar: Path, containerd2_bin: Path) -> Iterator[Sandbox]:
    """A fresh machine with containerd 2.x and Debian's version 2 config (the test writes its own)."""
    sandbox = _start(tmp_path / "host", image_tar, f"cp {containerd2_bin}/* /usr/local/sbin/")
    yield sandbox
    sandbox.close()
