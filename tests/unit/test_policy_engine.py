"""`pulumi preview --policy-pack components/policy` with the real Pulumi engine.

Uses the engine and the upstream plugins that tests/toolchain/build-pulumi.sh
builds (skipped when they are not built, e.g. on a runner that skipped
tests/setup.sh). The engine starts the Python policy pack through the
upstream language host (its RunPlugin call); the Kubernetes resources go
through the upstream pulumi-kubernetes provider's Check before the pack sees
them. Nothing here dials a machine: remote commands do not run during a
preview, and the provider previews against a cluster it cannot reach.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from components.fleet.keys import generate_ed25519
from tests.support.bucket import publish_releases
from tests.support.toolchain import KUBERNETES_VERSION, built_engine_env

ROOT = Path(__file__).resolve().parents[2]
TOOLCHAIN = ROOT / "tests" / "toolchain"
PROJECT_FILES = ("Pulumi.yaml", "__main__.py", "requirements.txt", "components")
MACHINES = [
    {"name": "build-1", "address": "10.0.2.10", "arch": "x86_64"},
    {"name": "edge-arm", "address": "10.0.2.11", "arch": "aarch64", "user": "admin"},
]
KEY = generate_ed25519("policy-engine-test").private_key
# A release listing for `latest` to resolve against (it is resolved when the program runs).
LISTED = publish_releases(Path(tempfile.mkdtemp(prefix="gvisor-fleet-listed-")), ["20261116.0"])
# A cluster nobody serves: the provider previews without it (and says so).
UNREACHABLE_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: nowhere, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: nobody, user: {token: not-a-token}}]
contexts: [{name: nowhere, context: {cluster: nowhere, user: nobody}}]
current-context: nowhere
"""


@dataclass
class Project:
    dir: Path
    env: dict[str, str]

    def pulumi(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["pulumi", *args, "--non-interactive"],
            cwd=self.dir,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def stack(self, name: str) -> None:
        """A new stack holding only the SSH key secret."""
        assert self.pulumi("stack", "init", name).returncode == 0
        self.set_secret(name, "sshPrivateKey", KEY)

    def set_secret(self, stack: str, key: str, value: str) -> None:
        done = self.pulumi("config", "set", "--secret", key, "--stack", stack, stdin=value)
        assert done.returncode == 0, done.stderr

    def configure(self, stack: str, **config: object) -> None:
        """Replaces the stack's config (keys without the project prefix), keeping its secrets."""
        path = self.dir / "stacks" / f"Pulumi.{stack}.yaml"
        doc = yaml.safe_load(path.read_text())
        secrets = {k: v for k, v in doc["config"].items() if isinstance(v, dict) and "secure" in v}
        doc["config"] = {**secrets, **{f"gvisor-fleet:{k}": v for k, v in config.items()}}
        path.write_text(yaml.safe_dump(doc))

    def preview(self, stack: str, policy_config: Mapping[str, object] | None = None) -> tuple[int, str]:
        args = ["preview", "--stack", stack, "--policy-pack", "components/policy"]
        if policy_config is not None:
            path = self.dir / f"policy-{stack}.json"
            path.write_text(json.dumps(policy_config))
            args += ["--policy-pack-config", str(path)]
        done = self.pulumi(*args)
        return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    env = built_engine_env()
    if env is None:
        pytest.skip(
            f"the Pulumi engine or its kubernetes provider {KUBERNETES_VERSION} is not built"
            " (sh tests/toolchain/build-pulumi.sh)"
        )
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv (sh tests/setup.sh)")
    base = tmp_path_factory.mktemp("policy-engine")
    project_dir = base / "project"
    project_dir.mkdir()
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, project_dir / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, project_dir / name)
    (project_dir / "stacks").mkdir()
    (project_dir / ".venv").symlink_to(ROOT / ".venv")
    state = base / "state"
    state.mkdir()
    (base / "tmp").mkdir()
    env = {
        **{k: v for k, v in env.items() if not k.startswith("PULUMI_BACKEND")},
        "PULUMI_BACKEND_URL": f"file://{state}",
        "PULUMI_CONFIG_PASSPHRASE": "policy-engine-test",
        # The kubernetes provider leaves kubeconfig copies in TMPDIR: keep them here.
        "TMPDIR": str(base / "tmp"),
    }
    env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
    project = Project(project_dir, env)
    for stack in ("prod", "dev"):
        project.stack(stack)
    code, output = project.preview("prod")  # no machines: nothing to check, but the pack must start
    assert code == 0, output
    yield project


def test_latest_release_fails_a_prod_preview(project: Project):
    project.configure("prod", release="latest", baseUrl=LISTED, machines=MACHINES)
    code, output = project.preview("prod")
    assert code != 0, output
    assert "gvisor-release-pinned" in output
    for machine in ("build-1", "edge-arm"):
        assert f"machine '{machine}' installs gVisor release 'latest' on stack 'prod'" in output


def test_latest_release_passes_on_a_dev_stack(project: Project):
    project.configure("dev", release="latest", baseUrl=LISTED, machines=MACHINES)
    code, output = project.preview("dev")
    assert code == 0, output
    assert "gvisor-fleet@v0.1.0" in output  # the pack ran


def test_default_runtime_on_a_configured_image_builder_fails(project: Project):
    project.configure("prod", release="20261116.0", defaultRuntime=True, machines=MACHINES)
    code, output = project.preview("prod")
    assert code == 0, output
    builders = {"no-default-runtime-on-image-builders": {"imageBuilders": ["build-*"]}}
    code, output = project.preview("prod", builders)
    assert code != 0, output
    assert "machine 'build-1' builds images" in output
    assert "edge-arm' builds images" not in output


def test_kubernetes_layer_previews_through_the_upstream_provider(project: Project):
    project.configure("prod", release="20261116.0", machines=MACHINES, kubernetes={"enabled": True})
    project.set_secret("prod", "kubeconfig", UNREACHABLE_KUBECONFIG)
    code, output = project.preview("prod")
    assert code == 0, output
    for kind in (
        "node.k8s.io/v1:RuntimeClass",
        "core/v1:Namespace",
        "networking.k8s.io/v1:NetworkPolicy",
        "batch/v1:Job",
    ):
        assert f"kubernetes:{kind}" in output, output
    assert "gvisor-fleet@v0.1.0" in output  # the pack ran over the provider's checked inputs
    listed = project.pulumi("plugin", "ls")
    assert re.search(rf"kubernetes\s+resource\s+{re.escape(KUBERNETES_VERSION)}\b", listed.stdout), listed.stdout


def test_kubernetes_without_containerd_stops_the_preview(project: Project):
    # The program refuses this before the policy pack would see it, naming the key.
    project.configure("prod", release="20261116.0", machines=MACHINES, kubernetes={"enabled": True}, containerd="off")
    project.set_secret("prod", "kubeconfig", UNREACHABLE_KUBECONFIG)
    code, output = project.preview("prod")
    assert code != 0, output
    assert "gvisor-fleet:containerd: 'off' leaves the nodes' containerd without the 'runsc' runtime" in output, output
