"""Every manifest the program produces: its rules, and the official Kubernetes JSON schema.

The schemas come from the `kubernetes-validate` package (generated from the
Kubernetes OpenAPI documents), read offline; "strict" schemas also reject
fields Kubernetes does not know, so a typo fails here, not in the cluster.
"""

from __future__ import annotations

import itertools
from typing import Any

import kubernetes_validate
import pytest

from components.kube.manifests import (
    VERIFY_SCRIPT,
    cluster_manifests,
    job_result,
    kube_arches,
    node_label_patch,
    node_label_value,
    node_verified,
    runtime_class,
    runtime_fingerprint,
    sample_pod,
    verify_job,
    workload_account,
)
from components.kube.settings import KubeSettings, Taint, parse_kube_settings

# The newest Kubernetes the package ships schemas for, and the one the
# default k3s release runs.
KUBE_VERSIONS = ("1.37.0", "1.36.0")
ARCHES = ("x86_64", "aarch64")


def kube(**raw: object) -> KubeSettings:
    problems: list[str] = []
    s = parse_kube_settings({"enabled": True, **raw}, "runsc", problems)
    assert problems == [] and s is not None
    return s


VARIANTS = {
    "defaults": kube(),
    "k3s-taint-no-overhead": kube(
        cluster="k3s",
        overhead=False,
        taint={"key": "sandbox.gke.io/runtime", "value": "gvisor", "effect": "NoSchedule"},
        runtimeClassName="gvisor.sandbox",
        namespace="untrusted",
        nodeLabel="example.com/gvisor",
    ),
}


def all_manifests() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for variant, s in VARIANTS.items():
        for m in cluster_manifests(s, ARCHES):
            out.append((f"{variant}:{m['kind']}/{m['metadata']['name']}", m))
        job = verify_job(s, "aarch64", runtime_fingerprint([{"release": "20261116.0"}]))
        out.append((f"{variant}:Job/fingerprinted", job))
        for verified in (True, False):
            out.append((f"{variant}:Node/m1-{verified}", node_label_patch(s, "m1", node_label_value(verified))))
    return out


MANIFESTS = all_manifests()


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize(("name", "manifest"), MANIFESTS, ids=[n for n, _ in MANIFESTS])
def test_manifest_matches_the_kubernetes_schema(name, manifest, version):
    # Node label patches are partial objects by nature: strict still rejects unknown fields.
    kubernetes_validate.validate(manifest, version, strict=True)


def test_the_schema_check_catches_mistakes():
    bad = sample_pod(kube(), "x86_64")
    bad["spec"]["containers"][0]["securityContext"]["runAsNonroot"] = True  # typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBE_VERSIONS[0], strict=True)
    rc = runtime_class(kube())
    rc["scheduling"]["nodeSelector"] = ["not", "a", "map"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(rc, KUBE_VERSIONS[0], strict=True)


def test_every_kind_the_program_makes_is_covered():
    kinds = {m["kind"] for _, m in MANIFESTS}
    assert kinds == {"RuntimeClass", "Namespace", "ServiceAccount", "NetworkPolicy", "Pod", "Job", "Node"}


def test_runtime_class_handler_selector_and_overhead():
    rc = runtime_class(kube())
    assert rc["handler"] == "runsc"
    assert rc["metadata"]["name"] == "gvisor"
    assert rc["scheduling"] == {"nodeSelector": {"gvisor-fleet/gvisor": "verified"}}
    assert rc["overhead"] == {"podFixed": {"cpu": "100m", "memory": "64Mi"}}


def test_runtime_class_tolerates_the_sandbox_taint_and_can_skip_overhead():
    s = VARIANTS["k3s-taint-no-overhead"]
    rc = runtime_class(s)
    assert "overhead" not in rc
    assert rc["scheduling"]["tolerations"] == [
        {"key": "sandbox.gke.io/runtime", "operator": "Equal", "value": "gvisor", "effect": "NoSchedule"}
    ]
    assert rc["scheduling"]["nodeSelector"] == {"example.com/gvisor": "verified"}


def test_handler_follows_the_runtime_name():
    problems: list[str] = []
    s = parse_kube_settings({}, "gvisor", problems)
    assert s is not None
    assert runtime_class(s)["handler"] == "gvisor"


def test_namespace_enforces_restricted_and_denies_all_traffic():
    s = kube()
    ns, _, policy = cluster_manifests(s, ARCHES)[1:4]
    labels = ns["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    assert policy["metadata"]["namespace"] == s.namespace
    assert policy["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_sandboxed_pods_run_as_an_account_the_program_makes_before_them_with_no_token():
    # Not `default`: the controller manager makes it after the namespace, and a pod created before is refused.
    s = kube()
    account = workload_account(s)
    assert (account["metadata"]["name"], account["metadata"]["namespace"]) == ("gvisor-workload", s.namespace)
    assert account["automountServiceAccountToken"] is False
    for arch in ARCHES:
        for spec in pod_specs(s, arch):
            assert spec["serviceAccountName"] == "gvisor-workload" and spec["automountServiceAccountToken"] is False


def pod_specs(s: KubeSettings, arch: str) -> list[dict[str, Any]]:
    return [sample_pod(s, arch)["spec"], verify_job(s, arch)["spec"]["template"]["spec"]]


@pytest.mark.parametrize(("arch", "goarch"), [("x86_64", "amd64"), ("aarch64", "arm64")])
def test_one_pod_and_job_per_architecture_pinned_to_it(arch, goarch):
    s = kube()
    assert sample_pod(s, arch)["metadata"]["name"] == f"gvisor-sample-{goarch}"
    assert verify_job(s, arch)["metadata"]["name"] == f"gvisor-verify-{goarch}"
    for spec in pod_specs(s, arch):
        assert spec["nodeSelector"] == {"kubernetes.io/arch": goarch}
        assert spec["runtimeClassName"] == "gvisor"


def test_only_the_fleets_architectures_get_workloads():
    s = kube()
    names = [m["metadata"]["name"] for m in cluster_manifests(s, ["aarch64", "aarch64"])]
    assert names == [
        "gvisor", "gvisor-sandbox", "gvisor-workload", "default-deny-all", "gvisor-sample-arm64", "gvisor-verify-arm64"
    ]  # fmt: skip
    assert kube_arches(["x86_64", "aarch64", "x86_64"]) == ["amd64", "arm64"]
    with pytest.raises(ValueError, match="x86_64 or aarch64"):
        kube_arches(["riscv64"])


@pytest.mark.parametrize(("arch", "which"), list(itertools.product(ARCHES, (0, 1))))
def test_pods_meet_the_restricted_profile(arch, which):
    spec = pod_specs(kube(), arch)[which]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert "hostNetwork" not in spec and "hostPID" not in spec and "volumes" not in spec
    for c in spec["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["privileged"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert sc["readOnlyRootFilesystem"] is True
        assert set(c["resources"]) == {"requests", "limits"}
        assert set(c["resources"]["requests"]) == set(c["resources"]["limits"]) == {"cpu", "memory"}


def test_verification_job_fails_fast_and_is_bounded():
    s = kube(verifyTimeoutSeconds=120, sandboxKernelReleases=["4.4.0", "*-gvisor"])
    job = verify_job(s, "x86_64")
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 120
    assert job["metadata"]["annotations"]["pulumi.com/timeoutSeconds"] == "180"
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["command"] == ["sh", "-c", VERIFY_SCRIPT]
    assert container["env"] == [{"name": "EXPECTED_KERNEL_RELEASES", "value": "4.4.0 *-gvisor"}]
    assert "Starting gVisor" in VERIFY_SCRIPT and "uname -r" in VERIFY_SCRIPT


def test_taint_type_is_plain_data():
    assert Taint("k", "v", "NoSchedule") == Taint("k", "v", "NoSchedule")


@pytest.mark.parametrize(
    ("facts", "cluster", "ok"),
    [
        ({"runsc_ok": "true", "containerd_ok": "true"}, "existing", True),
        ({"runsc_ok": "true", "containerd_ok": "skipped"}, "existing", False),
        ({"runsc_ok": "false", "containerd_ok": "true"}, "existing", False),
        ({"runsc_ok": "true", "containerd_ok": "skipped", "k3s_runtime_ok": "true"}, "k3s", True),
        ({"runsc_ok": "true", "containerd_ok": "true"}, "k3s", False),
        ({}, "existing", False),
    ],
)
def test_node_is_labelled_only_when_its_runtime_was_verified(facts, cluster, ok):
    assert node_verified(facts, cluster) is ok
    assert node_label_value(ok) == ("verified" if ok else "unverified")


def test_job_result_reads_the_job_status():
    done = {
        "succeeded": 1,
        "completionTime": "2026-11-28T10:00:00Z",
        "conditions": [{"type": "Complete", "status": "True"}],
    }
    assert job_result(done) == {"passed": True, "completed": "2026-11-28T10:00:00Z"}
    failed = {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}
    assert job_result(failed) == {"passed": False, "reason": "BackoffLimitExceeded"}
    assert job_result(None) == {"passed": False}


def test_runtime_fingerprint_changes_only_with_the_builds():
    a = {"release": "20261116.0", "runsc_version": "release-20261116.0", "changed": "true", "arch": "x86_64"}
    b = {"release": "20261109.0", "runsc_version": "release-20261109.0"}
    assert runtime_fingerprint([a, b]) == runtime_fingerprint([b, {**a, "changed": "false"}])
    assert runtime_fingerprint([a, b]) != runtime_fingerprint([a, {**b, "release": "20261116.0"}])
    assert runtime_fingerprint([a]) != runtime_fingerprint([{**a, "k3s_version": "v1.36.4+k3s1"}])
    job = verify_job(kube(), "x86_64", "abc")
    assert job["spec"]["template"]["metadata"]["annotations"] == {"gvisor-fleet/runtime": "abc"}
    assert "annotations" not in verify_job(kube(), "x86_64")["spec"]["template"]["metadata"]
