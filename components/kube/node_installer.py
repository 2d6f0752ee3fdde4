"""The in-cluster node installer (kubernetes.nodeInstaller), as plain manifests.

For clusters whose nodes the program cannot reach over SSH. A privileged
DaemonSet runs, on every node and on every node that joins later, the host
agent the SSH path runs (components/gvisor/scripts/gvisor-host.sh, carried in
a ConfigMap and checked against its hash) in the node's own namespaces, with
the SSH path's own arguments: preflight and install, the containerd merge,
verify. Only a node whose verify passed gets the label the RuntimeClass
selects (and the release); a node that fails stays unlabelled and says why in
its pod's log, an Event and an annotation. The agent runs in the node's
mount namespace, so it reaches every containerd layout it handles
(/etc/containerd, k3s's and RKE2's /var/lib/rancher and /run/k3s) with no
hostPath volume of its own.

A second DaemonSet puts the nodes back: its pods only sleep, and when their
DaemonSet is deleted (destroy, or the installer turned off) each runs the
agent's restore steps (containerd-restore, uninstall) and removes the labels
before it goes. The program deletes it before the installer and waits for it
(see deploy.py); a pod replaced by an update, evicted or restarted restores
nothing, since its DaemonSet is not being deleted.

The service account may patch nodes, but a ValidatingAdmissionPolicy lets it
change only its own node (the node name bound into its pod's token,
Kubernetes 1.30+) and only this project's labels and annotations.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
from functools import cache
from pathlib import Path
from typing import Any

from pulumi_command import remote

from components.fleet.machine import Machine
from components.gvisor.agent import agent_script, agent_sha256
from components.gvisor.host import host_commands
from components.gvisor.settings import GvisorSettings
from components.kube.manifests import Manifest, labels
from components.kube.settings import NODE_LABEL_VALUE, InstallerSettings, KubeSettings

SCRIPT_PATH = Path(__file__).parent / "scripts" / "node-installer.sh"
NAME = "gvisor-fleet-node-installer"
CLEANUP_NAME = "gvisor-fleet-node-cleanup"
RELEASE_LABEL = "gvisor-fleet/release"
STATE_ANNOTATION = "gvisor-fleet/install-state"
REASON_ANNOTATION = "gvisor-fleet/install-reason"
# Events about a node (cluster-scoped) must be in `default` (the API server's rule).
EVENT_NAMESPACE = "default"
# Where the service-account token of a pod names the pod's node (Kubernetes 1.30+).
NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"
CONFIG_DIR = "/etc/gvisor-fleet"
NODE_DIR = "/run/gvisor-fleet/installer"
POD_DIR = "/node-run"
READY_FILE = "/tmp/gvisor-fleet-verified"
# The node's usual command path: nsenter runs the agent with the pod's PATH.
NODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Ample for the agent's restore steps (each bounded by stepTimeout) and a containerd restart.
CLEANUP_GRACE_SECONDS = 600


@cache
def installer_script() -> str:
    return SCRIPT_PATH.read_text()


def node_gvisor(gv: GvisorSettings) -> GvisorSettings:
    """The gVisor settings as they apply to a Kubernetes node: its pods run through containerd only."""
    return dataclasses.replace(gv, docker="off", containerd="required", default_runtime=False)


def _agent_lines(gv: GvisorSettings, arch: str) -> dict[str, tuple[str, str | None]]:
    """The SSH path's own step lines (host.py) for a root login on a node of `arch`."""
    node = Machine(name="node", arch=arch, user="root", connection=remote.ConnectionArgs(host="node"))
    return host_commands(node, node_gvisor(gv))


def _agent_args(line: str) -> str:
    """`sh <copy> [options] sub args` -> the words after the file, as one quoted line."""
    words = shlex.split(line)
    assert words[0] == "sh", line
    return shlex.join(words[2:])


def install_steps(gv: GvisorSettings, arch: str) -> list[str]:
    """What the installer runs on a node, in order: the SSH path's create lines, Docker left out."""
    lines = _agent_lines(gv, arch)
    return [_agent_args(lines[step][0]) for step in ("install", "containerd", "verify")]


def restore_steps(gv: GvisorSettings) -> list[str]:
    """What the cleanup runs on a node: the SSH path's delete lines, in destroy order."""
    lines = _agent_lines(gv, "x86_64")
    return [_agent_args(str(lines[step][1])) for step in ("containerd", "install")]


def config_data(s: KubeSettings, gv: GvisorSettings) -> dict[str, str]:
    """The ConfigMap's files: the agent, the pod's entry script, the steps per architecture."""
    inst = _installer(s)
    data = {"gvisor-host.sh": agent_script(), "node-installer.sh": installer_script()}
    for arch in sorted(set(inst.arches) | {"x86_64", "aarch64"}):
        data[f"steps-{arch}"] = "".join(f"{line}\n" for line in install_steps(gv, arch))
    data["restore"] = "".join(f"{line}\n" for line in restore_steps(gv))
    return data


def config_digest(data: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _installer(s: KubeSettings) -> InstallerSettings:
    if s.node_installer is None:
        raise ValueError("kubernetes.nodeInstaller is off")
    return s.node_installer


def service_account_user(s: KubeSettings) -> str:
    return f"system:serviceaccount:{_installer(s).namespace}:{NAME}"


def own_labels(s: KubeSettings) -> list[str]:
    return [s.node_label, RELEASE_LABEL]


def own_annotations() -> list[str]:
    return [STATE_ANNOTATION, REASON_ANNOTATION]


def installer_namespace(s: KubeSettings) -> Manifest:
    """The installer's own namespace: Pod Security allows privileged pods here, and only here."""
    psa = {f"pod-security.kubernetes.io/{mode}": "privileged" for mode in ("enforce", "audit", "warn")}
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": _installer(s).namespace, "labels": labels("installer-namespace") | psa},
    }


def service_account(s: KubeSettings) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": NAME, "namespace": _installer(s).namespace, "labels": labels("node-installer")},
    }


def cluster_role(s: KubeSettings) -> Manifest:
    """Read and patch nodes; the admission policy narrows the patch to its own node and our keys."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": NAME, "labels": labels("node-installer")},
        "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}],
    }


def cluster_role_binding(s: KubeSettings) -> Manifest:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": NAME, "labels": labels("node-installer")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
        "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": _installer(s).namespace}],
    }


def role(s: KubeSettings) -> Manifest:
    """In its namespace: read whether the cleanup DaemonSet is being deleted, nothing else."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": NAME, "namespace": _installer(s).namespace, "labels": labels("node-installer")},
        "rules": [
            {"apiGroups": ["apps"], "resources": ["daemonsets"], "resourceNames": [CLEANUP_NAME], "verbs": ["get"]},
        ],
    }


def event_role(s: KubeSettings) -> Manifest:
    """Create Events in `default`: the API server keeps an Event about a node (cluster-scoped) only there."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": NAME, "namespace": EVENT_NAMESPACE, "labels": labels("node-installer")},
        "rules": [{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}],
    }


def role_binding(s: KubeSettings, namespace: str | None = None) -> Manifest:
    """The service account's Role in its own namespace (or, given, in `namespace`)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": NAME,
            "namespace": namespace or _installer(s).namespace,
            "labels": labels("node-installer"),
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
        "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": _installer(s).namespace}],
    }


def _cel_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def _keys_kept(field: str) -> str:
    """CEL: every key of metadata.<field> outside variables.<field>Ours is unchanged, none added or removed."""
    old, new, ours = f"variables.old_{field}", f"variables.new_{field}", f"variables.own_{field}"
    return (
        f"{old}.all(k, k in {ours} || (k in {new} && {new}[k] == {old}[k])) && {new}.all(k, k in {ours} || k in {old})"
    )


def admission_policy(s: KubeSettings) -> Manifest:
    """Node updates by the installer: its own node only, this project's labels and annotations only."""
    extra = json.dumps(NODE_NAME_EXTRA)
    variables = [
        {
            "name": "node_name",
            "expression": f"has(request.userInfo.extra) && {extra} in request.userInfo.extra && "
            f"size(request.userInfo.extra[{extra}]) > 0 ? request.userInfo.extra[{extra}][0] : ''",
        },
        {"name": "own_labels", "expression": _cel_list(own_labels(s))},
        {"name": "own_annotations", "expression": _cel_list(own_annotations())},
    ]
    for field in ("labels", "annotations"):
        for side, obj in (("old", "oldObject"), ("new", "object")):
            variables.append(
                {
                    "name": f"{side}_{field}",
                    "expression": f"has({obj}.metadata.{field}) ? {obj}.metadata.{field} : {{}}",
                }
            )
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": NAME, "labels": labels("node-installer")},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["*"],
                        # RBAC grants nothing else (no create, delete or status).
                        "operations": ["UPDATE"],
                        "resources": ["nodes"],
                    }
                ]
            },
            "matchConditions": [
                {
                    "name": "the-node-installer",
                    "expression": f"request.userInfo.username == {json.dumps(service_account_user(s))}",
                }
            ],
            "variables": variables,
            "validations": [
                {
                    "expression": "variables.node_name != '' && variables.node_name == object.metadata.name",
                    "messageExpression": "'the gVisor node installer may change only its own node (' + "
                    "variables.node_name + '), not ' + object.metadata.name",
                    "reason": "Forbidden",
                },
                {
                    "expression": _keys_kept("labels"),
                    "message": f"the gVisor node installer may change only the labels {', '.join(own_labels(s))}",
                    "reason": "Forbidden",
                },
                {
                    "expression": _keys_kept("annotations"),
                    "message": "the gVisor node installer may change only the annotations "
                    + ", ".join(own_annotations()),
                    "reason": "Forbidden",
                },
                {
                    "expression": "object.spec == oldObject.spec",
                    "message": "the gVisor node installer may not change a node's spec",
                    "reason": "Forbidden",
                },
            ],
        },
    }


def admission_policy_binding(s: KubeSettings) -> Manifest:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": NAME, "labels": labels("node-installer")},
        "spec": {"policyName": NAME, "validationActions": ["Deny"]},
    }


def config_map(s: KubeSettings, gv: GvisorSettings) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": NAME, "namespace": _installer(s).namespace, "labels": labels("node-installer")},
        "data": config_data(s, gv),
    }


def _env(s: KubeSettings, gv: GvisorSettings) -> list[dict[str, Any]]:
    def field_ref(name: str, path: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}

    plain = {
        "AGENT_SHA256": agent_sha256(),
        "NODE_LABEL": s.node_label,
        "RELEASE_LABEL": RELEASE_LABEL,
        "RELEASE": gv.release,
        "STATE_ANNOTATION": STATE_ANNOTATION,
        "REASON_ANNOTATION": REASON_ANNOTATION,
        "HANDLER": s.handler,
        "CLEANUP_DAEMONSET": CLEANUP_NAME,
        "EVENT_NAMESPACE": EVENT_NAMESPACE,
        "PATH": NODE_PATH,
    }
    return [
        field_ref("NODE_NAME", "spec.nodeName"),
        field_ref("POD_NAMESPACE", "metadata.namespace"),
        *({"name": k, "value": v} for k, v in plain.items()),
    ]


def daemonset(s: KubeSettings, gv: GvisorSettings, cleanup: bool = False) -> Manifest:
    """The installer DaemonSet (or, with `cleanup`, the one that puts nodes back when deleted)."""
    inst = _installer(s)
    name, component, mode = (
        (CLEANUP_NAME, "node-cleanup", "cleanup") if cleanup else (NAME, "node-installer", "install")
    )
    pod_labels = labels(component)
    container: dict[str, Any] = {
        "name": mode,
        "image": inst.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", f"{CONFIG_DIR}/node-installer.sh", mode],
        "env": _env(s, gv),
        "securityContext": {"privileged": True},
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "512Mi"}},
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "node-run", "mountPath": POD_DIR},
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if not cleanup:
        # Ready only once verified: a rollout (maxUnavailable 1) stops at a node that fails.
        container["readinessProbe"] = {"exec": {"command": ["cat", READY_FILE]}, "periodSeconds": 10}
    # The cleanup pods only sleep, and restore nothing when merely replaced
    # (their DaemonSet is not being deleted): they roll all at once. The
    # installer rolls one node at a time.
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%" if cleanup else 1}}
    data = config_data(s, gv)
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": name,
            "namespace": inst.namespace,
            "labels": pod_labels,
            # Nodes come and go, and one that fails says so itself: `up` does not wait for all of them.
            **({} if cleanup else {"annotations": {"pulumi.com/skipAwait": "true"}}),
        },
        "spec": {
            "selector": {
                "matchLabels": {"app.kubernetes.io/name": "gvisor-fleet", "app.kubernetes.io/component": component}
            },
            "updateStrategy": strategy,
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    # A changed agent, step or setting rolls the pods (the ConfigMap alone would not).
                    "annotations": {"gvisor-fleet/config": config_digest(data)},
                },
                "spec": {
                    "serviceAccountName": NAME,
                    "automountServiceAccountToken": True,
                    "hostPID": True,
                    "hostNetwork": True,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    # Every node, tainted or not: it is where sandboxes may run.
                    "tolerations": [{"operator": "Exists"}],
                    "terminationGracePeriodSeconds": CLEANUP_GRACE_SECONDS if cleanup else 30,
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": NAME, "defaultMode": 0o444}},
                        {"name": "node-run", "hostPath": {"path": NODE_DIR, "type": "DirectoryOrCreate"}},
                    ],
                },
            },
        },
    }


def installer_manifests(s: KubeSettings, gv: GvisorSettings) -> list[Manifest]:
    """Every object of the node installer, in dependency order."""
    return [
        installer_namespace(s),
        service_account(s),
        cluster_role(s),
        cluster_role_binding(s),
        role(s),
        role_binding(s),
        event_role(s),
        role_binding(s, EVENT_NAMESPACE),
        admission_policy(s),
        admission_policy_binding(s),
        config_map(s, gv),
        daemonset(s, gv),
        daemonset(s, gv, cleanup=True),
    ]


def verified_selector(s: KubeSettings) -> dict[str, str]:
    """What the RuntimeClass selects: the label the installer sets after verify."""
    return {s.node_label: NODE_LABEL_VALUE}
