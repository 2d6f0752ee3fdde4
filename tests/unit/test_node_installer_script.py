"""The installer pod's entry script (node-installer.sh), run here with stand-ins.

Stand-ins, named as such: `kubectl` records every call and answers from the
test's table; `nsenter` runs its command here; the agent is a stub that
prints facts or fails at a given step (the real agent's hash check and steps
run in the cluster tier, tests/cluster/test_node_installer.py). What is real:
the script, its hash check, its reading of the steps, and what it tells the
API server for each outcome.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.kube import node_installer as plan

STUB_AGENT = """\
# stand-in for the host agent: FAIL_AT names the subcommand that fails
sub=$1
[ "$sub" = preflight ] && sub=$6
echo "ran=$sub $*" >> "$RAN"
# a step that reads its stdin (curl, ctr may): the steps after it must still run
[ "$sub" = install ] && cat > /dev/null
if [ "$sub" = "${FAIL_AT:-}" ]; then
  echo "gvisor-host: ERROR: $sub broke on purpose${ADVICE:-}" >&2
  exit 1
fi
case $sub in
  verify) echo runsc_ok=true; echo "containerd_ok=${CONTAINERD_OK:-true}"; echo runsc_version=test ;;
esac
"""
FAKE_NSENTER = """#!/bin/sh
while [ "$1" != "--" ]; do shift; done
shift
exec "$@"
"""
# Answers: `get node` (GKE label / install-state / uid), `get daemonset` (its
# deletionTimestamp, or NotFound); every call and stdin recorded as JSON lines.
FAKE_KUBECTL = """#!/bin/sh
stdin=""
case "$*" in *"-f -"*) stdin=$(tr "\\n" " ") ;; esac
printf '%s\\n' "$(printf '%s\\n' "$@" | tr '\\n' '\\t')|$stdin" >> "$CALLS"
case "$*" in
  "get daemonset"*)
    if [ "${DS_STATE:-}" = gone ]; then echo 'Error from server (NotFound): daemonsets not found' >&2; exit 1; fi
    printf '%s' "${DS_STATE:-}" ;;
  *"sandbox\\.gke\\.io/runtime"*) printf '%s' "${GKE:-}" ;;
  *"install-state"*) printf '%s' "${INSTALL_STATE:-}" ;;
  *"metadata.uid"*) printf 'uid-1' ;;
  *"containerRuntimeVersion"*) printf '%s' "${RUNTIME_VERSION:-containerd://2.1.4}" ;;
esac
"""


@dataclass
class Pod:
    root: Path
    env: dict[str, str]

    def calls(self) -> list[tuple[list[str], str]]:
        path = self.root / "calls"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            args, _, stdin = line.partition("|")
            out.append((args.rstrip("\t").split("\t"), stdin))
        return out

    def patches(self) -> list[dict[str, object]]:
        return [json.loads(args[args.index("-p") + 1]) for args, _ in self.calls() if args[0] == "patch"]

    def events(self) -> list[dict[str, object]]:
        return [json.loads(stdin) for args, stdin in self.calls() if args[:1] == ["create"]]

    def ran(self) -> list[str]:
        path = self.root / "ran"
        return [line.split()[0].removeprefix("ran=") for line in path.read_text().splitlines()] if path.exists() else []

    def start(self, mode: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["sh", str(plan.SCRIPT_PATH), mode],
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def install(self, **env: str) -> tuple[int | None, str]:
        """Runs `install` until it has told the API server the outcome (or exited), then stops it."""
        proc = self.start("install", **env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if any(args[:1] == ["create"] for args, _ in self.calls()):
                break
            time.sleep(0.05)
        time.sleep(0.2)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        return proc.returncode, err

    def stop(self, mode: str, **env: str) -> tuple[int, str]:
        """Starts `mode`, then stops the pod as Kubernetes does (TERM)."""
        proc = self.start(mode, **env)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        return proc.returncode, err


@pytest.fixture
def pod(tmp_path: Path) -> Pod:
    config, bin_dir, node_dir = tmp_path / "config", tmp_path / "bin", tmp_path / "node"
    for d in (config, bin_dir, node_dir):
        d.mkdir()
    (config / "gvisor-host.sh").write_text(STUB_AGENT)
    arch = platform.machine()
    (config / f"steps-{arch}").write_text(
        f"preflight {arch} systrap off required install http://mirror.test 20261116.0 /usr/local/bin -\n"
        "containerd-configure runsc Zm9v /usr/local/bin /etc/containerd/runsc.toml\n"
        "verify runsc 'an image' off required /usr/local/bin /etc/containerd/runsc.toml\n"
    )
    (config / "restore").write_text(
        "containerd-restore /etc/containerd/runsc.toml\nuninstall /usr/local/bin remove-copy\n"
    )
    for name, text in (("nsenter", FAKE_NSENTER), ("kubectl", FAKE_KUBECTL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "INSTALLER_CONFIG_DIR": str(config),
        "INSTALLER_POD_DIR": str(node_dir),
        "INSTALLER_NODE_DIR": str(node_dir),
        "INSTALLER_READY_FILE": str(tmp_path / "ready"),
        "INSTALLER_SYSTEMD_DIR": str(tmp_path),  # a node run by systemd
        "CALLS": str(tmp_path / "calls"),
        "RAN": str(tmp_path / "ran"),
        "AGENT_SHA256": hashlib.sha256(STUB_AGENT.encode()).hexdigest(),
        "NODE_NAME": "node-a",
        "POD_NAMESPACE": "gvisor-fleet-installer",
        "EVENT_NAMESPACE": "default",
        "NODE_LABEL": "gvisor-fleet/gvisor",
        "RELEASE_LABEL": plan.RELEASE_LABEL,
        "RELEASE": "20261116.0",
        "STATE_ANNOTATION": plan.STATE_ANNOTATION,
        "REASON_ANNOTATION": plan.REASON_ANNOTATION,
        "HANDLER": "runsc",
        "CLEANUP_DAEMONSET": plan.CLEANUP_NAME,
    }
    return Pod(tmp_path, env)


def test_a_verified_node_is_labelled_with_the_release(pod: Pod):
    code, err = pod.install()
    assert code == 0, err
    assert pod.ran() == ["install", "containerd-configure", "verify"]
    # The agent ran from its copy named by its hash, as the SSH path's copy is.
    assert [p.name for p in (pod.root / "node").iterdir()] == [f"gvisor-host-{pod.env['AGENT_SHA256'][:16]}"]
    assert pod.patches() == [
        {"metadata": {"labels": {"gvisor-fleet/gvisor": "verified", plan.RELEASE_LABEL: "20261116.0"},
                      "annotations": {plan.STATE_ANNOTATION: "verified", plan.REASON_ANNOTATION: None}}}
    ]  # fmt: skip
    (event,) = pod.events()
    assert event["reason"] == "GvisorVerified" and event["type"] == "Normal"
    assert event["involvedObject"] == {"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": "uid-1"}
    assert event["metadata"] == {"generateName": "gvisor-fleet-installer.", "namespace": "default"}


@pytest.mark.parametrize("step", ["install", "containerd-configure", "verify"])
def test_a_failed_step_leaves_the_node_unlabelled_and_says_why(pod: Pod, step: str):
    code, err = pod.install(FAIL_AT=step)
    assert code == 0, err  # the pod stays, not ready, its log says why
    assert f"node node-a NOT verified: {step} broke on purpose" in err
    assert not (pod.root / "ready").exists()
    assert pod.patches() == [
        {"metadata": {"labels": {"gvisor-fleet/gvisor": None, plan.RELEASE_LABEL: None},
                      "annotations": {plan.STATE_ANNOTATION: "failed",
                                      plan.REASON_ANNOTATION: f"{step} broke on purpose"}}}
    ]  # fmt: skip
    (event,) = pod.events()
    assert event["reason"] == "GvisorInstallFailed" and event["type"] == "Warning"
    assert event["message"] == f"gVisor not installed on node node-a: {step} broke on purpose"
    # Nothing after the failed step ran.
    assert pod.ran()[-1] == step


def test_the_agents_advice_to_copy_over_ssh_is_left_out(pod: Pod):
    advice = "; check gvisor-fleet:baseUrl, or set gvisor-fleet:releaseFetch to once so hosts need no internet"
    pod.install(FAIL_AT="install", ADVICE=advice)
    (patch,) = pod.patches()
    reason = patch["metadata"]["annotations"][plan.REASON_ANNOTATION]  # type: ignore[index]
    assert reason == "install broke on purpose; check gvisor-fleet:baseUrl"


def test_verify_without_containerd_is_not_verified(pod: Pod):
    pod.install(CONTAINERD_OK="skipped")
    (patch,) = pod.patches()
    reason = patch["metadata"]["annotations"][plan.REASON_ANNOTATION]  # type: ignore[index]
    assert reason.startswith("verify did not run a container under gVisor through containerd")


def test_an_altered_agent_is_refused_before_it_runs(pod: Pod):
    code, err = pod.install(AGENT_SHA256="0" * 64)
    assert code == 1 and "node-installer: ERROR: the agent in the ConfigMap has SHA-256" in err
    assert pod.ran() == []
    (patch,) = pod.patches()
    assert patch["metadata"]["annotations"][plan.STATE_ANNOTATION] == "failed"  # type: ignore[index]


def test_an_unknown_architecture_is_refused(pod: Pod):
    for steps in (pod.root / "config").glob("steps-*"):
        steps.unlink()
    pod.install()
    assert pod.ran() == []
    (patch,) = pod.patches()
    assert patch["metadata"]["annotations"][plan.REASON_ANNOTATION].startswith(  # type: ignore[index]
        f"no steps for architecture {platform.machine()}"
    )


@pytest.mark.parametrize(
    ("runtime", "reason"),
    [
        ("cri-o://1.33.0", "the node's container runtime is cri-o://1.33.0, not containerd"),
        ("docker://28.0.1", "the node's container runtime is docker://28.0.1, not containerd"),
    ],
)
def test_layouts_it_cannot_handle_safely_are_refused_untouched(pod: Pod, runtime, reason):
    pod.install(RUNTIME_VERSION=runtime)
    assert pod.ran() == []
    (patch,) = pod.patches()
    assert patch["metadata"]["labels"]["gvisor-fleet/gvisor"] is None  # type: ignore[index]
    assert patch["metadata"]["annotations"][plan.REASON_ANNOTATION].startswith(reason)  # type: ignore[index]


@pytest.mark.parametrize("runtime", ["containerd://2.0.5-k3s1", "containerd://1.7.27-k3s1"])
def test_a_k3s_or_rke2_node_is_left_to_the_agents_layouts(pod: Pod, runtime: str):
    code, err = pod.install(RUNTIME_VERSION=runtime)
    assert code == 0, err
    assert pod.ran() == ["install", "containerd-configure", "verify"]


def test_a_node_without_systemd_is_refused_untouched(pod: Pod):
    pod.install(INSTALLER_SYSTEMD_DIR=str(pod.root / "no-systemd"))
    assert pod.ran() == []
    (patch,) = pod.patches()
    assert patch["metadata"]["annotations"][plan.REASON_ANNOTATION].startswith(  # type: ignore[index]
        "the node's services are not run by systemd"
    )


@pytest.mark.parametrize(("handler", "verified"), [("gvisor", True), ("runsc", False)])
def test_gke_sandbox_nodes_are_used_as_they_are(pod: Pod, handler: str, verified: bool):
    pod.install(GKE="gvisor", HANDLER=handler)
    assert pod.ran() == []  # never modified
    (patch,) = pod.patches()
    labels = patch["metadata"]["labels"]  # type: ignore[index]
    assert labels["gvisor-fleet/gvisor"] == ("verified" if verified else None)


def test_a_stopped_cleanup_pod_leaves_the_node_alone_unless_its_daemonset_is_deleted(pod: Pod):
    code, err = pod.stop("cleanup")  # a restart, an eviction: DaemonSet not being deleted
    assert code == 0 and "left as it is" in err
    assert pod.ran() == [] and pod.patches() == []


@pytest.mark.parametrize("state", ["2026-12-06T10:00:00Z", "gone"])
def test_deleting_the_cleanup_daemonset_restores_the_node_and_removes_the_labels(pod: Pod, state: str):
    code, err = pod.stop("cleanup", DS_STATE=state)
    assert code == 0, err
    assert pod.ran() == ["containerd-restore", "uninstall"]
    assert pod.patches() == [
        {"metadata": {"labels": {"gvisor-fleet/gvisor": None, plan.RELEASE_LABEL: None},
                      "annotations": {plan.STATE_ANNOTATION: None, plan.REASON_ANNOTATION: None}}}
    ]  # fmt: skip


def test_a_failed_restore_is_told_on_the_node(pod: Pod):
    code, err = pod.stop("cleanup", DS_STATE="2026-12-06T10:00:00Z", FAIL_AT="containerd-restore")
    assert code == 1 and "node node-a not restored: containerd-restore broke on purpose" in err
    (patch,) = pod.patches()
    assert patch["metadata"]["annotations"][plan.STATE_ANNOTATION] == "restore-failed"  # type: ignore[index]
    assert patch["metadata"]["labels"] == {"gvisor-fleet/gvisor": None, plan.RELEASE_LABEL: None}  # type: ignore[index]
    (event,) = pod.events()
    assert event["reason"] == "GvisorRestoreFailed"


def test_a_gke_sandbox_node_is_not_restored_only_unlabelled(pod: Pod):
    code, _ = pod.stop("cleanup", DS_STATE="gone", INSTALL_STATE="gke-sandbox")
    assert code == 0 and pod.ran() == []
    assert len(pod.patches()) == 1
