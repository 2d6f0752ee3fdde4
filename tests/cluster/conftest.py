"""Fixtures for the cluster tier: one real single-node Kubernetes cluster per test session."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.node import Binaries, Cluster, kubernetes_bin
from tests.host.conftest import containerd2_bin, gvisor_go, releases  # noqa: F401 (fixtures)
from tests.support.mirror import MIRROR_ROOT, Releases
from tests.support.paths import REPO


@pytest.fixture(scope="session")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    releases: Releases,  # noqa: F811
    containerd2_bin: Path,  # noqa: F811
) -> Iterator[Cluster]:
    etcd = shutil.which("etcd")
    if etcd is None:
        pytest.skip("the cluster tier needs etcd (Debian package etcd-server; sh tests/setup.sh installs it)")
    if not Path("/usr/lib/cni/bridge").exists():
        pytest.skip("the cluster tier needs the CNI plugins (Debian package containernetworking-plugins)")
    bins = Binaries(kubernetes=kubernetes_bin(REPO), containerd=containerd2_bin, etcd=Path(etcd))
    cluster = Cluster(tmp_path_factory.mktemp("cluster"), bins, MIRROR_ROOT, releases.current)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
