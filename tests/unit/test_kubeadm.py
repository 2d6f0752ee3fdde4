"""cluster: kubeadm without a host: settings, the plan's configs and command lines, the graph under mocks.

What kubeadm does with them runs for real in the vm tier (tests/vm/test_kubeadm.py).
"""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Any

import pulumi
import pytest
import yaml

from components.fleet.specs import MachineSpec, QemuOptions
from components.gvisor.settings import GvisorSettings
from components.kube import kubeadm as plan
from components.kube.settings import KubeadmSettings, kubeadm_problems, parse_kube_settings
from tests.support.shell import shell_function
from tests.unit.kube_mocks import KUBECONFIG, KubeMocks, argv, deploy, kube
from tests.unit.mocks import KUBEADM_OUTPUT, use

TOKEN_OUT = KUBEADM_OUTPUT["join-token"]
NODE_IPS = {"m1": "192.0.2.10", "m2": "192.0.2.11"}


class KubeadmMocks(KubeMocks):
    """The kubeadm script's facts (tests/unit/mocks.py); each machine's install step reports its own address."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> Any:
        rid, outputs = super().new_resource(args)
        line = args.inputs.get("create", "")
        if "kubeadm node agent" in args.inputs.get("stdin", "") and " -- install " in f"{line} ":
            outputs["stdout"] = f"node_ip={NODE_IPS[args.name.split('-')[2]]}\n"
        return [rid, outputs]


@pytest.fixture
def kmocks() -> KubeadmMocks:
    return use(KubeadmMocks())


def settings(**raw: object) -> KubeadmSettings:
    return kube(cluster="kubeadm", kubeadm=raw).kubeadm


def node(role: plan.Role = "control-plane", arch: str = "x86_64") -> plan.KubeadmNode:
    return plan.KubeadmNode("m1", arch, role, sudo=True, pod_cidr="10.244.0.0/24", address=None)


def test_pod_cidrs_give_each_machine_the_next_24():
    assert plan.pod_cidrs("10.244.0.0/16", 3) == ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]
    with pytest.raises(ValueError, match="IPv4"):
        plan.pod_cidrs("fd00::/48", 1)


def test_plan_puts_the_named_control_plane_first():
    machines = [("a", "aarch64", "root", None), ("b", "x86_64", "fleet", "192.168.76.10")]
    nodes = plan.plan_nodes(settings(controlPlane="b"), machines)
    assert [(n.name, n.role, n.pod_cidr, n.sudo, n.address) for n in nodes] == [
        ("b", "control-plane", "10.244.1.0/24", True, "192.168.76.10"),
        ("a", "worker", "10.244.0.0/24", False, None),
    ]
    assert plan.plan_nodes(settings(), machines)[0].name == "a"  # default: the first machine


def test_init_config_says_what_kubeadm_needs():
    docs = list(yaml.safe_load_all(plan.init_config(settings(addons=[], apiUrl="https://127.0.0.1:26443"),
                                                    node(), "192.168.76.10")))  # fmt: skip
    init, cluster, kubelet = docs
    assert init["kind"] == "InitConfiguration" and init["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert init["localAPIEndpoint"] == {"advertiseAddress": "192.168.76.10", "bindPort": 6443}
    reg = init["nodeRegistration"]
    assert reg["name"] == "m1" and reg["criSocket"] == "unix:///run/containerd/containerd.sock"
    assert reg["kubeletExtraArgs"] == [{"name": "node-ip", "value": "192.168.76.10"}]
    assert reg["taints"] == []  # scheduleOnControlPlane defaults to true
    assert init["skipPhases"] == ["addon/kube-proxy", "addon/coredns"]
    assert init["timeouts"]["controlPlaneComponentHealthCheck"] == "600s"
    assert init["timeouts"]["kubernetesAPICall"] == "600s"
    assert cluster["kubernetesVersion"] == "v1.37.2"
    assert cluster["controlPlaneEndpoint"] == "192.168.76.10:6443"
    assert cluster["apiServer"]["certSANs"] == ["127.0.0.1", "192.168.76.10"]
    assert cluster["networking"] == {"podSubnet": "10.244.0.0/16", "serviceSubnet": "10.96.0.0/12"}
    assert kubelet["cgroupDriver"] == "cgroupfs"
    # One control plane: no leader election to lose when the API server is slow to renew a lease.
    no_election = {"name": "leader-elect", "value": "false"}
    assert no_election in cluster["controllerManager"]["extraArgs"]
    assert cluster["scheduler"]["extraArgs"] == [no_election]
    # etcd's one member waits 25 s (5 s + 2 x election-timeout) before it fails a write.
    etcd = {a["name"]: a["value"] for a in cluster["etcd"]["local"]["extraArgs"]}
    assert etcd == {"heartbeat-interval": "1000", "election-timeout": "10000"}


def test_the_control_planes_liveness_probes_scale_with_timeout_seconds_never_below_kubeadms():
    init, _, _ = yaml.safe_load_all(plan.init_config(settings(), node(), "10.0.0.5"))
    assert init["patches"] == {"directory": plan.PATCHES_DIR}
    assert "STATE_DIR=/var/lib/gvisor-fleet/kubeadm\n" in plan.node_script()
    assert "PATCHES_DIR=$STATE_DIR/patches " in plan.node_script() and plan.PATCHES_DIR.endswith("/kubeadm/patches")
    ops = {op["path"]: op["value"] for op in json.loads(plan.probe_patch(settings(timeoutSeconds=900)))}
    assert ops == {
        "/spec/containers/0/livenessProbe/failureThreshold": 30,  # 300 s without an answer
        "/spec/containers/0/livenessProbe/timeoutSeconds": 30,
    }
    small = json.loads(plan.probe_patch(settings(timeoutSeconds=120)))
    assert small[0]["value"] == 8  # kubeadm's own
    # The script gets the patch as init's fourth argument, base64.
    command = plan.init_command(node(), settings(timeoutSeconds=900), "10.0.0.5")
    assert base64.b64encode(plan.probe_patch(settings(timeoutSeconds=900)).encode()).decode() in command


def test_init_config_keeps_kubeadms_taint_and_addons_when_asked():
    init, _, _ = yaml.safe_load_all(plan.init_config(settings(scheduleOnControlPlane=False), node(), "10.0.0.5"))
    assert "taints" not in init["nodeRegistration"] and "skipPhases" not in init


def test_join_config_carries_the_token_and_ca_hash():
    join = {"token": "abcdef.0123456789abcdef", "ca_cert_hash": "sha256:" + "c" * 64}
    (doc,) = yaml.safe_load_all(
        plan.join_config(settings(), node("worker"), "192.168.76.11", "192.168.76.10:6443", join)
    )
    assert doc["kind"] == "JoinConfiguration"
    assert doc["discovery"]["bootstrapToken"] == {
        "apiServerEndpoint": "192.168.76.10:6443", "token": join["token"], "caCertHashes": [join["ca_cert_hash"]],
    }  # fmt: skip
    assert doc["nodeRegistration"]["kubeletExtraArgs"] == [{"name": "node-ip", "value": "192.168.76.11"}]
    assert "taints" not in doc["nodeRegistration"]


def test_sources_are_the_official_locations_or_the_copied_release_dir(tmp_path):
    kind, where = plan.source_args(settings(), "aarch64")
    assert kind == "url"
    assert where == (
        "https://dl.k8s.io/release/v1.37.2/bin/linux/arm64|https://github.com/containernetworking/plugins/"
        "releases/download/v1.7.1/cni-plugins-linux-arm64-v1.7.1.tgz"
    )
    local = settings(releaseDir=str(tmp_path))
    assert plan.source_args(local, "x86_64") == ("dir", "/var/tmp/gvisor-fleet-kubernetes-v1.37.2-amd64")
    assert plan.local_release(local, "x86_64") == tmp_path / "v1.37.2" / "amd64"


def test_command_lines():
    cp = node()
    assert argv(plan.install_command(cp, settings()))[3:7] == ["install", "control-plane", "v1.37.2", "url"]
    assert argv(plan.network_command(cp, "10.244.0.0/16", {"10.244.1.0/24": "192.0.2.11"}))[3:] == [
        "network", "10.244.0.0/24", "10.244.0.0/16", "10.244.1.0/24=192.0.2.11",
    ]  # fmt: skip
    create, delete = plan.member_commands(cp, "m2", 600)
    assert argv(create)[3:] == ["wait-ready", "m2", "600"] and argv(delete)[3:] == ["drain", "m2", "600"]
    assert plan.parse_join(TOKEN_OUT) == {"token": "abcdef.0123456789abcdef", "ca_cert_hash": "sha256:" + "c" * 64}


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"version": "1.37"}, "gvisor-fleet:kubernetes.kubeadm.version: '1.37' is not a Kubernetes release"),
        ({"podSubnet": "10.244.0.0/26"}, "gvisor-fleet:kubernetes.kubeadm.podSubnet: '10.244.0.0/26' is too small"),
        ({"podSubnet": "10.96.0.0/16"}, "gvisor-fleet:kubernetes.kubeadm.serviceSubnet: 10.96.0.0/12 overlaps"),
        ({"addons": ["flannel"]}, "gvisor-fleet:kubernetes.kubeadm.addons"),
        ({"timeoutSeconds": 5}, "gvisor-fleet:kubernetes.kubeadm.timeoutSeconds: '5' must be a whole number"),
        ({"releaseDir": "relative/dir"}, "gvisor-fleet:kubernetes.kubeadm.releaseDir: 'relative/dir' must be"),
    ],
)
def test_bad_kubeadm_settings_name_the_key(raw, problem):
    problems: list[str] = []
    parse_kube_settings({"cluster": "kubeadm", "kubeadm": raw}, "runsc", problems)
    assert any(p.startswith(problem) for p in problems), problems


def test_kubeadm_block_without_cluster_kubeadm_is_refused():
    problems: list[str] = []
    parse_kube_settings({"kubeadm": {"version": "v1.37.2"}}, "runsc", problems)
    assert problems == [
        "gvisor-fleet:kubernetes.kubeadm: is set, but gvisor-fleet:kubernetes.cluster is 'existing'; "
        "set cluster to kubeadm"
    ]


def qemu(name: str, memory: int, cpus: int = 2) -> MachineSpec:
    return MachineSpec(name=name, arch="x86_64", backend="qemu",
                       options=QemuOptions(image="/i.qcow2", ssh_port=2200, memory_mb=memory, cpus=cpus))  # fmt: skip


def test_a_small_control_plane_is_refused_at_preview_with_the_fix():
    problems = kubeadm_problems(settings(), [qemu("cp", 1024, cpus=1), qemu("w", 1024)])
    assert problems == [
        "gvisor-fleet:machines (cp).memory: 1024 MB is below the 1700 MB kubeadm needs on a control plane; "
        "set memory: 2048, or make another machine the control plane (gvisor-fleet:kubernetes.kubeadm.controlPlane)",
        "gvisor-fleet:machines (cp).cpus: kubeadm needs 2 CPUs on a control plane; set cpus: 2",
    ]
    assert kubeadm_problems(settings(controlPlane="w"), [qemu("cp", 1024), qemu("w", 2048)]) == []
    assert kubeadm_problems(settings(controlPlane="nope"), [qemu("cp", 2048)]) == [
        "gvisor-fleet:kubernetes.kubeadm.controlPlane: no machine named 'nope'; name one of cp"
    ]


def test_a_release_dir_without_a_fleet_arch_is_refused_at_preview(tmp_path):
    (tmp_path / "v1.37.2" / "amd64").mkdir(parents=True)
    (tmp_path / "v1.37.2" / "amd64" / "SHA512SUMS").write_text("")
    arm = MachineSpec(name="w", arch="aarch64")
    assert kubeadm_problems(settings(releaseDir=str(tmp_path)), [qemu("cp", 2048)]) == []
    assert kubeadm_problems(settings(releaseDir=str(tmp_path)), [qemu("cp", 2048), arm]) == [
        f"gvisor-fleet:kubernetes.kubeadm.releaseDir: {tmp_path}/v1.37.2/arm64 has no SHA512SUMS; lay out "
        "v1.37.2/arm64/ as docs/kubernetes.md says (tests/toolchain/make-kubernetes-dir.sh makes one), or drop "
        "releaseDir to download from releaseUrl"
    ]


@pulumi.runtime.test
def test_kubeadm_cluster_graph(kmocks):
    gv = GvisorSettings()
    dep = deploy(kmocks, kube(cluster="kubeadm"), gv)
    assert dep.kubeconfig is not None

    def check(args: list[Any]) -> None:
        is_secret, kubeconfig, _ = args
        commands = {
            r.name: r
            for r in kmocks.of_type("command:remote:Command")
            if "kubeadm node agent" in r.inputs.get("stdin", "")
        }
        prefix = "kubernetes-kubeadm-"
        assert set(commands) == {prefix + n for n in (
            "m1-install", "m2-install", "m1-network", "m2-network", "m1-init", "m1-ready", "m2-join-token",
            "m2-join", "m2-member", "kubeconfig",
        )}  # fmt: skip
        for name in ("m1-install", "m2-install"):
            assert argv(commands[prefix + name].inputs["delete"])[3:] == ["reset"]
        # Each machine routes to the other's pod range through the other's address.
        assert argv(commands[prefix + "m1-network"].inputs["create"])[3:] == [
            "network", "10.244.0.0/24", "10.244.0.0/16", "10.244.1.0/24=192.0.2.11",
        ]  # fmt: skip
        assert argv(commands[prefix + "m2-network"].inputs["create"])[-1] == "10.244.0.0/24=192.0.2.10"
        init = argv(commands[prefix + "m1-init"].inputs["create"])
        assert init[3:5] == ["init", "m1"]
        cluster = list(yaml.safe_load_all(base64.b64decode(init[5])))[1]
        assert cluster["controlPlaneEndpoint"] == "192.0.2.10:6443"
        # The join config carries the token: on stdin before the script, never on the
        # command line, which the command provider prints when the step fails.
        join = commands[prefix + "m2-join"]
        assert argv(join.inputs["create"])[3:] == ["join", "m2", "600"]
        prelude, script = join.inputs["stdin"].split("\n", 1)
        assert prelude.startswith("JOIN_CONFIG=") and script == plan.node_script()
        (doc,) = yaml.safe_load_all(base64.b64decode(prelude.removeprefix("JOIN_CONFIG=")))
        assert doc["discovery"]["bootstrapToken"]["token"] == "abcdef.0123456789abcdef"
        assert doc["discovery"]["bootstrapToken"]["apiServerEndpoint"] == "192.0.2.10:6443"
        assert "abcdef" not in join.inputs["create"]
        # The token and the kubeconfig are secrets, and their steps log stderr only.
        assert (prefix + "m2-join", "stdin") in kmocks.secret_inputs
        for name in ("m2-join-token", "m2-join", "kubeconfig"):
            assert commands[prefix + name].inputs["logging"] == "stderr", name
        assert argv(commands[prefix + "kubeconfig"].inputs["create"])[3:] == [
            "kubeconfig",
            "https://192.0.2.10:6443",
            "600",
        ]
        assert argv(commands[prefix + "m2-member"].inputs["delete"])[3:5] == ["drain", "m2"]
        # Labels wait for the node to be a member of the cluster.
        assert is_secret and kubeconfig == KUBECONFIG
        patches = {r.name: r for r in kmocks.of_type("kubernetes:core/v1:NodePatch")}
        assert prefix + "m2-member" in kmocks.depends_on["kubernetes-m2-label"]
        assert set(patches) == {"kubernetes-m1-label", "kubernetes-m2-label"}

    # The verification waits for the labels, which wait for every membership.
    return pulumi.Output.all(dep.kubeconfig.is_secret(), dep.kubeconfig, dep.verification).apply(check)


CONTAINERD_DUMPS = {
    # containerd 2 with Debian's config (version 2, migrated on load): what the vm tier's images run.
    "debian": ("version = 3\n[plugins]\n  [plugins.'io.containerd.cri.v1.runtime']\n"
               "    [plugins.'io.containerd.cri.v1.runtime'.cni]\n      bin_dirs = ['/usr/lib/cni']\n"
               "      conf_dir = '/etc/cni/net.d'\n  [plugins.'io.containerd.image-verifier.v1.bindir']\n"
               "    bin_dir = '/opt/containerd/image-verifier/bin'\n", "/usr/lib/cni"),
    "containerd 2 default": ('version = 3\n[plugins."io.containerd.cri.v1.runtime".cni]\n'
                             '  bin_dirs = ["/opt/cni/bin", "/usr/local/cni"]\n', "/opt/cni/bin"),
    "containerd 1 config": ('version = 2\n[plugins."io.containerd.image-verifier.v1.bindir"]\n'
                            '  bin_dir = "/opt/containerd/image-verifier/bin"\n'
                            '[plugins."io.containerd.grpc.v1.cri".cni]\n  bin_dir = "/usr/libexec/cni"\n',
                            "/usr/libexec/cni"),
    "no cni section": ("version = 3\n", "/opt/cni/bin"),
}  # fmt: skip


@pytest.mark.parametrize("name", CONTAINERD_DUMPS)
def test_the_cni_plugins_go_where_containerds_cri_looks_for_them(name: str, tmp_path):
    dump, want = CONTAINERD_DUMPS[name]
    # A stand-in `containerd` that prints the dump; the script's own function reads it.
    fake = tmp_path / "containerd"
    fake.write_text(f"#!/bin/sh\ncat <<'TOML'\n{dump}TOML\n")
    fake.chmod(0o755)
    function = shell_function(plan.node_script(), "containerd_cni_dir")
    line = f"CNI_BIN=/opt/cni/bin\n{function}containerd_cni_dir"
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    out = subprocess.run(["sh", "-c", line], env=env, capture_output=True, text=True, check=True)
    assert out.stdout == f"{want}\n"
