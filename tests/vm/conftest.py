"""Fixtures for the VM tests: one x86_64 and one aarch64 VM, booted together, no mocks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from components.fleet.keys import generate_ed25519
from tests.support.loopback import Server
from tests.vm.qemu_vms import (
    DISK_SIZE,
    FORWARDS,
    LAN,
    MEMORY,
    Vm,
    describe_failure,
    ensure_images,
    ensure_mirror,
    missing_prerequisite,
    snapshot,
    start_all,
)  # fmt: skip

# One pair of VMs serves the whole tier, and its modules build on each other:
# the LAN first, then the host layer (test_vms.py), then the kubeadm stack on
# top of that host layer (test_kubeadm.py), whose destroy gives the VMs back as
# they were booted; the host layer's own destroy test, which also stops the
# VMs, comes last.
ORDER = ("test_lan.py", "test_vms.py", "test_kubeadm.py")
LAST = "test_destroy_restores_the_engine_configs_byte_for_byte_then_stop_leaves_nothing"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> tuple[bool, int]:
        name = item.path.name
        return item.name == LAST, ORDER.index(name) if name in ORDER else len(ORDER)

    items.sort(key=rank)  # stable: file order within a module


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

    One login key for both, as a stack has one (tests/vm/test_kubeadm.py runs a stack on them).
    """
    work = tmp_path_factory.mktemp("vms")
    login = generate_ed25519("vm-test login")
    machines = {arch: Vm(name=f"vm-{arch.replace('_', '-')}", arch=arch, images=images[arch], work=work / arch,
                         login=login,
                         lan_address=LAN[arch], memory_mb=MEMORY[arch], forwards=FORWARDS[arch],
                         disk_size=DISK_SIZE[arch])
                for arch in images}  # fmt: skip
    try:
        results = start_all(list(machines.values()))
        for vm in machines.values():
            assert results[vm.name].returncode == 0, describe_failure(vm, results[vm.name])
        for vm in machines.values():
            vm.booted = snapshot(vm)
        yield machines
    finally:
        for vm in machines.values():
            vm.stop()


@pytest.fixture(scope="session")
def pristine(vms: dict[str, Vm]) -> dict[str, str]:
    """Each VM as booted, before any test changed it: what the kubeadm stack's destroy must give back."""
    return {arch: vm.booted for arch, vm in vms.items()}
