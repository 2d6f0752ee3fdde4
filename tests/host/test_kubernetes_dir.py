"""The local Kubernetes directory (tests/toolchain/make-kubernetes-dir.sh) as kubeadm's nodes use it.

Each image archive is imported with containerd 2's own `ctr` into the namespace
the kubelet reads, under the names kubeadm asks for; the programs in them run;
and etcd's image starts with the very flags of the static pod kubeadm writes.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.host.sandbox import Sandbox
from tests.support.paths import TOOLCHAIN

pytestmark = pytest.mark.host

VERSION = "v1.37.2"
NS = "k8s.io"  # the kubelet's containerd namespace
ADDRESS = "192.0.2.10"  # the control plane's address, added to the sandbox's loopback
KUBEADM_CONFIG = f"""\
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint: {{advertiseAddress: {ADDRESS}, bindPort: 6443}}
nodeRegistration: {{name: control-plane}}
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: {VERSION}
"""


@pytest.fixture(scope="module")
def release() -> Path:
    """DIR/VERSION, written if missing (waits for a build another process runs: the script locks)."""
    script = str(TOOLCHAIN / "make-kubernetes-dir.sh")
    subprocess.run(["sh", script], check=True, stdout=subprocess.DEVNULL)
    out = subprocess.run(["sh", script, "--print-dir"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip()) / VERSION


@pytest.fixture
def node(tmp_path: Path, containerd2_bin: Path) -> Iterator[Sandbox]:
    """A fresh machine running containerd 2 with its default config, as a kubeadm node's."""
    sandbox = Sandbox(tmp_path / "node")
    try:
        sandbox.sh(f"cp {containerd2_bin}/* /usr/local/sbin/ && rm -f /etc/containerd/config.toml")
        sandbox.sh("systemctl start containerd")
        yield sandbox
    finally:
        sandbox.close()


def kubeadm_images(release: Path) -> set[str]:
    listed = subprocess.run(
        [str(release / "amd64" / "kubeadm"), "config", "images", "list", "--kubernetes-version", VERSION],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {name for name in listed if "/kube-proxy:" not in name and "/coredns:" not in name}


def images(node: Sandbox, ns: str) -> dict[str, str]:
    """Each image's name and platforms in namespace NS (not the sha256: names containerd's CRI adds)."""
    rows = [row.split() for row in node.sh(f"ctr -n {ns} images ls").splitlines()[1:]]
    return {
        row[0]: ",".join(word for word in row if word.startswith("linux/"))
        for row in rows
        if not row[0].startswith("sha256:")
    }


def test_the_files_are_those_of_the_layout_and_their_sums_hold(release: Path):
    # The three control-plane images share one archive, which holds their one layer once.
    for arch, names in (("amd64", {"control-plane", "etcd", "pause"}), ("arm64", {"pause"})):
        files = {p.relative_to(release / arch).as_posix() for p in (release / arch).rglob("*") if p.is_file()}
        want = {"kubeadm", "kubelet", "kubectl", "cni-plugins.tgz", "SHA512SUMS"}
        want |= {f"images/{name}.tar" for name in names}
        assert {f for f in files if not f.startswith(".")} == want, arch
        listed = {line.split()[1] for line in (release / arch / "SHA512SUMS").read_text().splitlines()}
        assert listed == want - {"SHA512SUMS"}, arch
        subprocess.run(["sha512sum", "--quiet", "-c", "SHA512SUMS"], cwd=release / arch, check=True)
        plugins = subprocess.run(["tar", "tzf", "cni-plugins.tgz"], cwd=release / arch, capture_output=True, text=True)
        assert {"./bridge", "./host-local", "./loopback", "./portmap"} <= set(plugins.stdout.split()), arch
        for program in ("kubeadm", "kubelet", "kubectl"):
            assert (release / arch / program).stat().st_mode & 0o777 == 0o755, f"{arch}/{program}"


def test_the_images_import_under_kubeadms_names_and_their_programs_run(node: Sandbox, release: Path):
    sandbox_image = node.sh("containerd config default | sed -n \"s/^ *sandbox = '\\(.*\\)'$/\\1/p\"").strip()
    assert sandbox_image, "containerd 2 names no default sandbox image"
    for archive in sorted((release / "amd64" / "images").iterdir()):
        node.sh(f"ctr -n {NS} images import {archive} >/dev/null")
    node.sh(f"ctr -n arm64 images import --platform linux/arm64 {release / 'arm64/images/pause.tar'} >/dev/null")
    want = kubeadm_images(release) | {sandbox_image}
    assert images(node, NS) == dict.fromkeys(want, "linux/amd64")
    assert images(node, "arm64") == {name: "linux/arm64" for name in want if "/pause:" in name}

    started = time.monotonic()
    for name in sorted(want - {sandbox_image}):
        program, tag = name.rsplit("/", 1)[1].split(":")
        out = node.sh(f"ctr -n {NS} run --rm {name} check-{program} {program} --version")
        # etcd's tag is its version and the image's own revision (3.7.0-0).
        said = f"etcd Version: {tag.split('-')[0]}\n" if program == "etcd" else f"Kubernetes {VERSION}\n"
        assert said in out, out
    # The sandbox's process sleeps until told to stop, and then stops at once, cleanly.
    out = node.sh(
        f"(sleep 2; ctr -n {NS} task kill -s SIGTERM check-pause) & "
        f"ctr -n {NS} run --rm {sandbox_image} check-pause; echo exit=$?; wait"
    )
    assert "exit=0" in out
    assert time.monotonic() - started < 30


def test_etcd_serves_with_the_flags_of_kubeadms_static_pod(node: Sandbox, release: Path):
    kubeadm = release / "amd64" / "kubeadm"
    node.sh(f"ip addr add {ADDRESS}/32 dev lo")
    node.write("/root/kubeadm.yaml", KUBEADM_CONFIG)
    for phase in ("certs etcd-ca", "certs etcd-server", "certs etcd-peer", "etcd local"):
        node.sh(f"{kubeadm} init phase {phase} --config /root/kubeadm.yaml >/dev/null")
    manifest = yaml.safe_load(node.read("/etc/kubernetes/manifests/etcd.yaml") or b"")
    container = manifest["spec"]["containers"][0]
    node.sh(f"ctr -n {NS} images import {release / 'amd64/images/etcd.tar'} >/dev/null")
    mounts = " ".join(
        f"--mount type=bind,src={m['mountPath']},dst={m['mountPath']},options=rbind:rw"
        for m in container["volumeMounts"]
    )
    node.sh(f"ctr -n {NS} run -d --net-host {mounts} {container['image']} etcd {' '.join(container['command'])}")
    try:
        ready = "i=0; until [ \"$(curl -s http://127.0.0.1:2381/readyz)\" = ok ]; do " \
                "i=$((i + 1)); [ $i -lt 100 ] || exit 1; sleep 0.2; done"  # fmt: skip
        if node.run(["sh", "-c", ready]).returncode != 0:
            logs = node.sh(f"ctr -n {NS} tasks ls; cat /var/log/sandbox-containerd.log | tail -20", check=False)
            raise AssertionError(f"etcd not ready with kubeadm's flags {container['command']}:\n{logs}")
        pki = "/etc/kubernetes/pki/etcd"
        health = node.sh(
            f"curl -s --cacert {pki}/ca.crt --cert {pki}/server.crt --key {pki}/server.key https://{ADDRESS}:2379/health"
        )
        assert '"health":"true"' in health
    finally:
        node.sh(f"ctr -n {NS} task kill -s SIGKILL etcd; sleep 1; ctr -n {NS} task delete etcd", check=False)
