"""The containerd layouts nodes come with, against a real containerd 2 (no mocks of containerd).

- EKS AL2023 (nodeadm): /etc/containerd/config.toml pulls drop-ins in through
  `imports`, and CRI settings may live in a drop-in. Run on the real
  containerd 2 the sandbox starts as its system service.
- k3s and RKE2: their service renders containerd's config from a template at
  each start and serves it on /run/k3s/containerd/containerd.sock. k3s cannot
  be had on this machine, so these tests use a NAMED STAND-IN for the k3s
  (k3s, k3s-agent) and RKE2 (rke2-server, rke2-agent) services only:
  tests/host/sandbox/rancher-service.sh. At each start it renders the template
  (config-v3.toml.tmpl, else config.toml.tmpl) into config.toml, each line
  `{{ template "base" . }}` replaced by a fixed base config (k3s's containerd 2
  template, trimmed to what runs without a cluster), then runs the REAL
  containerd 2 with that file on k3s's socket, from k3s's own binary folder
  (data/current/bin; RKE2: bin). It does not render other template actions
  (it fails on them, where k3s renders them), and runs no kubelet, API
  server or CNI: what is proven is the agent's side (which template it
  writes, which service it restarts, which socket it asks, that a real runsc
  sandbox starts through that containerd, and that destroy puts the template
  back), not k3s's own rendering.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.host.agent_calls import PREFIX, RUNSC_TOML, configure_containerd, install, toml_b64
from tests.host.cri import cri_runtimes
from tests.host.host_state import ok
from tests.host.host_state import refusal as failed
from tests.host.sandbox import Sandbox
from tests.support.image import TEST_IMAGE
from tests.support.mirror import Releases

pytestmark = pytest.mark.host

CONFIG = "/etc/containerd/config.toml"
SOCKET = "/run/k3s/containerd/containerd.sock"
BASE_LINE = '{{ template "base" . }}'
BLOCK_BEGIN = "# BEGIN gvisor-fleet runtime (managed; removed on destroy)"
V3 = "io.containerd.cri.v1.runtime"


def conf_dir(dist: str) -> str:
    return f"/var/lib/rancher/{dist}/agent/etc/containerd"


def start_rancher(host: Sandbox, containerd2_bin: Path, dist: str, unit: str) -> None:
    """A k3s or RKE2 node as far as the agent sees it: the folders, the distribution's own
    containerd and ctr where it keeps them, and its service (the stand-in) running."""
    bins = "/var/lib/rancher/k3s/data/0f1e2d/bin" if dist == "k3s" else "/var/lib/rancher/rke2/bin"
    data = host.work / f"{dist}-data"  # image stores sit on a real file system (as in init.sh)
    data.mkdir()
    store = f"/var/lib/rancher/{dist}/agent/containerd"
    host.sh(
        f"mkdir -p {bins} {conf_dir(dist)} {store} && cp {containerd2_bin}/* {bins}/"
        f" && mount --bind {data} {store}"
        + (" && ln -s 0f1e2d /var/lib/rancher/k3s/data/current" if dist == "k3s" else "")
    )
    host.sh(f"systemctl start {unit}")


def generated(host: Sandbox, dist: str) -> bytes:
    return host.read(f"{conf_dir(dist)}/config.toml") or b""


def verify(host: Sandbox) -> dict[str, str]:
    return ok(host.agent("verify", "runsc", TEST_IMAGE, "off", "required", PREFIX, RUNSC_TOML))


def journal_left(host: Sandbox) -> str:
    """The journal of config files (the install step's of installDir stays until uninstall)."""
    journal = "/var/lib/gvisor-fleet/backup"
    return host.sh(f"find {journal}/etc {journal}/var -type f 2>/dev/null || true").strip()


@pytest.mark.parametrize(("dist", "unit"), [("k3s", "k3s"), ("rke2", "rke2-agent")])
def test_a_rancher_node_without_a_template_gets_one_and_runs_a_sandbox(
    host: Sandbox, releases: Releases, containerd2_bin: Path, dist: str, unit: str
):
    start_rancher(host, containerd2_bin, dist, unit)
    rendered_before, system_before = generated(host, dist), host.read(CONFIG)
    assert "runsc" not in cri_runtimes(host, SOCKET)

    facts = ok(host.agent("preflight", "x86_64", "systrap", "off", "required"))
    assert facts["containerd_version"].startswith("2."), "preflight did not find the distribution's containerd"
    ok(install(host, releases.current))
    facts = ok(configure_containerd(host))
    template = f"{conf_dir(dist)}/config-v3.toml.tmpl"
    assert (facts["containerd"], facts["containerd_layout"], facts["containerd_template"]) == (
        "configured",
        dist,
        template,
    )
    written = (host.read(template) or b"").decode()
    assert written.startswith(f"{BASE_LINE}\n{BLOCK_BEGIN}\n"), written
    assert f'[plugins."{V3}".containerd.runtimes.runsc]' in written
    assert "runsc" in cri_runtimes(host, SOCKET), "the restarted service's containerd does not serve runsc"
    assert ok(configure_containerd(host))["containerd"] == "unchanged"

    facts = verify(host)
    assert facts["containerd_ok"] == "true" and "Starting gVisor" in facts["containerd_banner"], facts
    assert host.read(CONFIG) == system_before, "the system containerd's file was touched"

    assert ok(host.agent("containerd-restore", RUNSC_TOML))["containerd"] == "restored"
    assert host.read(template) is None, "the template this program created is left"
    assert generated(host, dist) == rendered_before, "the service did not render its own config again"
    assert "runsc" not in cri_runtimes(host, SOCKET)
    assert host.read(RUNSC_TOML) is None and journal_left(host) == ""
    assert host.read(CONFIG) == system_before


USER_TEMPLATE = f"""{BASE_LINE}

# the owner's own runtime
[plugins.'{V3}'.containerd.runtimes.custom]
  runtime_type = "io.containerd.runc.v2"
"""


def test_a_k3s_agent_with_its_own_template_keeps_it_and_gets_it_back_byte_for_byte(
    host: Sandbox, releases: Releases, containerd2_bin: Path
):
    start_rancher(host, containerd2_bin, "k3s", "k3s-agent")
    template = f"{conf_dir('k3s')}/config-v3.toml.tmpl"
    host.write(template, USER_TEMPLATE)
    host.sh("systemctl restart k3s-agent")
    rendered_before = generated(host, "k3s")
    ok(install(host, releases.current))
    assert ok(configure_containerd(host))["containerd"] == "configured"
    written = (host.read(template) or b"").decode()
    assert written.startswith(USER_TEMPLATE + BLOCK_BEGIN), written
    assert {"custom", "runc", "runsc"} <= cri_runtimes(host, SOCKET)
    assert verify(host)["containerd_ok"] == "true"

    ok(host.agent("containerd-restore", RUNSC_TOML))
    assert host.read(template) == USER_TEMPLATE.encode()
    assert generated(host, "k3s") == rendered_before
    assert cri_runtimes(host, SOCKET) == {"custom", "runc"}


def test_killed_between_writing_the_template_and_the_restart_the_rerun_restarts_k3s(
    host: Sandbox, releases: Releases, containerd2_bin: Path
):
    start_rancher(host, containerd2_bin, "k3s", "k3s")
    ok(install(host, releases.current))
    host.kill_agent_at("containerd:written", "containerd-configure", "runsc", toml_b64(), PREFIX, RUNSC_TOML)
    assert host.read(f"{conf_dir('k3s')}/config-v3.toml.tmpl") is not None
    assert "runsc" not in cri_runtimes(host, SOCKET), "k3s restarted before the kill point"
    assert ok(configure_containerd(host))["containerd"] == "configured", "the re-run did not restart k3s"
    assert "runsc" in cri_runtimes(host, SOCKET)
    ok(host.agent("containerd-restore", RUNSC_TOML))
    assert host.read(f"{conf_dir('k3s')}/config-v3.toml.tmpl") is None and journal_left(host) == ""


def test_destroy_while_k3s_is_stopped_puts_the_template_back_and_leaves_k3s_stopped(
    host: Sandbox, releases: Releases, containerd2_bin: Path
):
    start_rancher(host, containerd2_bin, "k3s", "k3s-agent")
    ok(install(host, releases.current))
    ok(configure_containerd(host))
    host.sh("systemctl stop k3s-agent")
    assert ok(host.agent("containerd-restore", RUNSC_TOML))["containerd"] == "restored"
    assert host.read(f"{conf_dir('k3s')}/config-v3.toml.tmpl") is None and journal_left(host) == ""
    assert host.run(["systemctl", "is-active", "k3s-agent"]).returncode != 0, "k3s was started by destroy"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (f"{BASE_LINE}\n[plugins.'{V3}'.containerd.runtimes.runsc]\n  runtime_type = \"io.containerd.runc.v2\"\n",
         "already defines a runtime 'runsc' outside this program's block"),
        (f"{BASE_LINE}\n{{{{ if .NodeConfig.AgentConfig.Snapshotter }}}}\n[plugins.'{V3}'.containerd]\n"
         '  snapshotter = "{{ .NodeConfig.AgentConfig.Snapshotter }}"\n',
         "ends inside a {{ ... }} block (1 left open)"),
        (None, "but neither k3s nor k3s-agent runs"),
    ],
    ids=["defines-the-runtime", "ends-inside-an-if", "service-stopped"],
)  # fmt: skip
def test_a_k3s_template_that_cannot_be_extended_safely_is_refused_untouched(
    host: Sandbox, releases: Releases, containerd2_bin: Path, template: str | None, message: str
):
    start_rancher(host, containerd2_bin, "k3s", "k3s")
    path = f"{conf_dir('k3s')}/config-v3.toml.tmpl"
    if template is None:
        host.sh("systemctl stop k3s")
    else:  # written after k3s started: the stand-in renders only the base line
        host.write(path, template)
    rendered_before = generated(host, "k3s")
    ok(install(host, releases.current))
    err = failed(configure_containerd(host))
    assert message in err, err
    if template is not None:
        assert path in err, "the refusal does not name the template"
    assert host.read(path) == (None if template is None else template.encode())
    assert generated(host, "k3s") == rendered_before
    assert host.read(RUNSC_TOML) is None and journal_left(host) == ""


# EKS AL2023's nodeadm writes a version 3 config.toml that imports drop-ins
# from /etc/containerd/config.d (its layout, sandbox image and runc options
# kept, with names of this test).
NODEADM = f"""version = 3
root = "/var/lib/containerd"
state = "/run/containerd"
# Users can add configuration in the drop-in folder below.
imports = ["/etc/containerd/config.d/*.toml"]

[grpc]
address = "/run/containerd/containerd.sock"

[plugins.'io.containerd.cri.v1.images']
discard_unpacked_layers = true

[plugins.'io.containerd.cri.v1.images'.pinned_images]
sandbox = "registry.example.test/eks/pause:3.10"

[plugins.'{V3}'.containerd]
default_runtime_name = "runc"

[plugins.'{V3}'.containerd.runtimes.runc]
runtime_type = "io.containerd.runc.v2"

[plugins.'{V3}'.containerd.runtimes.runc.options]
SystemdCgroup = false
"""
# A drop-in of the kind users add: one more runtime, in the same CRI table.
DROP_IN_RUNTIME = f"""version = 3
[plugins.'{V3}'.containerd.runtimes.custom]
runtime_type = "io.containerd.runc.v2"
"""
# The main file left with the basics, and every CRI runtime setting in a drop-in.
MAIN_ONLY_IMPORTS = """version = 3
imports = ["/etc/containerd/config.d/*.toml"]
"""
DROP_IN_CRI = f"""version = 3
[plugins.'{V3}'.containerd]
default_runtime_name = "runc"

[plugins.'{V3}'.containerd.runtimes.runc]
runtime_type = "io.containerd.runc.v2"
"""


def with_drop_in(host: Sandbox, releases: Releases, main: str, drop_in_path: str, drop_in: str) -> dict[str, str]:
    """containerd running with MAIN and one drop-in, gVisor installed: /etc/containerd as it is then."""
    host.write(CONFIG, main)
    host.write(drop_in_path, drop_in)
    host.sh("systemctl restart containerd")
    before = host.tree("/etc/containerd")
    ok(install(host, releases.current))
    return before


@pytest.mark.parametrize(
    ("main", "drop_in"),
    [(NODEADM, DROP_IN_RUNTIME), (MAIN_ONLY_IMPORTS, DROP_IN_CRI)],
    ids=["nodeadm", "cri-in-drop-in"],
)
def test_a_config_with_imported_drop_ins_runs_a_sandbox_and_comes_back_byte_for_byte(
    host_containerd2: Sandbox, releases: Releases, main: str, drop_in: str
):
    host = host_containerd2
    drop_in_path = "/etc/containerd/config.d/10-custom.toml"
    before = with_drop_in(host, releases, main, drop_in_path, drop_in)
    facts = ok(configure_containerd(host))
    assert (facts["containerd"], facts["containerd_config_version"]) == ("configured", "3")
    assert host.read(drop_in_path) == drop_in.encode(), "a drop-in was written"
    runtimes = cri_runtimes(host)
    assert "runsc" in runtimes and "runc" in runtimes, runtimes
    assert ("custom" in runtimes) == ("custom" in drop_in)
    assert verify(host)["containerd_ok"] == "true"

    ok(host.agent("containerd-restore", RUNSC_TOML))
    assert host.tree("/etc/containerd") == before
    assert "runsc" not in cri_runtimes(host)


# nodeadm's version 2 config (AL2023 nodes with containerd 1.x), its drop-in
# folder holding a registry setting of the CRI plugin.
NODEADM_V2 = """version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
imports = ["/etc/containerd/config.d/*.toml"]
[grpc]
address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri".containerd]
default_runtime_name = "runc"
discard_unpacked_layers = true
[plugins."io.containerd.grpc.v1.cri"]
sandbox_image = "registry.example.test/eks/pause:3.10"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
runtime_type = "io.containerd.runc.v2"
"""
DROP_IN_REGISTRY = (
    'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\nconfig_path = "/etc/containerd/certs.d"\n'
)


def test_on_containerd_1_a_drop_in_that_would_replace_the_runtime_is_named_and_nothing_changes(
    host: Sandbox, releases: Releases
):
    drop_in_path = "/etc/containerd/config.d/20-registry.toml"
    before = with_drop_in(host, releases, NODEADM_V2, drop_in_path, DROP_IN_REGISTRY)
    err = failed(configure_containerd(host))
    assert f"{drop_in_path}, imported by {CONFIG} (imports = [...]), define the CRI plugin's table" in err, err
    assert "upgrade to containerd 2" in err and "Nothing was changed" in err
    assert host.tree("/etc/containerd") == before and journal_left(host) == ""
    assert "runc" in cri_runtimes(host), "containerd no longer serves as before"
