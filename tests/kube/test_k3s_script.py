"""The k3s node script run for real, with real sh, against a fixture root.

What is real: the script itself (every subcommand), curl fetching a release
mirror laid out like k3s's (file:// URLs), sha256sum, base64, and containerd
itself parsing the config k3s would render from the template the script
writes (containerd 1.6 from Debian for config version 2, containerd 2.x built
by tests/toolchain/build-containerd.sh for version 3).

What stands in (tests/kube/fake/): the k3s binary, systemctl and k3s's
install script. No registry ships k3s, so no real k3s server, agent,
kubelet or embedded containerd runs here; the fake k3s renders its config
from the template the way k3s does (base template + the user's lines).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.gvisor.agent import parse_facts
from components.gvisor.settings import GvisorSettings
from components.kube import k3s as plan
from components.kube.settings import K3sSettings

HERE = Path(__file__).parent
REPO = HERE.parents[1]
SCRIPT = REPO / "components/kube/scripts/k3s-node.sh"
VERSION = "v1.36.4+k3s1"
RUNSC_TOML = "/etc/gvisor-fleet/k3s-runsc.toml"
CONTAINERD_DIR = "var/lib/rancher/k3s/agent/etc/containerd"
BLOCK_BEGIN = "# BEGIN gvisor-fleet runtime (managed; removed on destroy)"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("curl") is None or shutil.which("sha256sum") is None,
    reason="the k3s node script runs as root and needs curl and sha256sum",
)


@dataclass
class Node:
    root: Path
    env: dict[str, str]
    mirror: Path

    def run(self, *args: str, ok: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["sh", "-s", "--", *args],
            input=SCRIPT.read_text(),
            capture_output=True,
            text=True,
            env={**self.env, **env},
            timeout=120,
        )
        if ok:
            assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stderr}"
        else:
            assert proc.returncode != 0, f"{args[0]} should have failed:\n{proc.stdout}"
        return proc

    def facts(self, *args: str, **env: str) -> dict[str, str]:
        return parse_facts(self.run(*args, **env).stdout)

    def path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def systemctl(self) -> list[str]:
        log = self.path("systemctl.log")
        return log.read_text().splitlines() if log.exists() else []

    def install_args(self, role: str = "server", pinned: str = "-", token: str | None = None) -> list[str]:
        url = f"file://{self.mirror}"
        args = [role, VERSION, url, f"{url}/install.sh", pinned, "n1"]
        args += ["https://192.0.2.10:6443", "-"] if role == "agent" else ["-", "192.0.2.10"]
        return args + ([token] if token else [])

    def runtime_args(self, runtime: str = "runsc") -> list[str]:
        toml = plan.k3s_runsc_toml(GvisorSettings(install_dir="/usr/local/bin"))
        return [runtime, str(self.shim), base64.b64encode(toml.encode()).decode(), RUNSC_TOML]

    @property
    def shim(self) -> Path:
        return self.path("/opt/gvisor/containerd-shim-runsc-v1")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    root, mirror, bin_dir = tmp_path / "root", tmp_path / "mirror", tmp_path / "bin"
    release = mirror / VERSION
    release.mkdir(parents=True)
    bin_dir.mkdir()
    for name in ("systemctl", "uname"):
        shutil.copy(HERE / "fake" / name, bin_dir / name)
    shutil.copy(HERE / "fake/install.sh", mirror / "install.sh")
    for asset in ("k3s", "k3s-arm64"):
        shutil.copy(HERE / "fake/k3s", release / asset)
    sums = "\n".join(f"{sha256(release / a)}  {a}" for a in ("k3s", "k3s-arm64"))
    for arch in ("amd64", "arm64"):
        (release / f"sha256sum-{arch}.txt").write_text(sums + f"\n{'0' * 64}  k3s-airgap-images-{arch}.tar\n")
    root.mkdir()
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "GVISOR_FLEET_ROOT": str(root),
        "GVISOR_FLEET_READY_TRIES": "3",
        "FAKE_BASE_DIR": str(HERE / "fixtures"),
        "HOME": str(tmp_path),
    }
    n = Node(root=root, env=env, mirror=mirror)
    n.shim.parent.mkdir(parents=True)
    n.shim.write_text("#!/bin/sh\n")
    n.shim.chmod(0o755)
    yield n


# --- install -----------------------------------------------------------------


def test_server_install_is_checksummed_configured_and_idempotent(node):
    facts = node.facts("install", *node.install_args())
    assert facts == {"changed": "true", "k3s_role": "server", "k3s_version": VERSION, "node_name": "n1"}
    assert sha256(node.path("/usr/local/bin/k3s")) == sha256(node.mirror / VERSION / "k3s")
    config = node.path("/etc/rancher/k3s/config.yaml")
    expected = ['node-name: "n1"', 'write-kubeconfig-mode: "0600"', 'tls-san: ["192.0.2.10"]']
    assert config.read_text().splitlines()[1:] == expected
    assert config.stat().st_mode & 0o077 == 0
    assert node.path("install.log").read_text() == "SKIP_DOWNLOAD=true SKIP_START=true EXEC=server\n"
    assert node.systemctl().count("restart k3s") == 1

    again = node.facts("install", *node.install_args())
    assert again["changed"] == "false"
    assert node.systemctl().count("restart k3s") == 1, "a second run must not restart k3s"
    assert node.path("install.log").read_text().count("EXEC=server") == 1


def test_agent_install_joins_with_the_token(node):
    node.run("install", *node.install_args("agent"), ok=False)  # no token
    facts = node.facts("install", *node.install_args("agent", token="K10abc::server:xyz"), FAKE_ARCH="aarch64")
    assert facts["k3s_role"] == "agent"
    assert sha256(node.path("/usr/local/bin/k3s")) == sha256(node.mirror / VERSION / "k3s-arm64")
    lines = node.path("/etc/rancher/k3s/config.yaml").read_text().splitlines()
    assert 'server: "https://192.0.2.10:6443"' in lines and 'token: "K10abc::server:xyz"' in lines
    assert node.systemctl().count("restart k3s-agent") == 1


def test_pinned_checksum_must_match_the_release(node):
    proc = node.run("install", *node.install_args(pinned="f" * 64), ok=False)
    assert "gvisor-fleet:kubernetes.k3s.sha256" in proc.stderr
    assert not node.path("/usr/local/bin/k3s").exists()
    node.run("install", *node.install_args(pinned=sha256(node.mirror / VERSION / "k3s")))


def test_tampered_binary_is_refused(node):
    (node.mirror / VERSION / "k3s").write_text("#!/bin/sh\necho evil\n")
    proc = node.run("install", *node.install_args(), ok=False)
    assert "checksum mismatch" in proc.stderr
    assert not node.path("/usr/local/bin/k3s").exists()


def test_missing_release_names_the_setting(node):
    args = node.install_args()
    args[1] = "v1.99.0+k3s1"
    proc = node.run("install", *args, ok=False)
    assert "gvisor-fleet:kubernetes.k3s.version" in proc.stderr


def test_a_k3s_installed_by_someone_else_is_left_alone(node):
    foreign = node.path("/usr/local/bin/k3s")
    foreign.parent.mkdir(parents=True)
    foreign.write_text("#!/bin/sh\n")
    proc = node.run("install", *node.install_args(), ok=False)
    assert "not by this program" in proc.stderr
    assert foreign.read_text() == "#!/bin/sh\n"


def test_uninstall_runs_k3s_uninstall_script(node):
    node.run("install", *node.install_args())
    assert node.facts("uninstall") == {"k3s": "removed"}
    assert not node.path("/usr/local/bin/k3s").exists()
    assert not node.path("/etc/rancher/k3s/config.yaml").exists()
    assert node.path("install.log").read_text().endswith("uninstalled\n")
    assert node.facts("uninstall") == {"k3s": "untouched"}


def test_token_and_kubeconfig_read_back_from_the_server(node):
    node.run("install", *node.install_args())
    assert node.run("token").stdout.strip() == "K10fake::server:s3cret"
    kubeconfig = node.run("kubeconfig", "https://k3s.example.com:6443").stdout
    assert "server: https://k3s.example.com:6443" in kubeconfig and "127.0.0.1" not in kubeconfig
    node.run("wait-nodes", "n1")
    node.run("wait-nodes", "n2", ok=False)


# --- the runtime in k3s's containerd ----------------------------------------


def containerd_bin(major: int) -> Path | None:
    if major == 1:
        found = shutil.which("containerd")
        if found:
            version = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
            return Path(found) if " 1." in version or " v1." in version else None
        return None
    out = subprocess.run(
        ["sh", str(REPO / "tests/toolchain/build-containerd.sh"), "--print-dir"], capture_output=True, text=True
    ).stdout.strip()
    candidate = Path(out) / "containerd"
    return candidate if candidate.exists() else None


def dump(containerd: Path, config: Path) -> str:
    proc = subprocess.run([str(containerd), "--config", str(config), "config", "dump"], capture_output=True, text=True)
    assert proc.returncode == 0, f"containerd rejects the rendered config:\n{proc.stderr}\n{config.read_text()}"
    return proc.stdout


@pytest.mark.parametrize(
    ("containerd_version", "template", "config_version", "plugin"),
    [
        ("2.2.7", "config-v3.toml.tmpl", 3, "io.containerd.cri.v1.runtime"),
        ("1.7.27", "config.toml.tmpl", 2, "io.containerd.grpc.v1.cri"),
    ],
)
def test_runtime_goes_into_the_template_generation_k3s_reads(
    node, containerd_version, template, config_version, plugin
):
    env = {"FAKE_CONTAINERD": containerd_version}
    node.run("install", *node.install_args(), **env)
    facts = node.facts("runtime-configure", *node.runtime_args(), **env)
    assert facts["k3s_runtime"] == "configured"
    assert facts["k3s_template"] == template
    assert facts["k3s_containerd_config_version"] == str(config_version)
    assert facts["k3s_runtime_ok"] == "true"
    tmpl = node.path(f"{CONTAINERD_DIR}/{template}").read_text()
    assert tmpl.splitlines()[0] == '{{ template "base" . }}'
    assert f"{plugin}" in tmpl and "containerd.runtimes.runsc]" in tmpl
    other = "config.toml.tmpl" if config_version == 3 else "config-v3.toml.tmpl"
    assert not node.path(f"{CONTAINERD_DIR}/{other}").exists()
    toml = node.path(RUNSC_TOML).read_text()
    assert toml.startswith('binary_name = "/usr/local/bin/runsc"\n') and "[runsc_config]" in toml

    # containerd itself must read the runtime out of what k3s renders.
    containerd = containerd_bin(2 if config_version == 3 else 1)
    if containerd is None:
        pytest.skip(f"no containerd {'2.x' if config_version == 3 else '1.x'} here to parse the rendered config")
    out = dump(containerd, node.path(f"{CONTAINERD_DIR}/config.toml")).replace("'", '"')  # 2.x dumps '...'
    assert f'ConfigPath = "{RUNSC_TOML}"' in out
    assert f'runtime_path = "{node.shim}"' in out
    assert "runtimes.runsc]" in out and "runtimes.runc]" in out, "the base runtimes must survive"


def test_runtime_configure_is_idempotent(node):
    node.run("install", *node.install_args())
    node.run("runtime-configure", *node.runtime_args())
    restarts = node.systemctl().count("restart k3s")
    tmpl = node.path(f"{CONTAINERD_DIR}/config-v3.toml.tmpl").read_text()
    assert node.facts("runtime-configure", *node.runtime_args())["k3s_runtime"] == "unchanged"
    assert node.systemctl().count("restart k3s") == restarts
    assert node.path(f"{CONTAINERD_DIR}/config-v3.toml.tmpl").read_text() == tmpl
    assert tmpl.count(BLOCK_BEGIN) == 1


def test_systemd_cgroup_follows_k3s(node):
    node.run("install", *node.install_args())  # the v3 base uses SystemdCgroup = true
    facts = node.facts("runtime-configure", *node.runtime_args())
    assert facts["systemd_cgroup"] == "true"
    assert node.path(RUNSC_TOML).read_text().endswith('  systemd-cgroup = "true"\n')


def test_an_owners_template_is_extended_and_restored(node):
    node.run("install", *node.install_args())
    own = node.path(f"{CONTAINERD_DIR}/config.toml.tmpl")  # v2 name, kept although containerd is 2.x
    own.parent.mkdir(parents=True, exist_ok=True)
    mine = '{{ template "base" . }}\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/certs.d"\n'
    own.write_text(mine)
    facts = node.facts("runtime-configure", *node.runtime_args())
    assert facts["k3s_template"] == "config.toml.tmpl" and facts["k3s_containerd_config_version"] == "2"
    text = own.read_text()
    assert text.startswith(mine) and '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]' in text
    assert not node.path(f"{CONTAINERD_DIR}/config-v3.toml.tmpl").exists(), "a v3 file would shadow the owner's"

    assert node.facts("runtime-restore", RUNSC_TOML) == {"k3s_runtime": "removed"}
    assert own.read_text() == mine
    assert not node.path(RUNSC_TOML).exists()


def test_restore_removes_a_template_it_created(node):
    node.run("install", *node.install_args())
    node.run("runtime-configure", *node.runtime_args())
    node.run("runtime-restore", RUNSC_TOML)
    assert not node.path(f"{CONTAINERD_DIR}/config-v3.toml.tmpl").exists()
    assert node.systemctl()[-1] == "restart k3s"
    assert "runsc" not in node.path(f"{CONTAINERD_DIR}/config.toml").read_text()


def test_a_runtime_of_the_same_name_outside_the_block_is_refused(node):
    node.run("install", *node.install_args())
    own = node.path(f"{CONTAINERD_DIR}/config-v3.toml.tmpl")
    own.parent.mkdir(parents=True, exist_ok=True)
    own.write_text("{{ template \"base\" . }}\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.'runsc']\n")
    proc = node.run("runtime-configure", *node.runtime_args(), ok=False)
    assert "gvisor-fleet:runtimeName" in proc.stderr


def test_failed_restart_puts_the_previous_template_back(node):
    node.run("install", *node.install_args())
    node.path("fail-start").write_text("")
    proc = node.run("runtime-configure", *node.runtime_args(), ok=False)
    assert "did not load runtime runsc" in proc.stderr
    assert not node.path(f"{CONTAINERD_DIR}/config-v3.toml.tmpl").exists()


def test_runtime_needs_the_gvisor_shim_and_k3s(node):
    proc = node.run("runtime-configure", *node.runtime_args(), ok=False)
    assert "run the install step first" in proc.stderr
    node.run("install", *node.install_args())
    node.shim.unlink()
    proc = node.run("runtime-configure", *node.runtime_args(), ok=False)
    assert "gvisor-fleet:installDir" in proc.stderr


def test_the_command_lines_the_component_builds_run_here(node):
    """The pure command builders and the script agree on every argument."""
    k3s = K3sSettings(release_url=f"file://{node.mirror}", install_script_url=f"file://{node.mirror}/install.sh")
    server = plan.plan_nodes([("n1", "x86_64", "root")])[0]
    line = plan.install_command(server, k3s, "-", "192.0.2.10")
    proc = subprocess.run(line, shell=True, input=SCRIPT.read_text(), capture_output=True, text=True, env=node.env)
    assert proc.returncode == 0, proc.stderr
    gv = GvisorSettings(install_dir=str(node.shim.parent))
    create, delete = plan.runtime_commands(server, gv, K3sSettings(runsc_config_path=RUNSC_TOML))
    for line in (create, delete):
        proc = subprocess.run(line, shell=True, input=SCRIPT.read_text(), capture_output=True, text=True, env=node.env)
        assert proc.returncode == 0, proc.stderr
