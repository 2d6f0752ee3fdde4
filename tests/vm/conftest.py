"""Fixtures for the VM tests: one x86_64 and one aarch64 VM, booted together, no mocks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from components.fleet.keys import generate_ed25519
from tests.support.loopback import Server
from tests.vm.qemu_vms import (
    DISK_SIZE,
    LAN,
    MEMORY,
    Vm,
    describe_failure,
    ensure_images,
    ensure_mirror,
    missing_prerequisite,
    start_all,
)  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "vm: boots real x86_64 and aarch64 QEMU VMs through the qemu backend (minutes; needs root)"
    )


@pytest.fixture(scope="session")
def images() -> dict[str, Path]:
    why = missing_prerequisite()
    if why:
        pytest.skip(why)
    return ensure_images()


@pytest.fixture(scope="session")
def mirror(images: dict[str, Path]) -> Iterator[tuple[str, str]]:
    """(base URL as the guests see it, release) of a local gVisor mirror served on the host's 127.0.0.1."""
    root, release = ensure_mirror()
    with Server(root) as server:
        yield f"http://10.0.2.2:{server.port}", release


@pytest.fixture(scope="session")
def vms(images: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Vm]]:
    """Both VMs, started at the same time, on one LAN; each answers SSH with its pinned host key.

    One login key for both, as a stack has one.
    """
    work = tmp_path_factory.mktemp("vms")
    login = generate_ed25519("vm-test login")
    machines = {arch: Vm(name=f"vm-{arch.replace('_', '-')}", arch=arch, images=images[arch], work=work / arch,
                         login=login, lan_address=LAN[arch], memory_mb=MEMORY[arch], disk_size=DISK_SIZE[arch])
                for arch in images}  # fmt: skip
    try:
        results = start_all(list(machines.values()))
        for vm in machines.values():
            assert results[vm.name].returncode == 0, describe_failure(vm, results[vm.name])
        yield machines
    finally:
        for vm in machines.values():
            vm.stop()
