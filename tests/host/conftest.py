"""Fixtures for host tests: real runsc, dockerd and containerd in a sandbox."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.host import machine_tree
from tests.host.sandbox import Sandbox
from tests.support import mirror
from tests.support.image import TEST_IMAGE, make_image_tar
from tests.support.mirror import Releases, build_mirror
from tests.support.toolchain import build_containerd2, build_gvisor

pytestmark = pytest.mark.host


@pytest.fixture(scope="session", autouse=True)
def machine_before() -> dict[str, tuple[int, int, int]]:
    """The machine's own tree before the first host test (see test_machine_tree.py)."""
    return machine_tree.machine_before()


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
    return build_gvisor()


@pytest.fixture(scope="session")
def releases(gvisor_go: Path) -> Releases:
    return build_mirror(mirror.MIRROR_ROOT, gvisor_go, mirror.debian_runsc())


@pytest.fixture(scope="session")
def image_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny root file system (static busybox) for `docker import`: no registry here."""
    return make_image_tar(tmp_path_factory.mktemp("image") / "busybox-rootfs.tar")


@pytest.fixture(scope="session")
def containerd2_bin() -> Path:
    return build_containerd2()


def _start(work: Path, image_tar: Path, before_start: str = "") -> Sandbox:
    sandbox = Sandbox(work)
    try:
        if before_start:
            sandbox.sh(before_start)
        sandbox.sh("systemctl start containerd && systemctl start docker")
        sandbox.sh(mirror.serve_in_sandbox())
        sandbox.sh(f"docker import {image_tar} {TEST_IMAGE} >/dev/null")
        sandbox.sh(mirror.WAIT_IN_SANDBOX)
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
