"""A one-node Kubernetes cluster inside a throwaway host sandbox (tests/host/sandbox.py).

The node is the host tier's sandbox (private mount, network, PID, cgroup, UTS
and IPC namespaces) running containerd 2 configured by the program's own host
agent, then etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
kubelet. Certificates and kubeconfigs are made per run. The API server is
reached from the machine through a loopback port forwarder on an ephemeral
port. Closing the sandbox ends every process of the run and removes its
cgroups; nothing is installed on the machine.
"""

from __future__ import annotations

import base64
import json
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components.gvisor.agent import parse_facts
from components.gvisor.runsc_config import effective_flags, render_runsc_toml
from tests.cluster import images, pki
from tests.host.sandbox import Sandbox
from tests.support import mirror
from tests.support.forward import Forwarder
from tests.support.mirror import MIRROR_URL
from tests.support.wait import wait_until

NODE = "kube-node"
NODE_IP = "10.77.0.2"  # on a bridge inside the sandbox's own network namespace
POD_SUBNET = "10.78.0.0/24"
SERVICE_RANGE = "10.96.0.0/24"
API_PORT = 6443
RUNTIME = "runsc"  # the containerd runtime name the agent writes; the RuntimeClass handler
PREFIX = "/usr/local/bin"
RUNSC_TOML = "/etc/containerd/runsc.toml"
SAMPLE_IMAGE = "gvisor-fleet.test/busybox:1"
PAUSE_IMAGE = "gvisor-fleet.test/pause:1"
CNI_BIN = "/usr/lib/cni"  # Debian's containernetworking-plugins

# The kubelet sets these kernel tunables on the machine (they are not
# namespaced). Inside the sandbox, files holding the values it wants are bound
# over them, so it finds nothing to change and the machine keeps its own.
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}

# The node's own containerd settings before the agent adds its runtime block:
# the locally made pause image, Debian's CNI plugins, and OOM scores kept at
# or above containerd's own (this machine may not lower them).
CONTAINERD_CONFIG = f"""\
version = 3

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = '{PAUSE_IMAGE}'

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true

[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ['{CNI_BIN}']
  conf_dir = '/etc/cni/net.d'
"""

CNI_CONFIG_FILE = "/etc/cni/net.d/10-gvisor-fleet-test.conflist"


def cni_config() -> str:
    """The node's pod network: a bridge and its address range."""
    config = {
        "cniVersion": "1.0.0",
        "name": "gvisor-fleet-test",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": False,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET}]], "routes": [{"dst": "0.0.0.0/0"}]},
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(config, indent=2)


def kubernetes_bin(repo: Path) -> Path:
    script = repo / "tests/toolchain/build-kubernetes.sh"
    out = Path(subprocess.run(["sh", str(script), "--print-dir"], capture_output=True, text=True).stdout.strip())
    if not (out / "kubernetes").exists():
        subprocess.run(["sh", str(script)], check=True)
    return out


def kubelet_config(client_ca: str) -> dict[str, Any]:
    """The kubelet's settings: cgroupfs as containerd's runc default, no swap or eviction trouble."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": client_ca},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": "/",
        "failSwapOn": False,
        "failCgroupV1": False,  # this machine mounts cgroup v1 hierarchies
        "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
        "address": NODE_IP,
        "healthzBindAddress": "127.0.0.1",
        "protectKernelDefaults": True,  # see KUBELET_SYSCTLS: never write the machine's tunables
        "serializeImagePulls": False,
        "evictionHard": {
            "memory.available": "1Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "registerNode": True,
        "resolvConf": "",
        "localStorageCapacityIsolation": False,
    }


def kubelet_args(pki_dir: Path) -> list[str]:
    """The kubelet's flags after its program name (config and kubeconfig files in `pki_dir`)."""
    return [
        f"--config={pki_dir / 'kubelet-config.yaml'}",
        f"--kubeconfig={pki_dir / 'kubelet.conf'}",
        f"--hostname-override={NODE}",
        f"--node-ip={NODE_IP}",
        "--root-dir=/var/lib/kubelet",
    ]


def log_values(log: str) -> dict[str, str]:
    """The key=value lines of a container's log (what the sample and verification pods print)."""
    return dict(line.split("=", 1) for line in log.splitlines() if "=" in line)


def runsc_toml_b64() -> str:
    return base64.b64encode(render_runsc_toml(effective_flags("systrap", "sandbox", {})).encode()).decode()


@dataclass(frozen=True)
class Binaries:
    kubernetes: Path  # directory of the multi-call binary and its program-name links
    containerd: Path
    etcd: Path


class Cluster:
    """Start with `start()`, always `close()`; every step waits until the part it started answers."""

    def __init__(self, work: Path, bins: Binaries, mirror: Path, release: str, sandbox: Sandbox | None = None) -> None:
        """`sandbox`: an already running machine (e.g. an SSH test machine) to make the node of."""
        self.work = work
        self.bins = bins
        self.mirror = mirror
        self.release = release
        self.pki = work / "pki"
        self.sandbox = sandbox
        self._own_sandbox = sandbox is None
        self.forwarder: Forwarder | None = None
        self.host_facts: dict[str, dict[str, str]] = {}
        self.port = 0
        self.kubeconfig = ""  # admin kubeconfig for the machine side (through the forwarder)

    # --- lifecycle -----------------------------------------------------------

    def start(self, converge_host: bool = True) -> Cluster:
        """Brings the node up; converge_host=False leaves the host layer to the caller (`pulumi up`)."""
        self.work.mkdir(parents=True, exist_ok=True)
        if self.sandbox is None:
            self.sandbox = Sandbox(self.work / "node")
        self._prepare_node()
        if converge_host:
            self._converge_host()
        self._write_pki()
        self._start_control_plane()
        self._start_kubelet()
        self._start_forwarder()
        self.wait_node_ready()
        # Pods are refused until the controller manager made the namespace's service account.
        self.wait(
            "service account default/default",
            lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
            60,
            ("kube-controller-manager",),
        )
        return self

    def close(self) -> None:
        if self.forwarder is not None:
            self.forwarder.close()
        if self.sandbox is not None and self._own_sandbox:
            self.sandbox.close()  # ends every process of the node, then removes its cgroups

    # --- helpers -------------------------------------------------------------

    @property
    def node(self) -> Sandbox:
        assert self.sandbox is not None, "cluster not started"
        return self.sandbox

    def sh(self, script: str, check: bool = True) -> str:
        return self.node.sh(script, check=check)

    def daemon(self, name: str, argv: list[str]) -> None:
        """Starts a long-running process inside the node; its output goes to /var/log/<name>.log."""
        self.sh(f"nohup {shlex.join(argv)} > /var/log/{name}.log 2>&1 &")

    def log(self, name: str, lines: int = 30) -> str:
        return self.sh(f"tail -n {lines} /var/log/{name}.log 2>/dev/null || true", check=False)

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bins.kubernetes / "kubectl"), f"--kubeconfig={self.pki / 'admin-local.conf'}", *args]
        result = self.node.run(argv, stdin=stdin, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {shlex.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def wait(self, what: str, ready: Any, timeout: float, logs: tuple[str, ...] = ()) -> None:
        if wait_until(ready, timeout, 0.5):
            return
        detail = "\n".join(f"--- {name}:\n{self.log(name)}" for name in logs)
        raise AssertionError(f"{what} not ready after {timeout:.0f}s\n{detail}")

    def agent(self, *args: str) -> dict[str, str]:
        result = self.node.agent(*args)
        if result.returncode != 0:
            raise AssertionError(f"agent {args[0]} failed ({result.returncode}):\n{result.stderr}")
        return parse_facts(result.stdout)

    # --- steps ---------------------------------------------------------------

    def _prepare_node(self) -> None:
        node = self.node
        node.sh(f"systemctl stop containerd; cp {self.bins.containerd}/* /usr/local/sbin/")
        node.write("/etc/containerd/config.toml", CONTAINERD_CONFIG)
        node.write(CNI_CONFIG_FILE, cni_config())
        node.sh(f"ip link add node0 type bridge && ip addr add {NODE_IP}/24 dev node0 && ip link set node0 up")
        fakes = "/run/kubelet-sysctls"
        binds = [f"mkdir -p {fakes}"]
        for name, value in KUBELET_SYSCTLS.items():
            fake = f"{fakes}/{name.replace('/', '.')}"
            binds.append(f"echo {value} > {fake} && mount --bind {fake} /proc/sys/{name}")
        node.sh(" && ".join(binds))
        node.sh("systemctl start containerd")
        if node.run(["curl", "-fs", f"{MIRROR_URL}/"]).returncode != 0:
            node.sh(mirror.serve_in_sandbox(self.mirror))
        for name, make, archive in (
            (SAMPLE_IMAGE, images.sample_image, self.work / "busybox.oci.tar"),
            (PAUSE_IMAGE, images.pause_image, self.work / "pause.oci.tar"),
        ):
            make(archive, name)
            for namespace in ("k8s.io", "gvisor-fleet"):  # the kubelet's, and the agent's verification
                node.sh(f"ctr -n {namespace} images import {archive} >/dev/null")
        node.sh(mirror.WAIT_IN_SANDBOX)

    def _converge_host(self) -> None:
        """The host layer as GvisorHost runs it: install (after the preflight checks), containerd, verify."""
        checks = ("preflight", "x86_64", "systrap", "auto", "auto")
        self.host_facts["install"] = self.agent(*checks, "install", MIRROR_URL, self.release, PREFIX, "-")
        self.host_facts["containerd"] = self.agent(
            "containerd-configure", RUNTIME, runsc_toml_b64(), PREFIX, RUNSC_TOML
        )
        self.host_facts["verify"] = self.agent("verify", RUNTIME, SAMPLE_IMAGE, "off", "required", PREFIX, RUNSC_TOML)

    def _write_pki(self) -> None:
        ca = pki.CertificateAuthority()
        p = self.pki
        pki.write(p / "ca.crt", ca.cert_pem, 0o644)
        hosts = ("127.0.0.1", NODE_IP, "10.96.0.1", "localhost", "kubernetes", "kubernetes.default",
                 "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")  # fmt: skip
        serving = ca.issue("kube-apiserver", hosts=hosts, server=True)
        pki.write(p / "apiserver.crt", serving.cert)
        pki.write(p / "apiserver.key", serving.key)
        to_kubelet = ca.issue("kube-apiserver-kubelet-client", "system:masters")
        pki.write(p / "apiserver-kubelet-client.crt", to_kubelet.cert)
        pki.write(p / "apiserver-kubelet-client.key", to_kubelet.key)
        sa = pki.service_account_keys()
        pki.write(p / "sa.key", sa.key)
        pki.write(p / "sa.pub", sa.cert)
        local = f"https://{NODE_IP}:{API_PORT}"
        identities = {
            "admin-local": ("kubernetes-admin", "system:masters"),
            "controller-manager": ("system:kube-controller-manager", None),
            "scheduler": ("system:kube-scheduler", None),
            "kubelet": (f"system:node:{NODE}", "system:nodes"),
        }
        for conf, (cn, org) in identities.items():
            pki.write(p / f"{conf}.conf", pki.kubeconfig(local, ca.cert_pem, ca.issue(cn, org)))
        self._admin = ca.issue("kubernetes-admin", "system:masters")
        self._ca = ca

    def _start_control_plane(self) -> None:
        p = self.pki
        k = self.bins.kubernetes
        self.daemon(
            "etcd",
            [str(self.bins.etcd), "--data-dir=/var/lib/etcd-test", "--listen-client-urls=http://127.0.0.1:2379",
             "--advertise-client-urls=http://127.0.0.1:2379", "--listen-peer-urls=http://127.0.0.1:2380"],
        )  # fmt: skip
        self.daemon(
            "kube-apiserver",
            [
                str(k / "kube-apiserver"),
                "--etcd-servers=http://127.0.0.1:2379",
                f"--advertise-address={NODE_IP}",
                f"--secure-port={API_PORT}",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--client-ca-file={p / 'ca.crt'}",
                f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-cluster-ip-range={SERVICE_RANGE}",
                "--authorization-mode=Node,RBAC",
                "--kubelet-preferred-address-types=InternalIP",  # the node's name resolves nowhere
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=true",  # so Pod Security admission, not this flag, rejects privileged pods
            ],
        )
        self.wait(
            "kube-apiserver",
            lambda: self.kubectl("get", "--raw=/readyz", check=False).returncode == 0,
            180,
            ("etcd", "kube-apiserver"),
        )
        self.daemon(
            "kube-controller-manager",
            [
                str(k / "kube-controller-manager"),
                f"--kubeconfig={p / 'controller-manager.conf'}",
                f"--authentication-kubeconfig={p / 'controller-manager.conf'}",
                f"--authorization-kubeconfig={p / 'controller-manager.conf'}",
                f"--service-account-private-key-file={p / 'sa.key'}",
                f"--root-ca-file={p / 'ca.crt'}",
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
            ],
        )
        self.daemon(
            "kube-scheduler",
            [
                str(k / "kube-scheduler"),
                f"--kubeconfig={p / 'scheduler.conf'}",
                f"--authentication-kubeconfig={p / 'scheduler.conf'}",
                f"--authorization-kubeconfig={p / 'scheduler.conf'}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
            ],
        )

    def _start_kubelet(self) -> None:
        p = self.pki
        config = kubelet_config(str(p / "ca.crt"))
        pki.write(p / "kubelet-config.yaml", yaml.safe_dump(config))
        self.daemon("kubelet", [str(self.bins.kubernetes / "kubelet"), *kubelet_args(p)])

    def _start_forwarder(self) -> None:
        """A loopback port on the machine that reaches the API server inside the node."""
        assert shutil.which("socat"), "the cluster tier needs socat"
        script = pki.write(
            self.work / "api-forward.sh",
            f"exec nsenter -t {self.node.pid} -n socat STDIO TCP:{NODE_IP}:{API_PORT}\n",
        )
        self.forwarder = Forwarder(script)
        self.port = self.forwarder.port
        self.kubeconfig = pki.kubeconfig(f"https://127.0.0.1:{self.port}", self._ca.cert_pem, self._admin)
        pki.write(self.pki / "admin.conf", self.kubeconfig)
        kubectl = [str(self.bins.kubernetes / "kubectl"), f"--kubeconfig={self.pki / 'admin.conf'}"]
        self.wait(
            "the API server through the machine's loopback forwarder",
            lambda: subprocess.run([*kubectl, "get", "--raw=/readyz"], capture_output=True, timeout=30).returncode == 0,
            30,
        )

    def node_ready(self) -> bool:
        result = self.kubectl("get", "node", NODE, "-o", "json", check=False)
        if result.returncode != 0:
            return False
        conditions = json.loads(result.stdout)["status"].get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def wait_node_ready(self, timeout: float = 180) -> None:
        self.wait(
            f"node {NODE}", self.node_ready, timeout, ("kubelet", "sandbox-containerd", "kube-controller-manager")
        )
