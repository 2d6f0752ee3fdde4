"""Every Kubernetes object the program makes, as plain dicts from pure functions.

The component only hands these to typed pulumi_kubernetes resources, so the
unit tests can check each manifest, and validate it against the Kubernetes
JSON schema, without a cluster.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from components.kube.settings import NODE_LABEL_VALUE, KubeSettings

Manifest = dict[str, Any]

# `uname -m` (what the host layer and the machine list use) -> GOARCH, the
# value of the kubernetes.io/arch node label.
KUBE_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
NOBODY = 65534
NODE_LABEL_UNVERIFIED = "unverified"
WORKLOAD_ACCOUNT = "gvisor-workload"

# Sample and verification containers are tiny: busybox sleeping or printing.
CONTAINER_RESOURCES = {
    "requests": {"cpu": "10m", "memory": "16Mi"},
    "limits": {"cpu": "100m", "memory": "32Mi"},
}

# Runs inside the verification pod. Fails unless the kernel answering is
# gVisor's: its release is one gVisor reports (EXPECTED_KERNEL_RELEASES, shell
# patterns) and its boot log opens with gVisor's banner. Both can be read
# without any privilege under gVisor.
VERIFY_SCRIPT = """\
set -uf
release=$(uname -r)
log=$(dmesg 2>/dev/null || true)
banner=$(printf '%s\\n' "$log" | head -n 1)
echo "kernel_release=$release"
echo "boot_banner=$banner"
ok=true
known=false
for pattern in $EXPECTED_KERNEL_RELEASES; do
  # shellcheck disable=SC2254 # a pattern, on purpose
  case $release in $pattern) known=true ;; esac
done
if [ "$known" != true ]; then
  echo "FAIL: kernel release is '$release', none of gVisor's ($EXPECTED_KERNEL_RELEASES)"
  ok=false
fi
case $log in
  *"Starting gVisor"*) ;;
  *) echo "FAIL: the boot log has no 'Starting gVisor' banner"; ok=false ;;
esac
if [ "$ok" != true ]; then
  echo "gvisor_verified=false"
  exit 1
fi
echo "gvisor_verified=true"
"""

SAMPLE_SCRIPT = """\
echo "kernel_release=$(uname -r)"
dmesg 2>/dev/null | head -n 1
trap 'exit 0' TERM INT
while :; do sleep 3600 & wait $!; done
"""


def kube_arch(arch: str) -> str:
    try:
        return KUBE_ARCH[arch]
    except KeyError:
        raise ValueError(f"no Kubernetes architecture for '{arch}'; machines must be x86_64 or aarch64") from None


def kube_arches(arches: Iterable[str]) -> list[str]:
    """Distinct kubernetes.io/arch values for the fleet's `uname -m` list, sorted."""
    return sorted({kube_arch(a) for a in arches})


def labels(component: str, **extra: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "gvisor-fleet",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "pulumi",
        **extra,
    }


def runtime_class(s: KubeSettings) -> Manifest:
    """The RuntimeClass: handler = the containerd runtime the host layer wrote."""
    scheduling: dict[str, Any] = {"nodeSelector": {s.node_label: NODE_LABEL_VALUE}}
    if s.taint:
        scheduling["tolerations"] = [
            {"key": s.taint.key, "operator": "Equal", "value": s.taint.value, "effect": s.taint.effect}
        ]
    rc: Manifest = {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": s.runtime_class_name, "labels": labels("runtime-class")},
        "handler": s.handler,
        "scheduling": scheduling,
    }
    if s.overhead:
        rc["overhead"] = {"podFixed": dict(s.overhead)}
    return rc


def namespace(s: KubeSettings) -> Manifest:
    """A namespace where Pod Security Admission enforces the restricted profile."""
    psa = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")} | {
        f"pod-security.kubernetes.io/{mode}-version": "latest" for mode in ("enforce", "audit", "warn")
    }
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": s.namespace, "labels": labels("sandbox-namespace") | psa},
    }


def workload_account(s: KubeSettings) -> Manifest:
    """The sandboxed pods' own service account, with no token.

    A pod naming no account gets `default`, which the controller manager makes
    some time after the namespace: a pod created before that is refused. This
    one exists before any pod, and the program creates it.
    """
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": WORKLOAD_ACCOUNT, "namespace": s.namespace, "labels": labels("workload-account")},
        "automountServiceAccountToken": False,
    }


def default_deny(s: KubeSettings) -> Manifest:
    """No traffic in or out of any pod in the namespace unless another policy allows it."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny-all", "namespace": s.namespace, "labels": labels("network-policy")},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }


def container_security() -> dict[str, Any]:
    """What the restricted profile demands, and a read-only root on top."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": NOBODY,
        "runAsGroup": NOBODY,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_spec(s: KubeSettings, arch: str, container: Manifest, restart: str) -> Manifest:
    return {
        "runtimeClassName": s.runtime_class_name,
        "nodeSelector": {"kubernetes.io/arch": kube_arch(arch)},
        "restartPolicy": restart,
        "serviceAccountName": WORKLOAD_ACCOUNT,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 5,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": NOBODY,
            "runAsGroup": NOBODY,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                **container,
                "image": s.sample_image,
                "imagePullPolicy": "IfNotPresent",
                "resources": {k: dict(v) for k, v in CONTAINER_RESOURCES.items()},
                "securityContext": container_security(),
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
    }


def sample_pod_name(arch: str) -> str:
    return f"gvisor-sample-{kube_arch(arch)}"


def verify_job_name(arch: str) -> str:
    return f"gvisor-verify-{kube_arch(arch)}"


def sample_pod(s: KubeSettings, arch: str) -> Manifest:
    """A long-running sandboxed pod on one architecture; its log shows the sandbox kernel."""
    ka = kube_arch(arch)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": sample_pod_name(arch),
            "namespace": s.namespace,
            "labels": labels("sample", **{"gvisor-fleet/arch": ka}),
            # No verified node of this architecture leaves it Pending: fail within the same bound as the Job.
            "annotations": {"pulumi.com/timeoutSeconds": str(s.verify_timeout_seconds + 60)},
        },
        "spec": pod_spec(s, arch, {"name": "sample", "command": ["sh", "-c", SAMPLE_SCRIPT]}, "Always"),
    }


def runtime_fingerprint(node_facts: Iterable[Mapping[str, str]]) -> str:
    """A short digest of the gVisor (and k3s) builds on some nodes.

    Stable across runs that change nothing, different after an upgrade, so a
    Job carrying it in its pod template is replaced, and so re-run, then.
    """
    keys = ("release", "runsc_version", "k3s_version", "k3s_template")
    rows = sorted(json.dumps([f.get(k, "") for k in keys]) for f in node_facts)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def verify_job(s: KubeSettings, arch: str, fingerprint: Any = None) -> Manifest:
    """A Job that succeeds only if its pod, on this architecture, runs under gVisor.

    `fingerprint` (see runtime_fingerprint) goes into the pod template, which
    Kubernetes cannot change in place: a new value re-runs the verification.
    """
    ka = kube_arch(arch)
    container = {
        "name": "verify",
        "command": ["sh", "-c", VERIFY_SCRIPT],
        "env": [{"name": "EXPECTED_KERNEL_RELEASES", "value": " ".join(s.sandbox_kernel_releases)}],
    }
    pod_labels = labels("verification", **{"gvisor-fleet/arch": ka})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": verify_job_name(arch),
            "namespace": s.namespace,
            "labels": pod_labels,
            # Pulumi waits for the Job to complete; give up shortly after Kubernetes does.
            "annotations": {"pulumi.com/timeoutSeconds": str(s.verify_timeout_seconds + 60)},
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": s.verify_timeout_seconds,
            "template": {
                "metadata": {"labels": pod_labels}
                | ({"annotations": {"gvisor-fleet/runtime": fingerprint}} if fingerprint is not None else {}),
                "spec": pod_spec(s, arch, container, "Never"),
            },
        },
    }


def node_label_value(verified: bool) -> str:
    return NODE_LABEL_VALUE if verified else NODE_LABEL_UNVERIFIED


def node_label_patch(s: KubeSettings, node: str, value: Any) -> Manifest:
    """The label the RuntimeClass selects on, for one node (value: see node_label_value)."""
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": {s.node_label: value}}}


def node_verified(facts: Mapping[str, str], cluster: str) -> bool:
    """True when a node's container runtime can start gVisor pods.

    runsc must work on the host. On an existing cluster the node's containerd
    must have run a gVisor container (the host layer's check; "skipped"
    means there was no containerd to wire). On k3s its own containerd must
    have loaded the runtime from the config template.
    """
    if facts.get("runsc_ok") != "true":
        return False
    if cluster == "k3s":
        return facts.get("k3s_runtime_ok") == "true"
    return facts.get("containerd_ok") == "true"


def cluster_manifests(s: KubeSettings, arches: Iterable[str]) -> list[Manifest]:
    """Every manifest applied to the cluster, in dependency order."""
    arch_list = sorted(set(arches))
    return [
        runtime_class(s),
        namespace(s),
        workload_account(s),
        default_deny(s),
        *[sample_pod(s, a) for a in arch_list],
        *[verify_job(s, a) for a in arch_list],
    ]


def job_result(status: Mapping[str, Any] | None) -> dict[str, Any]:
    """A verification Job's outcome from its status, for the stack output.

    Takes the status as the API returns it (camelCase) or as the Pulumi SDK
    hands it over (its output type, snake_case keys).
    """
    status = status or {}

    def get(camel: str, snake: str) -> Any:
        return status.get(camel, status.get(snake))

    conditions = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, Mapping)}
    complete = conditions.get("Complete", {}).get("status") == "True"
    failed = conditions.get("Failed", {})
    passed = complete or int(status.get("succeeded") or 0) > 0
    result: dict[str, Any] = {"passed": passed}
    completed = get("completionTime", "completion_time")
    if completed:
        result["completed"] = completed
    if not passed and failed.get("status") == "True":
        result["reason"] = failed.get("reason") or "Failed"
    return result
