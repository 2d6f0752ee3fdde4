"""Objects the cluster tests and the Kubernetes benchmark apply: a pod that prints the kernel it
runs on (uname -r, then the boot banner), under a RuntimeClass or without one."""

from __future__ import annotations

import json
from typing import Any

from tests.cluster.node import SAMPLE_IMAGE, Cluster

PROBE = "uname -r; dmesg 2>/dev/null | head -n 1; sleep 3600"


def runtime_class(name: str, handler: str) -> dict[str, Any]:
    return {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": name}, "handler": handler}


def probe_pod(name: str, runtime_class_name: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 1,
        "automountServiceAccountToken": False,
        "containers": [{"name": "probe", "image": SAMPLE_IMAGE, "imagePullPolicy": "Never",
                        "command": ["sh", "-c", PROBE]}],
    }  # fmt: skip
    if runtime_class_name:
        spec["runtimeClassName"] = runtime_class_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def apply(cluster: Cluster, *objects: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))
