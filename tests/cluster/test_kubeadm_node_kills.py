"""The kubeadm node script's install and reset, SIGKILLed at each of their points, on a real containerd 2.

Each kill is a real SIGKILL of the script (its test hook
GVISOR_FLEET_TEST_STOP_AT stops it at the named point first); then the step
is run again, and reset. The machine, a host-tier sandbox with containerd 2
running, must then be as it was before: every file the script may write,
its state and lock, and the images containerd holds for the kubelet. The
release is the set-up's own local Kubernetes directory (the program's
`releaseDir`, amd64), which is why this runs in the cluster tier: the tier
waits for those builds.

Stand-ins: the sandbox's systemctl (no kubelet runs: install only writes and
enables its unit), and an empty cgroup.controllers file that lets the
preflight take the sandbox for a cgroup v2 machine (this machine mounts v1;
no kubelet starts). init, join and drain need a control plane and are run by
the vm tier's kubeadm flow.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.kube.kubeadm import SCRIPT_PATH as NODE_SCRIPT
from components.kube.settings import KubeadmSettings
from tests.host.host_state import ok
from tests.host.kill_points import assert_same_tree
from tests.host.sandbox import Sandbox
from tests.support.toolchain import kubernetes_release_dir

VERSION = KubeadmSettings().version
RELEASE = "/root/kubernetes-release"
INSTALL = ("install", "control-plane", VERSION, "dir", RELEASE, "192.0.2.10")  # the sandbox has no default route
RESET = ("reset",)
INSTALL_POINTS = ("install:recorded", "install:binaries", "install:cni", "install:images", "install:units")
# What the script may write (its TOUCHED list and the files it writes), its state and its lock.
ROOTS = ("/usr/local/bin", "/opt/cni", "/etc/cni", "/var/lib/cni", "/etc/kubernetes", "/var/lib/kubelet",
         "/var/lib/etcd", "/etc/systemd/system", "/etc/sysctl.d", "/etc/modules-load.d", "/var/lib/gvisor-fleet",
         "/run/gvisor-fleet")  # fmt: skip


# One machine for the module: each test leaves it as it found it (and says so).
@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, containerd2_bin: Path) -> Iterator[Sandbox]:
    release = kubernetes_release_dir() / VERSION / "amd64"
    sandbox = Sandbox(tmp_path_factory.mktemp("kubeadm-node") / "node")
    try:
        sandbox.sh(
            f"cp {containerd2_bin}/* /usr/local/sbin/ && systemctl start containerd"
            " && touch /sys/fs/cgroup/cgroup.controllers"
            f" && cp -a {shlex.quote(str(release))} {RELEASE}"
        )
        yield sandbox
    finally:
        sandbox.close()


def machine(node: Sandbox) -> tuple[dict[str, str], list[str]]:
    """Every path the script may touch, and the images containerd holds for the kubelet.

    containerd must be up: its CRI exits when a folder it watches (/etc/cni/net.d) goes away.
    """
    assert node.run(["systemctl", "is-active", "containerd"]).returncode == 0, "containerd is down"
    return node.tree(*ROOTS), sorted(node.sh("ctr -n k8s.io images ls -q").split())


def script(node: Sandbox, *args: str) -> dict[str, str]:
    return ok(node.agent(*args, script=NODE_SCRIPT))


def test_a_machine_with_no_address_to_give_is_refused_before_any_change(node: Sandbox):
    before = machine(node)
    out = node.agent(*INSTALL[:-1], "-", script=NODE_SCRIPT)
    assert out.returncode != 0 and "has no default route to take its address from; set privateAddress" in out.stderr
    assert machine(node) == before


def test_install_killed_at_every_point_converges_and_reset_restores(node: Sandbox):
    before = machine(node)
    for point in INSTALL_POINTS:
        node.kill_agent_at(point, *INSTALL, script=NODE_SCRIPT)
        facts = script(node, *INSTALL)
        assert facts["kubernetes_version"] == VERSION and facts["node_ip"] == "192.0.2.10", (point, facts)
        images = node.sh("ctr -n k8s.io images ls -q")
        assert "kube-apiserver" in images and "pause" in images, (point, images)
        assert script(node, *RESET)["reset"] == "true", point
        after = machine(node)
        assert after[1] == before[1], f"install killed at {point}: images {after[1]} != {before[1]}"
        assert_same_tree(before[0], after[0], f"install killed at {point}, then reset")


def test_reset_killed_at_every_point_finishes_on_the_next_run(node: Sandbox):
    before = machine(node)
    paths = ("/usr/local/bin/kubeadm", "/opt/cni", "/etc/systemd/system/kubelet.service")
    for point in ("reset:network", "reset:images", *(f"reset:restored:{p}" for p in paths)):
        script(node, *INSTALL)
        node.kill_agent_at(point, *RESET, script=NODE_SCRIPT)
        assert script(node, *RESET)["reset"] == "true", point
        after = machine(node)
        assert after[1] == before[1], f"reset killed at {point}: images {after[1]} != {before[1]}"
        assert_same_tree(before[0], after[0], f"reset killed at {point}, then run again")
