"""The aarch64 test VM (tests/vm/qemu_vms.py) as a second node of the test cluster (tests/cluster/node.py).

The VM's own containerd 2 (Debian's service, as the VM tier uses it) gets the
same node settings as the sandbox node (CONTAINERD_CONFIG, a CNI bridge with
its own pod range); the host layer is left to the caller (`pulumi up`, which
manages this VM as a machine of the stack). Into the VM go, over SSH: the
arm64 kubelet and CNI plugins (tests/toolchain/build-kubernetes.sh --arch
arm64), arm64 sample and pause images made like the amd64 ones from the VM's
own static busybox, and the gVisor release of the local mirror, which the VM
serves itself at 127.0.0.1:MIRROR_PORT as every test machine does. The
kubelet reaches the API server through the cluster's loopback forwarder,
which the guest sees at GUEST_HOST; nothing goes from the API server to this
kubelet (the tests read pod status, and the sample's log as a file here).
"""

from __future__ import annotations

import io
import shlex
import subprocess
import tarfile
from pathlib import Path, PurePosixPath

import yaml

from components.gvisor.settings import DEFAULT_VERIFY_IMAGE  # what the VM image imports at boot
from tests.cluster import images
from tests.cluster.node import (
    CNI_BIN,
    CNI_CONFIG_FILE,
    CONTAINERD_CONFIG,
    PAUSE_IMAGE,
    SAMPLE_IMAGE,
    Cluster,
    cni_config,
    kubelet_args,
    kubelet_config,
)
from tests.support.mirror import MIRROR_PORT
from tests.support.wait import wait_until
from tests.vm.qemu_vms import GUEST_HOST, Vm

NODE = "kube-node-arm64"
POD_SUBNET = "10.79.0.0/24"  # apart from the sandbox node's, so pod addresses say which node
GUEST_IP = "10.0.2.15"  # QEMU user networking gives the guest this address
STAGE = PurePosixPath("/var/lib/gvisor-fleet-test")  # what this module copies in, apart from the binaries
PKI = STAGE / "pki"
UNITS = ("gvisor-fleet-test-kubelet", "gvisor-fleet-test-mirror")


def kubernetes_arm64_bin(repo: Path) -> Path:
    """The arm64 kubelet and CNI plugins (cni/), built if missing (the script skips what is cached)."""
    argv = ["sh", str(repo / "tests/toolchain/build-kubernetes.sh"), "--arch", "arm64"]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return Path(subprocess.run([*argv, "--print-dir"], capture_output=True, text=True, check=True).stdout.strip())


class VmNode:
    """Start with `start()` (after the cluster's), always `close()`; the VM itself is the caller's."""

    def __init__(self, vm: Vm, cluster: Cluster, kubelet_bin: Path, mirror: Path, release: str) -> None:
        self.vm = vm
        self.cluster = cluster
        self.kubelet_bin = kubelet_bin
        self.mirror = mirror
        self.release = release
        self.work = vm.work / "node"

    def sh(self, script: str, timeout: float = 900) -> str:
        """Runs `script` as root in the VM; fails with its output."""
        out = self.vm.ssh(f"sudo -n sh -c {shlex.quote(script)}", timeout=timeout)
        if out.returncode != 0:
            what = f"{self.vm.name}: `{script[:200]}` failed ({out.returncode})"
            raise AssertionError(f"{what}:\n{out.stdout}{out.stderr}")
        return out.stdout

    def read(self, path: str) -> bytes | None:
        out = self.vm.ssh_bytes(f"sudo -n cat {shlex.quote(path)}")
        return out.stdout if out.returncode == 0 else None

    def start(self) -> VmNode:
        self.work.mkdir(parents=True, exist_ok=True)
        busybox = self.work / "busybox"
        data = self.read("/bin/busybox")
        assert data, f"{self.vm.name}: no /bin/busybox to make the images from"
        busybox.write_bytes(data)
        self._copy_in(self._bundle(busybox))
        self.sh(
            f"systemctl restart containerd && for image in {STAGE}/*.oci.tar; do "
            # the kubelet's namespace, and the host layer's verification (as on the sandbox node)
            'ctr -n k8s.io images import "$image" >/dev/null && ctr -n gvisor-fleet images import "$image" >/dev/null '
            "|| exit 1; "
            # Docker 20.10 cannot load an OCI archive: the verify step's image is the boot-imported busybox.
            f"done && docker tag {DEFAULT_VERIFY_IMAGE} {SAMPLE_IMAGE}"
        )
        self.sh(
            f"systemd-run --unit={UNITS[1]} --collect python3 -m http.server {MIRROR_PORT} "
            f"--bind 127.0.0.1 --directory {STAGE / 'mirror'} >/dev/null 2>&1 && "
            f"systemd-run --unit={UNITS[0]} --collect /usr/local/bin/kubelet "
            f"{shlex.join(kubelet_args(Path(PKI), NODE, GUEST_IP))} >/dev/null 2>&1"
        )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 600) -> None:
        if wait_until(lambda: self.cluster.node_ready(NODE), timeout, 2):
            return
        raise AssertionError(f"node {NODE} not Ready after {timeout:.0f}s\n{self.journal(UNITS[0])}")

    def journal(self, unit: str, lines: int = 40) -> str:
        return self.vm.ssh(f"sudo -n journalctl -u {unit} -n {lines} --no-pager").stdout

    def close(self) -> None:
        """Stops what `start` started in the VM (the VM's own stop ends the rest)."""
        self.vm.ssh(f"sudo -n systemctl stop {' '.join(UNITS)}", timeout=300)

    def _bundle(self, busybox: Path) -> bytes:
        """One tar of every file the node needs, extracted at the VM's root."""
        server = f"https://{GUEST_HOST}:{self.cluster.port}"
        config = kubelet_config(str(PKI / "ca.crt"), GUEST_IP, protect_kernel_defaults=False)
        files: dict[str, tuple[bytes, int]] = {
            "/etc/containerd/config.toml": (CONTAINERD_CONFIG.encode(), 0o644),
            CNI_CONFIG_FILE: (cni_config(POD_SUBNET).encode(), 0o644),
            str(PKI / "ca.crt"): ((self.cluster.pki / "ca.crt").read_bytes(), 0o644),
            str(PKI / "kubelet.conf"): (self.cluster.node_kubeconfig(NODE, server).encode(), 0o600),
            str(PKI / "kubelet-config.yaml"): (yaml.safe_dump(config).encode(), 0o644),
            "/usr/local/bin/kubelet": ((self.kubelet_bin / "kubelet").read_bytes(), 0o755),
        }
        for plugin in sorted((self.kubelet_bin / "cni").iterdir()):
            files[f"{CNI_BIN}/{plugin.name}"] = (plugin.read_bytes(), 0o755)
        for name, make, archive in (
            (SAMPLE_IMAGE, images.sample_image, self.work / "busybox.oci.tar"),
            (PAUSE_IMAGE, images.pause_image, self.work / "pause.oci.tar"),
        ):
            make(archive, name, "aarch64", busybox)
            files[str(STAGE / archive.name)] = (archive.read_bytes(), 0o644)
        release = self.mirror / self.release / "aarch64"
        for item in sorted(release.iterdir()):
            files[str(STAGE / "mirror" / self.release / "aarch64" / item.name)] = (item.read_bytes(), 0o644)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for path, (data, mode) in files.items():
                info = tarfile.TarInfo(path.lstrip("/"))
                info.size, info.mode = len(data), mode
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    def _copy_in(self, bundle: bytes) -> None:
        out = self.vm.ssh_bytes("sudo -n tar -C / --no-same-owner -xf -", stdin=bundle)
        assert out.returncode == 0, f"{self.vm.name}: copying the node's files in failed:\n{out.stderr.decode()}"

    def pod_log(self, pod: str, namespace: str) -> str:
        """A pod's container log, read from the node's own file (the API server has no path to this kubelet)."""
        text = self.sh(f"cat /var/log/pods/{namespace}_{pod}_*/*/0.log")
        # CRI log lines: <time> <stream> <tag> <message>
        return "\n".join(line.split(" ", 3)[3] for line in text.splitlines() if line.count(" ") >= 3)
