"""kubeadm on the fleet's machines: plans and command lines, computed without a host.

One machine runs the control plane (`controlPlane`, default the first), the
others join it as workers. Every step runs `scripts/kubeadm-node.sh`, sent on
stdin. The pod network needs no image: each machine gets the next /24 of
`podSubnet` for a bridge of the CNI reference plugins, and a route to every
other machine's /24 through that machine's address (the machines share a
network, as kubeadm requires of them).
"""

from __future__ import annotations

import base64
import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from components.gvisor.agent import agent_command
from components.kube.settings import KubeadmSettings

SCRIPT_PATH = Path(__file__).parent / "scripts" / "kubeadm-node.sh"
API_PORT = 6443
CRI_SOCKET = "unix:///run/containerd/containerd.sock"
GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}
# Where a machine keeps the copy of releaseDir's files (per version and arch).
REMOTE_STAGE = "/var/tmp/gvisor-fleet-kubernetes"
NO_ELECTION = {"name": "leader-elect", "value": "false"}
# etcd fails a write it could not commit within 5 s plus two election timeouts
# (7 s by default), and the API server passes that on ("etcdserver: request
# timed out"). A busy small control plane has such pauses; its one member
# has nobody to hold an election with, so the longer timeouts cost nothing
# (a single member still elects itself at once on start): 25 s.
ETCD_PATIENCE = [{"name": "heartbeat-interval", "value": "1000"}, {"name": "election-timeout", "value": "10000"}]
BUNDLE = "release.tar.gz"  # kubeadm-head.sh's BUNDLE: the copy of releaseDir's folder, unpacked by install

Role = Literal["control-plane", "worker"]


@cache
def node_script() -> str:
    return SCRIPT_PATH.read_text()


@dataclass(frozen=True)
class KubeadmNode:
    name: str  # machine name == node name
    arch: str
    role: Role
    sudo: bool
    pod_cidr: str
    address: str | None  # the machine's address on the fleet's network; None: its default-route address


def pod_cidrs(pod_subnet: str, count: int) -> list[str]:
    """The first `count` /24s of the pod subnet (IPv4), one per machine in order."""
    net = ipaddress.ip_network(pod_subnet)
    if net.version != 4 or net.prefixlen > 24:
        raise ValueError(f"podSubnet {pod_subnet} must be an IPv4 network of /24 or larger")
    subnets = net.subnets(new_prefix=24)
    return [str(next(subnets)) for _ in range(count)]


def plan_nodes(kubeadm: KubeadmSettings, machines: Sequence[tuple[str, str, str, str | None]]) -> list[KubeadmNode]:
    """(name, arch, ssh user, private address) per machine -> nodes, the control plane first."""
    cp = kubeadm.control_plane or machines[0][0]
    cidrs = pod_cidrs(kubeadm.pod_subnet, len(machines))
    nodes = [
        KubeadmNode(
            name=name,
            arch=arch,
            role="control-plane" if name == cp else "worker",
            sudo=user != "root",
            pod_cidr=cidr,
            address=address,
        )
        for (name, arch, user, address), cidr in zip(machines, cidrs, strict=True)
    ]
    return sorted(nodes, key=lambda n: n.role != "control-plane")


def api_url(kubeadm: KubeadmSettings, control_plane_ip: str) -> str:
    return kubeadm.api_url or f"https://{_host(control_plane_ip)}:{API_PORT}"


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _yaml_docs(*docs: Mapping[str, Any]) -> str:
    return "---\n".join(yaml.safe_dump(dict(d), sort_keys=False) for d in docs)


def _registration(node: KubeadmNode, node_ip: str, taints: list[Any] | None) -> dict[str, Any]:
    registration: dict[str, Any] = {
        "name": node.name,
        "criSocket": CRI_SOCKET,
        "kubeletExtraArgs": [{"name": "node-ip", "value": node_ip}],
    }
    if taints is not None:
        registration["taints"] = taints
    return registration


def _timeouts(kubeadm: KubeadmSettings) -> dict[str, str]:
    """Every wait kubeadm has, bounded alike: a slow machine (an emulated one) needs more than its defaults."""
    names = ("controlPlaneComponentHealthCheck", "kubeletHealthCheck", "kubernetesAPICall", "etcdAPICall",
             "tlsBootstrap", "discovery")  # fmt: skip
    return {name: f"{kubeadm.timeout_seconds}s" for name in names}


# Where the node script writes probe_patch() for each control-plane component.
PATCHES_DIR = "/var/lib/gvisor-fleet/kubeadm/patches"
# kubeadm's liveness probe on its static pods: every 10 s, 15 s each, a
# restart after 8 failures in a row.
PROBE_PERIOD = 10
PROBE_TIMEOUT = 15
LIVENESS_FAILURES = 8


def probe_patch(kubeadm: KubeadmSettings) -> str:
    """A JSON patch for each control-plane static pod: its liveness probe scaled to timeoutSeconds.

    kubeadm already stretches the startup probe to its health-check timeout
    (timeoutSeconds), but the kubelet still restarts the API server or etcd
    after 80 seconds without an answer. A slow machine (an emulated one, a
    small board under load) has such pauses, and every restart sets the
    control plane back minutes while kubeadm waits for it. The liveness window
    grows to a third of timeoutSeconds, never below kubeadm's own.
    """
    failures = max(LIVENESS_FAILURES, -(-kubeadm.timeout_seconds // (3 * PROBE_PERIOD)))
    ops = [
        {"op": "replace", "path": "/spec/containers/0/livenessProbe/failureThreshold", "value": failures},
        {"op": "replace", "path": "/spec/containers/0/livenessProbe/timeoutSeconds", "value": 2 * PROBE_TIMEOUT},
    ]
    return json.dumps(ops)


def init_config(kubeadm: KubeadmSettings, node: KubeadmNode, node_ip: str) -> str:
    """kubeadm's InitConfiguration, ClusterConfiguration and KubeletConfiguration for the control plane."""
    sans = sorted({urlsplit(api_url(kubeadm, node_ip)).hostname or node_ip, node_ip})
    init: dict[str, Any] = {
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "InitConfiguration",
        "localAPIEndpoint": {"advertiseAddress": node_ip, "bindPort": API_PORT},
        # No taint: small fleets run the samples on the control plane too.
        "nodeRegistration": _registration(node, node_ip, [] if kubeadm.schedule_on_control_plane else None),
        "timeouts": _timeouts(kubeadm),
        "patches": {"directory": PATCHES_DIR},
    }
    skipped = [f"addon/{a}" for a in ("kube-proxy", "coredns") if a not in kubeadm.addons]
    if skipped:
        init["skipPhases"] = skipped
    cluster = {
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "ClusterConfiguration",
        "kubernetesVersion": kubeadm.version,
        "controlPlaneEndpoint": f"{_host(node_ip)}:{API_PORT}",
        "apiServer": {"certSANs": sans},
        "networking": {"podSubnet": kubeadm.pod_subnet, "serviceSubnet": kubeadm.service_subnet},
        # Each node's pod range is the program's (pod_cidrs), not the controller's.
        # One control plane: nothing to elect, and a lease renewal that misses its
        # 10 s deadline on a busy machine makes the scheduler and controller manager exit.
        "controllerManager": {"extraArgs": [{"name": "allocate-node-cidrs", "value": "false"}, NO_ELECTION]},
        "scheduler": {"extraArgs": [NO_ELECTION]},
        "etcd": {"local": {"extraArgs": ETCD_PATIENCE}},
    }
    kubelet = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # containerd's runc and runsc default to cgroupfs; the kubelet must agree.
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
    }
    return _yaml_docs(init, cluster, kubelet)


def join_config(
    kubeadm: KubeadmSettings, node: KubeadmNode, node_ip: str, endpoint: str, join: Mapping[str, str]
) -> str:
    """kubeadm's JoinConfiguration for a worker (carries the bootstrap token: keep it secret)."""
    doc = {
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "JoinConfiguration",
        "discovery": {
            "bootstrapToken": {
                "apiServerEndpoint": endpoint,
                "token": join["token"],
                "caCertHashes": [join["ca_cert_hash"]],
            }
        },
        "nodeRegistration": _registration(node, node_ip, None),
        "timeouts": _timeouts(kubeadm),
    }
    return _yaml_docs(doc)


def source_args(kubeadm: KubeadmSettings, arch: str) -> tuple[str, str]:
    """Where the install step takes the binaries: ("url", "<kube url>|<cni url>") or ("dir", <copied dir>)."""
    goarch = GOARCH[arch]
    if kubeadm.release_dir:
        return "dir", remote_stage(kubeadm, arch)
    kube = f"{kubeadm.release_url}/{kubeadm.version}/bin/linux/{goarch}"
    cni = f"{kubeadm.cni_url}/{kubeadm.cni_version}/cni-plugins-linux-{goarch}-{kubeadm.cni_version}.tgz"
    return "url", f"{kube}|{cni}"


def local_release(kubeadm: KubeadmSettings, arch: str) -> Path:
    """releaseDir's folder for one arch (on the machine running Pulumi)."""
    assert kubeadm.release_dir
    return Path(kubeadm.release_dir) / kubeadm.version / GOARCH[arch]


def remote_stage(kubeadm: KubeadmSettings, arch: str) -> str:
    return f"{REMOTE_STAGE}-{kubeadm.version}-{GOARCH[arch]}"


def remote_bundle(kubeadm: KubeadmSettings, arch: str) -> str:
    """Where the copy step puts the folder's archive (release_bundle); install unpacks it in place."""
    return f"{remote_stage(kubeadm, arch)}/{BUNDLE}"


def install_command(node: KubeadmNode, kubeadm: KubeadmSettings) -> str:
    kind, where = source_args(kubeadm, node.arch)
    return agent_command("install", node.role, kubeadm.version, kind, where, node.address or "-", sudo=node.sudo)


def reset_command(node: KubeadmNode) -> str:
    return agent_command("reset", sudo=node.sudo)


def network_command(node: KubeadmNode, pod_subnet: str, peers: Mapping[str, str]) -> str:
    """The node's pod bridge and a route per other node: peers maps pod CIDR -> node address."""
    routes = [f"{cidr}={ip}" for cidr, ip in sorted(peers.items())]
    return agent_command("network", node.pod_cidr, pod_subnet, *routes, sudo=node.sudo)


def init_command(node: KubeadmNode, kubeadm: KubeadmSettings, node_ip: str) -> str:
    config = _b64(init_config(kubeadm, node, node_ip))
    patch = _b64(probe_patch(kubeadm))
    return agent_command("init", node.name, config, str(kubeadm.timeout_seconds), patch, sudo=node.sudo)


def join_token_command(cp: KubeadmNode, worker: str, timeout_seconds: int) -> str:
    return agent_command("join-token", worker, str(timeout_seconds), sudo=cp.sudo)


def join_command(node: KubeadmNode, kubeadm: KubeadmSettings) -> str:
    return agent_command("join", node.name, str(kubeadm.timeout_seconds), sudo=node.sudo)


def join_stdin(
    node: KubeadmNode, kubeadm: KubeadmSettings, node_ip: str, endpoint: str, join: Mapping[str, str]
) -> str:
    """The node script, after the join config it reads (JOIN_CONFIG, base64).

    The config carries the bootstrap token, so it comes on stdin: the command
    provider prints a failed step's command line, never its stdin.
    """
    return f"JOIN_CONFIG={_b64(join_config(kubeadm, node, node_ip, endpoint, join))}\n{node_script()}"


def member_commands(cp: KubeadmNode, node: str, timeout: int) -> tuple[str, str]:
    """(create, delete) on the control plane: wait until NODE is Ready; drain and remove it."""
    create = agent_command("wait-ready", node, str(timeout), sudo=cp.sudo)
    delete = agent_command("drain", node, str(timeout), sudo=cp.sudo)
    return create, delete


def kubeconfig_command(cp: KubeadmNode, url: str, timeout: int) -> str:
    return agent_command("kubeconfig", url, str(timeout), sudo=cp.sudo)


def parse_join(stdout: str) -> dict[str, str]:
    """token= and ca_cert_hash= lines of the join-token step."""
    found = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("token", "ca_cert_hash"):
            found[key] = value.strip()
    return found
