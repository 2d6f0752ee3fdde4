"""Fixtures for the end-to-end tests: the real Pulumi engine against SSH test machines."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import pulumi_stack, ssh_machines
from tests.support.image import make_image_tar
from tests.support.mirror import Releases, prepare_mirror
from tests.support.toolchain import build_pulumi


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "e2e: drives the real Pulumi engine (preview/up/destroy) against SSH test machines it starts",
    )


@pytest.fixture(scope="session")
def engine() -> Path:
    """The Pulumi CLI, language host and command provider (built on first use)."""
    why = ssh_machines.missing_prerequisites()
    if why:
        pytest.skip(why)
    try:
        return build_pulumi()
    except subprocess.CalledProcessError as err:
        pytest.fail(f"tests/toolchain/build-pulumi.sh failed ({err.returncode}); see its output above")


@pytest.fixture(scope="session")
def mirror(engine: Path) -> Releases:
    return prepare_mirror()


@pytest.fixture(scope="session")
def image_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_tar(tmp_path_factory.mktemp("image") / "busybox-rootfs.tar")


@pytest.fixture(scope="session")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> ssh_machines.KeyPair:
    return ssh_machines.make_key(tmp_path_factory.mktemp("client") / "id_ed25519", "gvisor-fleet-e2e")


@pytest.fixture(scope="module")
def fleet_work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("fleet")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if pulumi_stack.TIMINGS:
        steps = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in pulumi_stack.TIMINGS.items())
        terminalreporter.write_line(f"e2e engine wall times: {steps}")
