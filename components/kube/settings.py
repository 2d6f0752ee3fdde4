"""Kubernetes settings: `gvisor-fleet:kubernetes`, one config object, checked at preview.

`parse_kube_settings` is pure. It appends one line per problem to `problems`,
each naming the config key (`gvisor-fleet:kubernetes.<path>`) and what to
write instead, and returns None when the Kubernetes layer is off (the
default). The RuntimeClass handler is not a setting of its own: it is the
`runtimeName` the host layer writes into containerd, passed in here, so the
two cannot drift.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Literal, cast

from components.fleet.specs import ARCHES, MachineSpec

KEY = "gvisor-fleet:kubernetes"
CLUSTERS = ("existing", "k3s")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

DEFAULT_RUNTIME_CLASS = "gvisor"
DEFAULT_NAMESPACE = "gvisor-sandbox"
DEFAULT_NODE_LABEL = "gvisor-fleet/gvisor"
NODE_LABEL_VALUE = "verified"
DEFAULT_SAMPLE_IMAGE = "docker.io/library/busybox:1.37"
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
_HEX256 = re.compile(r"^[0-9a-f]{64}$")
_IMAGE = re.compile(r"^[a-z0-9]([a-z0-9._/:-]*[a-z0-9])?(@sha256:[0-9a-f]{64})?$")
_SUFFIX = {
    "": Decimal(1), "m": Decimal("0.001"), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9, "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}  # fmt: skip

Cluster = Literal["existing", "k3s"]


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

    def node_name(self, machine: str) -> str:
        return self.node_names.get(machine, machine)


KNOWN_KEYS = (
    "enabled", "cluster", "runtimeClassName", "namespace", "nodeLabel", "nodeNames", "overhead",
    "taint", "sampleImage", "sandboxKernelReleases", "verifyTimeoutSeconds", "k3s",
)  # fmt: skip
K3S_KEYS = ("version", "releaseUrl", "installScriptUrl", "sha256", "serverUrl", "apiUrl", "runscConfigPath")


def _key(path: str) -> str:
    return f"{KEY}.{path}" if path else KEY


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


def quantity_problem(path: str, value: object, resource: str) -> str | None:
    """Why `value` is not a sane CPU or memory quantity for a pod's fixed overhead."""
    key = _key(path)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return f"{key}: must be a Kubernetes quantity such as '{DEFAULT_OVERHEAD_CPU}' or '{DEFAULT_OVERHEAD_MEMORY}'"
    text = str(value).strip()
    amount = parse_quantity(text)
    if amount is None:
        example = DEFAULT_OVERHEAD_CPU if resource == "cpu" else DEFAULT_OVERHEAD_MEMORY
        return f"{key}: '{text}' is not a Kubernetes quantity; write e.g. '{example}' (suffixes m, k, M, G, Ki, Mi, Gi)"
    if amount <= 0:
        return f"{key}: '{text}' must be more than zero; to charge no overhead set {_key('overhead')} to false"
    if resource == "cpu":
        if amount < Decimal("0.001"):
            return f"{key}: '{text}' is below 1m, the smallest CPU amount Kubernetes counts"
        if amount > 4:
            return f"{key}: '{text}' is {amount} whole CPUs per pod; for thousandths write '{text}m'"
    else:
        if amount < 2**20:
            return f"{key}: '{text}' is {amount} bytes, less than 1Mi; did you mean '{text}Mi'?"
        if amount > 8 * 2**30:
            return f"{key}: '{text}' is more than 8Gi of fixed overhead per pod; gVisor needs tens of MiB"
        if amount != amount.to_integral_value():
            return f"{key}: '{text}' is a fraction of a byte; use a whole number of bytes (e.g. Mi)"
    return None


def label_key_problem(key: str, value: object) -> str | None:
    """Why `value` is not a Kubernetes qualified name ([prefix/]name)."""
    if not isinstance(value, str) or not value:
        return f"{key}: must be a label key such as '{DEFAULT_NODE_LABEL}'"
    prefix, _, name = value.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)):
        return f"{key}: '{value}' has an invalid prefix '{prefix}'; it must be a lower-case DNS subdomain"
    if not _NAME_PART.match(name):
        return (
            f"{key}: '{value}' is not a valid label key; the name part must be at most 63 letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit"
        )
    if prefix.endswith(("kubernetes.io", "k8s.io")) and prefix != "node-restriction.kubernetes.io":
        return f"{key}: '{value}' uses a prefix reserved for Kubernetes; use your own, e.g. '{DEFAULT_NODE_LABEL}'"
    return None


def _url_problem(key: str, value: str, https_only: bool = False) -> str | None:
    schemes = ("https://",) if https_only else ("https://", "http://", "file://")
    if not value.startswith(schemes):
        return f"{key}: '{value}' must start with {' or '.join(schemes)}"
    return None


class _Reader:
    """Typed reads from one config object, recording problems with full keys."""

    def __init__(self, raw: Mapping[str, object], prefix: str, known: Sequence[str], problems: list[str]) -> None:
        self.raw, self.prefix, self.problems = raw, prefix, problems
        for name in raw:
            if name not in known:
                close = [k for k in known if k.lower() == str(name).lower()]
                hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(known)}"
                problems.append(f"{self.key(str(name))}: unknown setting{hint}")

    def key(self, name: str) -> str:
        return _key(f"{self.prefix}{name}")

    def text(self, name: str, default: str) -> str:
        value = self.raw.get(name)
        if value is None:
            return default
        if not isinstance(value, str) or not value.strip():
            self.problems.append(f"{self.key(name)}: must be a non-empty string")
            return default
        return value.strip()

    def optional_text(self, name: str) -> str | None:
        return self.text(name, "") or None

    def mapping(self, name: str, example: str) -> Mapping[str, object]:
        value = self.raw.get(name)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problems.append(f"{self.key(name)}: must be an object, e.g. {example}")
            return {}
        return cast(Mapping[str, object], value)


def _taint(r: _Reader) -> Taint | None:
    raw = r.raw.get("taint")
    if raw is None or raw is False:
        return None
    example = "{key: sandbox.gke.io/runtime, value: gvisor, effect: NoSchedule}"
    if not isinstance(raw, Mapping):
        r.problems.append(f"{r.key('taint')}: must be an object, e.g. {example}")
        return None
    t = _Reader(cast(Mapping[str, object], raw), "taint.", ("key", "value", "effect"), r.problems)
    key = t.text("key", "")
    p = label_key_problem(t.key("key"), key or None)
    if p:
        r.problems.append(p)
    value = t.text("value", "")
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        r.problems.append(f"{t.key('value')}: '{value}' must be at most 63 letters, digits, '-', '_' or '.'")
    effect = t.text("effect", "NoSchedule")
    if effect not in TAINT_EFFECTS:
        r.problems.append(f"{t.key('effect')}: '{effect}' is not a taint effect; use one of {', '.join(TAINT_EFFECTS)}")
    return Taint(key=key, value=value, effect=effect)


def _overhead(r: _Reader) -> Mapping[str, str] | None:
    raw = r.raw.get("overhead")
    default = {"cpu": DEFAULT_OVERHEAD_CPU, "memory": DEFAULT_OVERHEAD_MEMORY}
    if raw is None:
        return default
    if raw is False:
        return None
    if not isinstance(raw, Mapping):
        r.problems.append(f"{r.key('overhead')}: must be {{cpu: 100m, memory: 64Mi}} or false")
        return default
    o = _Reader(cast(Mapping[str, object], raw), "overhead.", ("cpu", "memory"), r.problems)
    out = dict(default)
    for resource in ("cpu", "memory"):
        value = o.raw.get(resource)
        if value is None:
            continue
        p = quantity_problem(f"overhead.{resource}", value, resource)
        if p:
            r.problems.append(p)
        else:
            out[resource] = str(value).strip()
    return out


def _k3s(r: _Reader, runtime_name: str, cluster: str) -> K3sSettings:
    d = K3sSettings()
    raw = r.mapping("k3s", "{version: v1.36.4+k3s1}")
    if raw and cluster != "k3s":
        r.problems.append(f"{r.key('k3s')}: is set, but {r.key('cluster')} is '{cluster}'; set cluster to k3s")
    k = _Reader(raw, "k3s.", K3S_KEYS, r.problems)
    version = k.text("version", d.version)
    if not _K3S_VERSION.match(version):
        r.problems.append(f"{k.key('version')}: '{version}' is not a k3s release; write it like {DEFAULT_K3S_VERSION}")
    release_url = k.text("releaseUrl", d.release_url).rstrip("/")
    install_script_url = k.text("installScriptUrl", d.install_script_url)
    server_url = k.optional_text("serverUrl")
    api_url = k.optional_text("apiUrl")
    for name, value, https in (
        ("releaseUrl", release_url, False),
        ("installScriptUrl", install_script_url, False),
        ("serverUrl", server_url, True),
        ("apiUrl", api_url, True),
    ):
        p = _url_problem(k.key(name), value, https) if value else None
        if p:
            r.problems.append(p)
    sha256: dict[str, str] = {}
    for arch, digest in k.mapping("sha256", "{x86_64: <sha256 hex>}").items():
        if arch not in ARCHES:
            r.problems.append(f"{k.key('sha256')}.{arch}: unknown architecture; use {', '.join(ARCHES)}")
        elif not isinstance(digest, str) or not _HEX256.match(digest.lower()):
            r.problems.append(f"{k.key('sha256')}.{arch}: must be 64 hex digits (a SHA-256 of the k3s binary)")
        else:
            sha256[arch] = digest.lower()
    runsc_config_path = k.text("runscConfigPath", d.runsc_config_path)
    if not runsc_config_path.startswith("/"):
        r.problems.append(f"{k.key('runscConfigPath')}: '{runsc_config_path}' must be an absolute path")
    if cluster == "k3s" and runtime_name in K3S_RUNTIMES:
        r.problems.append(
            f"gvisor-fleet:runtimeName: '{runtime_name}' is a runtime k3s configures itself; "
            "pick another name (the default is runsc)"
        )
    return K3sSettings(
        version=version,
        release_url=release_url,
        install_script_url=install_script_url,
        sha256=sha256,
        server_url=server_url,
        api_url=api_url,
        runsc_config_path=runsc_config_path,
    )


def parse_kube_settings(raw: object, runtime_name: str, problems: list[str]) -> KubeSettings | None:
    """`gvisor-fleet:kubernetes` as KubeSettings, or None when it is off (the default)."""
    if raw is None or raw is False:
        return None
    if raw is True:
        raw = {"enabled": True}
    if not isinstance(raw, Mapping):
        problems.append(f"{KEY}: must be an object, e.g. {{enabled: true, cluster: k3s}}")
        return None
    r = _Reader(cast(Mapping[str, object], raw), "", KNOWN_KEYS, problems)
    enabled = r.raw.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.append(f"{r.key('enabled')}: must be true or false")
        return None
    if not enabled:
        return None

    cluster = r.text("cluster", "existing")
    if cluster not in CLUSTERS:
        problems.append(f"{r.key('cluster')}: '{cluster}' is not supported; use one of {', '.join(CLUSTERS)}")
        cluster = "existing"

    runtime_class_name = r.text("runtimeClassName", DEFAULT_RUNTIME_CLASS)
    if len(runtime_class_name) > 253 or not DNS_SUBDOMAIN.match(runtime_class_name):
        problems.append(
            f"{r.key('runtimeClassName')}: '{runtime_class_name}' must be a lower-case DNS subdomain "
            "(letters, digits, '-' and '.'), e.g. gvisor"
        )
    namespace = r.text("namespace", DEFAULT_NAMESPACE)
    if not DNS_LABEL.match(namespace):
        problems.append(f"{r.key('namespace')}: '{namespace}' must be a lower-case DNS label (letters, digits, '-')")
    elif namespace in ("default", "kube-system", "kube-public", "kube-node-lease"):
        problems.append(
            f"{r.key('namespace')}: '{namespace}' is shared with other workloads; the program labels it "
            "restricted and denies all traffic in it, so give it a namespace of its own"
        )
    if not DNS_LABEL.match(runtime_name):
        problems.append(
            f"gvisor-fleet:runtimeName: '{runtime_name}' cannot be a RuntimeClass handler; "
            "use lower-case letters, digits and '-'"
        )
    node_label = r.text("nodeLabel", DEFAULT_NODE_LABEL)
    p = label_key_problem(r.key("nodeLabel"), node_label)
    if p:
        problems.append(p)

    node_names: dict[str, str] = {}
    for machine, node in r.mapping("nodeNames", "{m1: ip-10-0-0-1.ec2.internal}").items():
        if not isinstance(node, str) or len(node) > 253 or not DNS_SUBDOMAIN.match(node):
            problems.append(f"{r.key('nodeNames')}.{machine}: must be the node's name as `kubectl get nodes` shows it")
        else:
            node_names[str(machine)] = node
    if node_names and cluster == "k3s":
        problems.append(
            f"{r.key('nodeNames')}: k3s nodes are named after their machines; drop nodeNames or use cluster existing"
        )

    sample_image = r.text("sampleImage", DEFAULT_SAMPLE_IMAGE)
    if not _IMAGE.match(sample_image):
        problems.append(
            f"{r.key('sampleImage')}: '{sample_image}' is not an image reference like {DEFAULT_SAMPLE_IMAGE}"
        )
    kernels_raw = r.raw.get("sandboxKernelReleases", list(DEFAULT_SANDBOX_KERNELS))
    kernels: tuple[str, ...] = DEFAULT_SANDBOX_KERNELS
    if not isinstance(kernels_raw, list) or not kernels_raw:
        problems.append(
            f"{r.key('sandboxKernelReleases')}: must be a list of kernel releases or shell patterns, "
            "e.g. ['4.4.0', '*-gvisor']"
        )
    elif not all(isinstance(k, str) and _KERNEL_PATTERN.match(k) for k in kernels_raw):
        problems.append(
            f"{r.key('sandboxKernelReleases')}: {kernels_raw} holds something that is not a kernel release "
            "pattern (letters, digits, '.', '-', '+', '_', '*', '?')"
        )
    else:
        kernels = tuple(kernels_raw)
    timeout = r.raw.get("verifyTimeoutSeconds", 300)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 30 <= timeout <= 3600:
        problems.append(f"{r.key('verifyTimeoutSeconds')}: '{timeout}' must be a whole number from 30 to 3600")
        timeout = 300

    return KubeSettings(
        handler=runtime_name,
        cluster=cast(Cluster, cluster),
        runtime_class_name=runtime_class_name,
        namespace=namespace,
        node_label=node_label,
        node_names=node_names,
        overhead=_overhead(r),
        taint=_taint(r),
        sample_image=sample_image,
        sandbox_kernel_releases=kernels,
        verify_timeout_seconds=timeout,
        k3s=_k3s(r, runtime_name, cluster),
    )


def fleet_problems(kube: KubeSettings, machines: Sequence[MachineSpec], containerd_mode: str) -> list[str]:
    """Problems between the Kubernetes settings and the fleet, one line each.

    A RuntimeClass whose nodeSelector matches no node leaves every sandboxed
    pod Pending forever; this catches the ways that happens before `up`.
    """
    problems: list[str] = []
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
            problems.append(f"{_key('nodeNames')}.{machine}: no machine of that name in gvisor-fleet:machines")
    nodes = [kube.node_name(m.name) for m in machines]
    for node in sorted({n for n in nodes if nodes.count(n) > 1}):
        problems.append(f"{_key('nodeNames')}: node '{node}' is given to more than one machine")
    if kube.cluster == "existing" and containerd_mode == "off":
        problems.append(
            f"gvisor-fleet:containerd: 'off' leaves the nodes' containerd without the '{kube.handler}' runtime, "
            f"so no node could run RuntimeClass '{kube.runtime_class_name}'; set it to auto or required"
        )
    loopback = ("127.0.0.1", "localhost", "::1")
    if kube.cluster == "k3s" and len(machines) > 1 and not kube.k3s.server_url and machines[0].address in loopback:
        problems.append(
            f"{_key('k3s.serverUrl')}: machine '{machines[0].name}' (the k3s server) is reached at "
            f"{machines[0].address}, which other machines cannot dial; set the URL agents use to join"
        )
    return problems
