"""Kubernetes settings: `gvisor-fleet:kubernetes`, one config object, checked at preview.

Each key is declared once in `SETTINGS` (components/schema.py reads them).
`parse_kube_settings` is pure. It appends one line per problem to `problems`,
each naming the config key (`gvisor-fleet:kubernetes.<path>`) and what to
write instead, and returns None when the Kubernetes layer is off (the
default). The RuntimeClass handler is not a setting of its own: it is the
`runtimeName` the host layer writes into containerd, passed in here, so the
two cannot drift.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Literal, cast

from components.fleet.specs import MachineSpec
from components.kinds import ARCHES, Choice, Digests, Flag, HostPath, LocalPath, Obj, Strings, Table, Text, Url, Whole
from components.schema import BAD, Kind, Setting, Values, key_of, read

KEY = "gvisor-fleet:kubernetes"
CLUSTERS = ("existing", "k3s", "kubeadm")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

DEFAULT_RUNTIME_CLASS = "gvisor"
DEFAULT_NAMESPACE = "gvisor-sandbox"
DEFAULT_NODE_LABEL = "gvisor-fleet/gvisor"
NODE_LABEL_VALUE = "verified"
DEFAULT_SAMPLE_IMAGE = "docker.io/library/busybox:1.37"
# The node installer's image needs sh, nsenter, sha256sum and kubectl: Alpine's
# busybox has the first three, this image adds kubectl. Nothing project-built.
DEFAULT_INSTALLER_IMAGE = "docker.io/alpine/kubectl:1.36.3"
DEFAULT_INSTALLER_NAMESPACE = "gvisor-fleet-installer"
# What gVisor's sentry reports as the kernel release, whatever the host runs
# (shell patterns): "4.4.0" for years, "4.19.0-gvisor" in builds since
# mid-2026 (pkg/sentry/kernel/version).
DEFAULT_SANDBOX_KERNELS = ("4.4.0", "*-gvisor")
# Fixed per-pod cost of a gVisor sandbox (Sentry and Gofer processes), charged
# by the scheduler and by ResourceQuota on top of the containers' requests.
DEFAULT_OVERHEAD_CPU = "100m"
DEFAULT_OVERHEAD_MEMORY = "64Mi"
DEFAULT_K3S_VERSION = "v1.36.4+k3s1"
DEFAULT_K3S_RELEASE_URL = "https://github.com/k3s-io/k3s/releases/download"
DEFAULT_K3S_INSTALL_SCRIPT_URL = "https://get.k3s.io"
DEFAULT_K3S_RUNSC_CONFIG = "/etc/gvisor-fleet/k3s-runsc.toml"
DEFAULT_KUBEADM_VERSION = "v1.37.2"
DEFAULT_KUBEADM_RELEASE_URL = "https://dl.k8s.io/release"
DEFAULT_CNI_VERSION = "v1.7.1"
DEFAULT_CNI_URL = "https://github.com/containernetworking/plugins/releases/download"
DEFAULT_POD_SUBNET = "10.244.0.0/16"
DEFAULT_SERVICE_SUBNET = "10.96.0.0/12"
KUBEADM_ADDONS = ("kube-proxy", "coredns")
# kubeadm's own preflight floor for a control plane (its Mem check).
CONTROL_PLANE_MIN_MEMORY_MB = 1700

# Runtime names k3s puts into its own containerd config (built in, or found on
# the node at start); a second table of the same name breaks the TOML.
K3S_RUNTIMES = (
    "runc", "crun", "nvidia", "nvidia-experimental", "lunatic", "slight", "spin",
    "wws", "wasmedge", "wasmer", "wasmtime",
)  # fmt: skip

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
_NAME_PART = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$")
_QUANTITY = re.compile(r"^(?P<num>[+-]?(\d+(\.\d*)?|\.\d+))(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
_K3S_VERSION = re.compile(r"^v1\.(\d+)\.(\d+)\+k3s\d+$")
_KERNEL_PATTERN = re.compile(r"^[0-9A-Za-z._+*?-]+$")
_IMAGE = re.compile(r"^[a-z0-9]([a-z0-9._/:-]*[a-z0-9])?(@sha256:[0-9a-f]{64})?$")
_SUFFIX = {
    "": Decimal(1), "m": Decimal("0.001"), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9, "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}  # fmt: skip

Cluster = Literal["existing", "k3s", "kubeadm"]


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str


@dataclass(frozen=True)
class K3sSettings:
    version: str = DEFAULT_K3S_VERSION
    release_url: str = DEFAULT_K3S_RELEASE_URL
    install_script_url: str = DEFAULT_K3S_INSTALL_SCRIPT_URL
    sha256: Mapping[str, str] = field(default_factory=dict)
    # What agents dial to join; default https://<first machine's address>:6443.
    server_url: str | None = None
    # The API address written into the kubeconfig; default server_url.
    api_url: str | None = None
    runsc_config_path: str = DEFAULT_K3S_RUNSC_CONFIG


@dataclass(frozen=True)
class KubeadmSettings:
    version: str = DEFAULT_KUBEADM_VERSION
    control_plane: str | None = None  # a machine name; None: the first machine
    release_url: str = DEFAULT_KUBEADM_RELEASE_URL
    cni_version: str = DEFAULT_CNI_VERSION
    cni_url: str = DEFAULT_CNI_URL
    release_dir: str | None = None  # binaries and images from here, copied over SSH
    pod_subnet: str = DEFAULT_POD_SUBNET
    service_subnet: str = DEFAULT_SERVICE_SUBNET
    api_url: str | None = None  # None: https://<control plane address>:6443
    addons: tuple[str, ...] = KUBEADM_ADDONS
    schedule_on_control_plane: bool = True
    timeout_seconds: int = 600


@dataclass(frozen=True)
class InstallerSettings:
    """The in-cluster node installer (kubernetes.nodeInstaller): see node_installer.py."""

    image: str = DEFAULT_INSTALLER_IMAGE
    namespace: str = DEFAULT_INSTALLER_NAMESPACE
    arches: tuple[str, ...] = ("x86_64",)


@dataclass(frozen=True)
class KubeSettings:
    handler: str  # == GvisorSettings.runtime_name, never set on its own
    cluster: Cluster = "existing"
    runtime_class_name: str = DEFAULT_RUNTIME_CLASS
    namespace: str = DEFAULT_NAMESPACE
    node_label: str = DEFAULT_NODE_LABEL
    node_names: Mapping[str, str] = field(default_factory=dict)
    overhead: Mapping[str, str] | None = field(
        default_factory=lambda: {"cpu": DEFAULT_OVERHEAD_CPU, "memory": DEFAULT_OVERHEAD_MEMORY}
    )
    taint: Taint | None = None
    sample_image: str = DEFAULT_SAMPLE_IMAGE
    sandbox_kernel_releases: tuple[str, ...] = DEFAULT_SANDBOX_KERNELS
    verify_timeout_seconds: int = 300
    k3s: K3sSettings = field(default_factory=K3sSettings)
    kubeadm: KubeadmSettings = field(default_factory=KubeadmSettings)
    node_installer: InstallerSettings | None = None

    def node_name(self, machine: str) -> str:
        return self.node_names.get(machine, machine)


def parse_quantity(text: str) -> Decimal | None:
    """A Kubernetes resource quantity as a number (cores, bytes), or None."""
    m = _QUANTITY.match(text)
    if not m:
        return None
    suffix = m.group("suffix") or ""
    try:
        number = Decimal(m.group("num"))
        scale = Decimal(10) ** int(suffix[1:]) if suffix[:1] in ("e", "E") else _SUFFIX[suffix]
    except (InvalidOperation, ValueError):
        return None
    return number * scale


def quantity_problem(value: object, resource: str) -> str | None:
    """Why `value` is not a sane CPU or memory quantity for a pod's fixed overhead."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return f"must be a Kubernetes quantity such as '{DEFAULT_OVERHEAD_CPU}' or '{DEFAULT_OVERHEAD_MEMORY}'"
    text = str(value).strip()
    amount = parse_quantity(text)
    if amount is None:
        example = DEFAULT_OVERHEAD_CPU if resource == "cpu" else DEFAULT_OVERHEAD_MEMORY
        return f"'{text}' is not a Kubernetes quantity; write e.g. '{example}' (suffixes m, k, M, G, Ki, Mi, Gi)"
    if amount <= 0:
        return f"'{text}' must be more than zero; to charge no overhead set {key_of(KEY, 'overhead')} to false"
    if resource == "cpu":
        if amount < Decimal("0.001"):
            return f"'{text}' is below 1m, the smallest CPU amount Kubernetes counts"
        if amount > 4:
            return f"'{text}' is {amount} whole CPUs per pod; for thousandths write '{text}m'"
    else:
        if amount < 2**20:
            return f"'{text}' is {amount} bytes, less than 1Mi; did you mean '{text}Mi'?"
        if amount > 8 * 2**30:
            return f"'{text}' is more than 8Gi of fixed overhead per pod; gVisor needs tens of MiB"
        if amount != amount.to_integral_value():
            return f"'{text}' is a fraction of a byte; use a whole number of bytes (e.g. Mi)"
    return None


@dataclass(frozen=True)
class Quantity(Kind):
    """A Kubernetes resource quantity (a string, or a bare number) within sane bounds for `resource`."""

    resource: str

    def parse(self, value: object, key: str, problems: list[str]) -> object:
        why = quantity_problem(value, self.resource)
        if why:
            problems.append(f"{key}: {why}")
            return BAD
        return str(value).strip()

    def allowed(self) -> str:
        return "1m to 4" if self.resource == "cpu" else "1Mi to 8Gi"


def label_key_problem(value: object) -> str | None:
    """Why `value` is not a Kubernetes qualified name ([prefix/]name) of our own."""
    if not isinstance(value, str) or not value:
        return f"must be a label key such as '{DEFAULT_NODE_LABEL}'"
    prefix, _, name = value.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)):
        return f"'{value}' has an invalid prefix '{prefix}'; it must be a lower-case DNS subdomain"
    if not _NAME_PART.match(name):
        return (
            f"'{value}' is not a valid label key; the name part must be at most 63 letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit"
        )
    if prefix.endswith(("kubernetes.io", "k8s.io")) and prefix != "node-restriction.kubernetes.io":
        return f"'{value}' uses a prefix reserved for Kubernetes; use your own, e.g. '{DEFAULT_NODE_LABEL}'"
    return None


def _namespace_problem(value: object) -> str | None:
    if value in ("default", "kube-system", "kube-public", "kube-node-lease"):
        return (
            f"'{value}' is shared with other workloads; the program labels it "
            "restricted and denies all traffic in it, so give it a namespace of its own"
        )
    return None


_ANY_URL = ("https://", "http://", "file://")
_LABEL_KEY = "label key, [prefix/]name, not a Kubernetes prefix"
_DNS_SUBDOMAIN_253 = re.compile(r"^(?=.{1,253}$)" + DNS_SUBDOMAIN.pattern[1:])

OVERHEAD = (
    Setting("cpu", Quantity("cpu"), "CPU charged per sandboxed pod.", DEFAULT_OVERHEAD_CPU),
    Setting("memory", Quantity("memory"), "Memory charged per sandboxed pod.", DEFAULT_OVERHEAD_MEMORY),
)
TAINT = (
    Setting("key", Text(describe=_LABEL_KEY), "Taint key (a label key).", check=label_key_problem,
            required=f"give a label key such as '{DEFAULT_NODE_LABEL}'"),
    Setting("value", Text(_LABEL_VALUE, "must be at most 63 letters, digits, '-', '_' or '.'", "label value"),
            "Taint value.", ""),
    Setting("effect", Choice(TAINT_EFFECTS), "Taint effect.", "NoSchedule"),
)  # fmt: skip
K3S = (
    Setting("version", Text(_K3S_VERSION, "is not a k3s release", "v1.N.N+k3sN"), "k3s release.",
            DEFAULT_K3S_VERSION, fix=f"write it like {DEFAULT_K3S_VERSION}"),
    Setting("releaseUrl", Url(_ANY_URL), "Where k3s releases live (a mirror works).", DEFAULT_K3S_RELEASE_URL),
    Setting("installScriptUrl", Url(_ANY_URL), "The k3s install script.", DEFAULT_K3S_INSTALL_SCRIPT_URL),
    Setting("sha256", Digests(64, "SHA-256 of the k3s binary"), "Pinned SHA-256 of the k3s binary per arch."),
    Setting("serverUrl", Url(), "What agents dial to join.", doc_default="https://<first machine's address>:6443"),
    Setting("apiUrl", Url(), "The API address written into the kubeconfig.", doc_default="serverUrl"),
    Setting("runscConfigPath", HostPath(), "The runsc.toml k3s's containerd passes to runsc.",
            DEFAULT_K3S_RUNSC_CONFIG),
)  # fmt: skip
_KUBE_VERSION = re.compile(r"^v1\.\d+\.\d+$")
_CNI_VERSION = re.compile(r"^v\d+\.\d+\.\d+$")


def _subnet_problem(value: object) -> str | None:
    try:
        net = ipaddress.ip_network(str(value), strict=True)
    except ValueError as err:
        return f"'{value}' is not a network in CIDR form ({err}), e.g. {DEFAULT_POD_SUBNET}"
    if net.version == 4 and net.prefixlen > 22:
        return f"'{value}' is too small: give at least a /22 (every node gets a /24 of it)"
    return None


KUBEADM = (
    Setting("version", Text(_KUBE_VERSION, "is not a Kubernetes release", "v1.N.N"), "Kubernetes release of "
            "kubeadm, kubelet, kubectl and the control plane.", DEFAULT_KUBEADM_VERSION,
            fix=f"write it like {DEFAULT_KUBEADM_VERSION}"),
    Setting("controlPlane", Text(describe="machine name"), "The machine that runs the control plane; the others "
            "join as workers.", doc_default="the first machine"),
    Setting("releaseUrl", Url(_ANY_URL), "Where kubeadm, kubelet and kubectl live "
            "(<url>/<version>/bin/linux/<arch>/<name>, each with a .sha512 beside it).", DEFAULT_KUBEADM_RELEASE_URL),
    Setting("cniVersion", Text(_CNI_VERSION, "is not a CNI plugins release", "vN.N.N"), "Release of the CNI "
            "reference plugins (bridge, host-local, loopback, portmap).", DEFAULT_CNI_VERSION),
    Setting("cniUrl", Url(_ANY_URL), "Where the CNI plugin archives live "
            "(<url>/<version>/cni-plugins-linux-<arch>-<version>.tgz and .sha512).", DEFAULT_CNI_URL),
    Setting("releaseDir", LocalPath("directory"), "A directory on this machine holding <version>/<arch>/ "
            "(kubeadm, kubelet, kubectl, cni-plugins.tgz, images/*.tar, SHA512SUMS), copied to each machine "
            "instead of downloading (no internet needed).", doc_default="none (download)"),
    Setting("podSubnet", Text(describe="CIDR"), "Pod addresses; each machine gets the next /24, in the order of "
            "machines.", DEFAULT_POD_SUBNET, check=_subnet_problem),
    Setting("serviceSubnet", Text(describe="CIDR"), "Service cluster IPs.", DEFAULT_SERVICE_SUBNET,
            check=_subnet_problem),
    Setting("apiUrl", Url(), "The API address written into the kubeconfig (and the API server's certificate).",
            doc_default="https://<control plane address>:6443"),
    Setting("addons", Strings(re.compile("^(kube-proxy|coredns)$"), "kube-proxy or coredns",
                              "['kube-proxy', 'coredns']", empty=True),
            "kubeadm's addons to install; [] skips both (Services and cluster DNS then need your own).",
            KUBEADM_ADDONS),
    Setting("scheduleOnControlPlane", Flag(), "Let pods (the samples too) run on the control-plane machine.",
            True),
    Setting("timeoutSeconds", Whole(120, 3600, "seconds"), "Bound of each kubeadm step (init, join, a node "
            "becoming Ready); the control plane's liveness probes allow a third of it.", 600),
)  # fmt: skip
INSTALLER = (
    Setting(
        "image",
        Text(_IMAGE, f"is not an image reference like {DEFAULT_INSTALLER_IMAGE}", "image reference"),
        "Image of the installer pods; it needs sh, nsenter, sha256sum and kubectl (a mirror's copy works).",
        DEFAULT_INSTALLER_IMAGE,
    ),
    Setting(
        "namespace",
        Text(DNS_LABEL, "must be a lower-case DNS label (letters, digits, '-')", "lower-case DNS label"),
        "Namespace of the installer (its pods are privileged; nothing else belongs there).",
        DEFAULT_INSTALLER_NAMESPACE,
        check=_namespace_problem,
    ),
    Setting(
        "arches",
        Strings(re.compile("^(x86_64|aarch64)$"), "x86_64 or aarch64", "['x86_64', 'aarch64']"),
        "Architectures of the cluster's nodes: each gets a sample pod and a verification Job.",
        ("x86_64",),
    ),
)
FIELDS = (
    Setting("enabled", Flag(), "Deploy the Kubernetes layer.", True, doc_default="true (when the object is set)"),
    Setting("cluster", Choice(CLUSTERS), "existing (a kubeconfig secret), kubeadm (made on the machines with "
            "upstream kubeadm) or k3s (made on the machines; not run in this project's tests).", "existing"),
    Setting("runtimeClassName", Text(_DNS_SUBDOMAIN_253, "must be a lower-case DNS subdomain (letters, digits, "
                                     "'-' and '.'), e.g. gvisor", "lower-case DNS subdomain"),
            "Name of the RuntimeClass (its handler is runtimeName).", DEFAULT_RUNTIME_CLASS),
    Setting("namespace", Text(DNS_LABEL, "must be a lower-case DNS label (letters, digits, '-')",
                              "lower-case DNS label"),
            "Namespace of the sample pods and verification jobs (restricted, no traffic).", DEFAULT_NAMESPACE,
            check=_namespace_problem),
    Setting("nodeLabel", Text(describe=_LABEL_KEY),
            "Label put on nodes where gVisor is verified; the RuntimeClass selects it.", DEFAULT_NODE_LABEL,
            check=label_key_problem),
    Setting("nodeNames", Table("machine name to node name", "{m1: ip-10-0-0-1.ec2.internal}"),
            "Node name per machine where it differs from the machine name (existing clusters).",
            doc_default="the machine names"),
    Setting("overhead", Obj(OVERHEAD, "kubernetes.overhead", "{cpu: 100m, memory: 64Mi}", off=True),
            "Fixed per-pod cost of a sandbox, charged by the scheduler; false charges none.",
            doc_default=f"{{cpu: {DEFAULT_OVERHEAD_CPU}, memory: {DEFAULT_OVERHEAD_MEMORY}}}"),
    Setting("taint", Obj(TAINT, "kubernetes.taint", "{key: sandbox.gke.io/runtime, value: gvisor, effect: "
                         "NoSchedule}", off=True), "Taint the RuntimeClass tolerates (nodes are not tainted here)."),
    Setting("sampleImage", Text(_IMAGE, f"is not an image reference like {DEFAULT_SAMPLE_IMAGE}", "image reference"),
            "Image of the sample pods and verification jobs.", DEFAULT_SAMPLE_IMAGE),
    Setting("sandboxKernelReleases", Strings(_KERNEL_PATTERN, "a kernel release pattern (letters, digits, '.', "
                                             "'-', '+', '_', '*', '?')", "['4.4.0', '*-gvisor']"),
            "Kernel releases (shell patterns) a pod under gVisor reports.", DEFAULT_SANDBOX_KERNELS),
    Setting("verifyTimeoutSeconds", Whole(30, 3600, "seconds"), "Seconds the verification jobs may take.", 300),
    Setting("k3s", Obj(K3S, "kubernetes.k3s", "{version: v1.36.4+k3s1}"), "The k3s cluster (cluster: k3s)."),
    Setting("kubeadm", Obj(KUBEADM, "kubernetes.kubeadm", "{controlPlane: vm-amd64}"),
            "The kubeadm cluster (cluster: kubeadm)."),
    Setting("nodeInstaller", Obj(INSTALLER, "kubernetes.nodeInstaller", "{arches: [x86_64]}", off=True),
            "Install gVisor on every node from inside the cluster (cluster: existing; true takes the defaults): "
            "a privileged DaemonSet runs the host agent on each node, now and when it joins, and labels the node "
            "once verified; machines may then be empty.", doc_default="off (nodes are machines reached over SSH)"),
)  # fmt: skip
SETTINGS = (
    Setting("kubernetes", Obj(FIELDS, "kubernetes", "{enabled: true, cluster: k3s}", off=True),
            "The Kubernetes layer: a RuntimeClass, sample pods and verification; off when unset."),
    Setting("kubeconfig", Text(), "Kubeconfig of an existing cluster (a secret).", secret=True,
            doc_default="none (needed by cluster: existing)"),
)  # fmt: skip
KNOWN_KEYS = tuple(s.name for s in FIELDS)
K3S_KEYS = tuple(s.name for s in K3S)


def _overhead(v: Values) -> Mapping[str, str] | None:
    default = {"cpu": DEFAULT_OVERHEAD_CPU, "memory": DEFAULT_OVERHEAD_MEMORY}
    if "overhead" in v.given and v["overhead"] is None:
        return None  # false: charge nothing
    o = v.sub("overhead")
    return {r: str(o[r]) for r in ("cpu", "memory")} if o else default


def _taint(v: Values) -> Taint | None:
    t = v.sub("taint")
    if t is None or not t.ok("key"):
        return None
    return Taint(key=t.text("key"), value=str(t["value"]), effect=t.text("effect"))


def _k3s(v: Values, runtime_name: str, problems: list[str]) -> K3sSettings:
    if "k3s" in v.given and v["cluster"] != "k3s":
        cluster = key_of(KEY, "cluster")
        problems.append(f"{key_of(KEY, 'k3s')}: is set, but {cluster} is '{v['cluster']}'; set cluster to k3s")
    if v["cluster"] == "k3s" and runtime_name in K3S_RUNTIMES:
        problems.append(
            f"gvisor-fleet:runtimeName: '{runtime_name}' is a runtime k3s configures itself; "
            "pick another name (the default is runsc)"
        )
    k = v.sub("k3s") or read(K3S, {}, key_of(KEY, "k3s"), problems, "kubernetes.k3s")
    return K3sSettings(
        version=k.text("version"),
        release_url=k.text("releaseUrl"),
        install_script_url=k.text("installScriptUrl"),
        sha256=cast(Mapping[str, str], k["sha256"] or {}),
        server_url=k.maybe_text("serverUrl"),
        api_url=k.maybe_text("apiUrl"),
        runsc_config_path=k.text("runscConfigPath"),
    )


def _kubeadm(v: Values, problems: list[str]) -> KubeadmSettings:
    if "kubeadm" in v.given and v["cluster"] != "kubeadm":
        cluster = key_of(KEY, "cluster")
        problems.append(f"{key_of(KEY, 'kubeadm')}: is set, but {cluster} is '{v['cluster']}'; set cluster to kubeadm")
    k = v.sub("kubeadm") or read(KUBEADM, {}, key_of(KEY, "kubeadm"), problems, "kubernetes.kubeadm")
    pods, services = str(k["podSubnet"]), str(k["serviceSubnet"])
    if k.ok("podSubnet", "serviceSubnet") and ipaddress.ip_network(pods).overlaps(ipaddress.ip_network(services)):
        problems.append(
            f"{key_of(KEY, 'kubeadm.serviceSubnet')}: {services} overlaps podSubnet {pods}; give them apart"
        )
    return KubeadmSettings(
        version=k.text("version"),
        control_plane=k.maybe_text("controlPlane"),
        release_url=k.text("releaseUrl"),
        cni_version=k.text("cniVersion"),
        cni_url=k.text("cniUrl"),
        release_dir=k.maybe_text("releaseDir"),
        pod_subnet=pods,
        service_subnet=services,
        api_url=k.maybe_text("apiUrl"),
        addons=tuple(cast(Sequence[str], k["addons"])),
        schedule_on_control_plane=k.flag("scheduleOnControlPlane"),
        timeout_seconds=k.number("timeoutSeconds"),
    )


def _installer(v: Values, problems: list[str]) -> InstallerSettings | None:
    i = v.sub("nodeInstaller")
    if i is None:
        return None
    key = key_of(KEY, "nodeInstaller")
    if v["cluster"] != "existing":
        problems.append(
            f"{key}: installs the nodes of an existing cluster, but {key_of(KEY, 'cluster')} is '{v['cluster']}', "
            "whose nodes the program makes and installs over SSH; remove nodeInstaller or set cluster: existing"
        )
    if i.ok("namespace") and v.ok("namespace") and i["namespace"] == v["namespace"]:
        problems.append(
            f"{key}.namespace: '{i['namespace']}' is also {key_of(KEY, 'namespace')}, which enforces the restricted "
            "profile the installer's privileged pods break; give the installer a namespace of its own"
        )
    if v["nodeNames"]:
        problems.append(
            f"{key_of(KEY, 'nodeNames')}: names the nodes of machines, but with nodeInstaller every node installs "
            "and labels itself; remove nodeNames"
        )
    return InstallerSettings(
        image=i.text("image"), namespace=i.text("namespace"), arches=cast(tuple[str, ...], i["arches"])
    )


def _node_names(v: Values, problems: list[str]) -> dict[str, str]:
    key = key_of(KEY, "nodeNames")
    node_names: dict[str, str] = {}
    for machine, node in cast(Mapping[str, object], v["nodeNames"] or {}).items():
        if not isinstance(node, str) or not _DNS_SUBDOMAIN_253.match(node):
            problems.append(f"{key}.{machine}: must be the node's name as `kubectl get nodes` shows it")
        else:
            node_names[machine] = node
    if node_names and v["cluster"] in ("k3s", "kubeadm"):
        problems.append(
            f"{key}: {v['cluster']} nodes are named after their machines; drop nodeNames or use cluster existing"
        )
    return node_names


def parse_kube_settings(raw: object, runtime_name: str, problems: list[str]) -> KubeSettings | None:
    """`gvisor-fleet:kubernetes` as KubeSettings, or None when it is off (the default)."""
    if raw is None or raw is False:
        return None
    if isinstance(raw, Mapping) and raw.get("nodeInstaller") is True:
        raw = {**raw, "nodeInstaller": {}}  # true: the installer with its defaults
    v = SETTINGS[0].kind.parse({"enabled": True} if raw is True else raw, KEY, problems)
    if not isinstance(v, Values) or not v.flag("enabled"):
        return None
    if not DNS_LABEL.match(runtime_name):
        problems.append(
            f"{key_of('gvisor-fleet', 'runtimeName')}: '{runtime_name}' cannot be a RuntimeClass handler; "
            "use lower-case letters, digits and '-'"
        )
    return KubeSettings(
        handler=runtime_name,
        cluster=cast(Cluster, v["cluster"]),
        runtime_class_name=v.text("runtimeClassName"),
        namespace=v.text("namespace"),
        node_label=v.text("nodeLabel"),
        node_names=_node_names(v, problems),
        overhead=_overhead(v),
        taint=_taint(v),
        sample_image=v.text("sampleImage"),
        sandbox_kernel_releases=cast(tuple[str, ...], v["sandboxKernelReleases"]),
        verify_timeout_seconds=v.number("verifyTimeoutSeconds"),
        k3s=_k3s(v, runtime_name, problems),
        kubeadm=_kubeadm(v, problems),
        node_installer=_installer(v, problems),
    )


def fleet_problems(kube: KubeSettings, machines: Sequence[MachineSpec], containerd_mode: str) -> list[str]:
    """Problems between the Kubernetes settings and the fleet, one line each.

    A RuntimeClass whose nodeSelector matches no node leaves every sandboxed
    pod Pending forever; this catches the ways that happens before `up`.
    """
    problems: list[str] = []
    if kube.node_installer is not None:
        return problems + installer_fleet_problems(kube, machines, containerd_mode)
    if not machines:
        problems.append(
            f"{KEY}: is enabled, but gvisor-fleet:machines is empty, so RuntimeClass "
            f"'{kube.runtime_class_name}' would have no node that can run it; add machines "
            f"(their gVisor-verified nodes get {kube.node_label}={NODE_LABEL_VALUE}) or turn kubernetes off"
        )
    for i, spec in enumerate(machines):
        if spec.arch not in ARCHES:
            problems.append(
                f"gvisor-fleet:machines[{i}].arch: '{spec.arch}' must be x86_64 or aarch64 when "
                f"{KEY} is enabled: the sample pods and verification jobs are made per architecture"
            )
    names = {m.name for m in machines}
    for machine in kube.node_names:
        if machine not in names:
            problems.append(f"{key_of(KEY, 'nodeNames')}.{machine}: no machine of that name in gvisor-fleet:machines")
    nodes = [kube.node_name(m.name) for m in machines]
    for node in sorted({n for n in nodes if nodes.count(n) > 1}):
        problems.append(f"{key_of(KEY, 'nodeNames')}: node '{node}' is given to more than one machine")
    if kube.cluster == "existing" and containerd_mode == "off":
        problems.append(
            f"gvisor-fleet:containerd: 'off' leaves the nodes' containerd without the '{kube.handler}' runtime, "
            f"so no node could run RuntimeClass '{kube.runtime_class_name}'; set it to auto or required"
        )
    loopback = ("127.0.0.1", "localhost", "::1")
    if kube.cluster == "k3s" and len(machines) > 1 and not kube.k3s.server_url and machines[0].address in loopback:
        problems.append(
            f"{key_of(KEY, 'k3s.serverUrl')}: machine '{machines[0].name}' (the k3s server) is reached at "
            f"{machines[0].address}, which other machines cannot dial; set the URL agents use to join"
        )
    if kube.cluster == "kubeadm":
        problems.extend(kubeadm_problems(kube.kubeadm, machines))
    return problems


def installer_fleet_problems(kube: KubeSettings, machines: Sequence[MachineSpec], containerd_mode: str) -> list[str]:
    """With the node installer, the nodes install themselves: machines over SSH would be a second installer."""
    problems: list[str] = []
    if machines:
        names = ", ".join(m.name for m in machines)
        problems.append(
            f"gvisor-fleet:machines: {names} would be installed over SSH while {key_of(KEY, 'nodeInstaller')} "
            "installs every node of the cluster, two installers of one node; leave machines empty, or remove "
            "nodeInstaller to install the nodes over SSH"
        )
    if containerd_mode == "off":
        problems.append(
            f"gvisor-fleet:containerd: 'off', but {key_of(KEY, 'nodeInstaller')} gives each node's containerd the "
            f"'{kube.handler}' runtime; set it to auto or required"
        )
    return problems


def installer_gvisor_problems(kube: KubeSettings, release_fetch: str) -> list[str]:
    """gVisor settings the in-cluster installer cannot honour (it has no SSH to copy over)."""
    if kube.node_installer is None or release_fetch != "once":
        return []
    return [
        f"gvisor-fleet:releaseFetch: 'once' copies the release to each machine over SSH, which "
        f"{key_of(KEY, 'nodeInstaller')} has not: each node fetches it from gvisor-fleet:baseUrl (a mirror works); "
        "set releaseFetch to host"
    ]


def control_plane_of(kubeadm: KubeadmSettings, machines: Sequence[MachineSpec]) -> MachineSpec | None:
    """The control-plane machine: the one named, else the first."""
    if kubeadm.control_plane is None:
        return machines[0] if machines else None
    return next((m for m in machines if m.name == kubeadm.control_plane), None)


def kubeadm_problems(kubeadm: KubeadmSettings, machines: Sequence[MachineSpec]) -> list[str]:
    """What kubeadm would refuse, found at preview where the fleet's settings already say it."""
    problems: list[str] = []
    if not machines:
        return problems  # fleet_problems says it
    cp = control_plane_of(kubeadm, machines)
    if cp is None:
        names = ", ".join(m.name for m in machines)
        problems.append(
            f"{key_of(KEY, 'kubeadm.controlPlane')}: no machine named '{kubeadm.control_plane}'; name one of {names}"
        )
        return problems
    memory = getattr(cp.options, "memory_mb", None)
    if isinstance(memory, int) and memory < CONTROL_PLANE_MIN_MEMORY_MB:
        problems.append(
            f"gvisor-fleet:machines ({cp.name}).memory: {memory} MB is below the {CONTROL_PLANE_MIN_MEMORY_MB} MB "
            f"kubeadm needs on a control plane; set memory: 2048, or make another machine the control plane "
            f"({key_of(KEY, 'kubeadm.controlPlane')})"
        )
    cpus = getattr(cp.options, "cpus", None)
    if isinstance(cpus, int) and cpus < 2:
        problems.append(f"gvisor-fleet:machines ({cp.name}).cpus: kubeadm needs 2 CPUs on a control plane; set cpus: 2")
    if kubeadm.release_dir:
        problems += _release_dir_problems(kubeadm, machines)
    pods = ipaddress.ip_network(kubeadm.pod_subnet)
    if pods.version == 4 and len(machines) > 2 ** (24 - pods.prefixlen):
        problems.append(
            f"{key_of(KEY, 'kubeadm.podSubnet')}: {kubeadm.pod_subnet} has room for {2 ** (24 - pods.prefixlen)} "
            f"nodes of a /24 each, and the fleet has {len(machines)} machines; give a larger subnet"
        )
    return problems


def _release_dir_problems(kubeadm: KubeadmSettings, machines: Sequence[MachineSpec]) -> list[str]:
    """releaseDir must hold <version>/<arch>/SHA512SUMS for every arch of the fleet (copied as it is)."""
    goarch = {"x86_64": "amd64", "aarch64": "arm64"}
    problems = []
    for arch in sorted({goarch[m.arch] for m in machines if m.arch in goarch}):  # "detect": known at up
        folder = Path(kubeadm.release_dir or "") / kubeadm.version / arch
        if not (folder / "SHA512SUMS").is_file():
            problems.append(
                f"{key_of(KEY, 'kubeadm.releaseDir')}: {folder} has no SHA512SUMS; lay out {kubeadm.version}/{arch}/ "
                "as docs/kubernetes.md says (tests/toolchain/make-kubernetes-dir.sh makes one), or drop releaseDir "
                "to download from releaseUrl"
            )
    return problems
