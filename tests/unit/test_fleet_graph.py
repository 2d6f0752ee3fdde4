"""The fleet's resource graph per backend, under Pulumi mocks (rules, not counts)."""

from __future__ import annotations

import shlex
from typing import Any

import pulumi
import pytest
import yaml

from components.fleet.build import Fleet, build_fleet
from components.fleet.keys import generate_ed25519, key_material
from components.fleet.machine import Machine
from components.fleet.qemu import QemuHost
from components.fleet.specs import parse_machines
from components.gvisor.host import GvisorHost
from components.gvisor.settings import GvisorSettings
from tests.unit.fleet_mocks import FleetMocks, fake_aws

EDGE_KEY = generate_ed25519("").public_key  # a host key that decodes, as load_settings requires

FILES = {"/img/disk.qcow2", "/img/vmlinuz", "/img/initrd.img"}
HOST = QemuHost(arch="x86_64", kvm_works=lambda arch: arch == "x86_64")
DYNAMIC = "pulumi-python:dynamic:Resource"


@pytest.fixture
def mocks() -> FleetMocks:
    m = FleetMocks()
    pulumi.runtime.set_mocks(m, project="gvisor-fleet", stack="unit", preview=False)
    return m


def specs(items: list[dict[str, Any]], host_arch: str = "x86_64"):
    problems: list[str] = []
    out = parse_machines(items, False, problems, host_arch=host_arch, exists=FILES.__contains__)
    assert problems == []
    return out


def qemu_item(name: str, arch: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name, "backend": "qemu", "arch": arch, "image": "/img/disk.qcow2",
        "kernel": "/img/vmlinuz", "initrd": "/img/initrd.img", **extra,
    }  # fmt: skip


LOCAL = [qemu_item("vm-amd64", "x86_64"), qemu_item("vm-arm64", "aarch64")]


SECRET_SIG = "4dabf18193072939515e22adb298388d"


def plain(value: Any) -> Any:
    """A mock input without its secret wrapper; fails if it was not secret."""
    assert isinstance(value, dict) and value.get(SECRET_SIG), f"expected a secret, got {str(value)[:60]}"
    return value["value"]


def start_argv(create: str) -> tuple[dict[str, str], list[str]]:
    words = shlex.split(create)
    sep = words.index("--")
    return dict(zip(words[3:sep:2], words[4:sep:2], strict=True)), words[sep + 1 :]


def resolved(*outputs: Any, machines: list[Machine] = ()) -> pulumi.Output[list[Any]]:
    """The values of `outputs`, once every machine's resources (launcher, readiness probe) are registered."""
    settled = [pulumi.Output.from_input(m.instance) for m in machines if m.instance is not None]
    settled += [r.urn for m in machines for r in m.ready]
    return pulumi.Output.all(*[pulumi.Output.from_input(o) for o in outputs], *settled).apply(
        lambda values: values[: len(outputs)]
    )


@pulumi.runtime.test
def test_qemu_fleet_both_arches_one_launcher_each(mocks):
    fleet = Fleet("fleet", specs(LOCAL), None, qemu_host=HOST)
    amd, arm = fleet.machines

    def check(args):
        amd_host_key, arm_host_key, login_public = args
        vms = mocks.named("command:local:Command")
        assert set(vms) == {"vm-amd64-vm", "vm-arm64-vm"}
        for vm, arch, accel, host_key in (
            (vms["vm-amd64-vm"], "x86_64", "kvm", amd_host_key),
            (vms["vm-arm64-vm"], "aarch64", "tcg,thread=multi,tb-size=256", arm_host_key),
        ):
            opts, argv = start_argv(vm.inputs["create"])
            assert argv[0] == f"qemu-system-{arch}", vm.name
            # Native arch on KVM when it works, the other arch emulated.
            assert argv[argv.index("-accel") + 1] == accel, vm.name
            assert opts["--host-key"] == key_material(host_key), f"{vm.name} must wait for its pinned host key"
            assert shlex.split(vm.inputs["delete"])[2] == "stop", f"{vm.name}: destroy must stop the VM"
            seed = yaml.safe_load(plain(vm.inputs["stdin"]))
            assert key_material(seed["ssh_keys"]["ed25519_public"]) == host_key
            assert seed["users"][0]["ssh_authorized_keys"] == [login_public]
            assert "PRIVATE KEY" not in vm.inputs["create"], f"{vm.name}: a private key on a command line"
        ports = {start_argv(v.inputs["create"])[0]["--port"] for v in vms.values()}
        assert len(ports) == 2

    return resolved(amd.connection.host_key, arm.connection.host_key, fleet.public_key, machines=fleet.machines).apply(
        check
    )


@pulumi.runtime.test
def test_qemu_connections_pin_host_keys_and_keep_the_key_secret(mocks):
    fleet = Fleet("fleet", specs(LOCAL), None, qemu_host=HOST)
    amd = fleet.machines[0]
    conn = amd.connection

    def check(args):
        host, port, user, key_secret, host_key, private_key, pub = args
        assert (host, user) == ("127.0.0.1", "fleet")
        assert port == start_argv(mocks.named("command:local:Command")["vm-amd64-vm"].inputs["create"])[0]["--port"]
        assert key_secret, "the SSH private key must be a Pulumi secret"
        assert host_key.startswith("ssh-ed25519 ") and len(host_key.split()) == 2
        assert key_material(pub) == key_material(generate_public(private_key))
        keys = mocks.of_type(DYNAMIC)
        assert sorted(k.name for k in keys) == ["ssh-login-key", "vm-amd64-host-key", "vm-arm64-host-key"]

    return resolved(
        conn.host, pulumi.Output.from_input(conn.port).apply(str), conn.user,
        pulumi.Output.from_input(conn.private_key).is_secret(), conn.host_key, conn.private_key, fleet.public_key,
        machines=fleet.machines,
    ).apply(check)  # fmt: skip


def generate_public(private_key: str) -> str:
    from components.fleet.keys import public_key_of

    return public_key_of(private_key)


@pulumi.runtime.test
def test_seed_is_secret(mocks):
    fleet = Fleet("fleet", specs(LOCAL[:1]), None, qemu_host=HOST)
    (child,) = [c for c in fleet._childResources if type(c).__name__ == "QemuMachine"]  # type: ignore[attr-defined]
    is_secret = pulumi.Output.from_input(child.vm.stdin).is_secret()
    return pulumi.Output.all(is_secret).apply(lambda s: _assert(s[0], "user-data is a secret"))


def _assert(cond: bool, why: str) -> None:
    assert cond, why


@pulumi.runtime.test
def test_ready_waits_for_the_vm_and_host_layer_waits_for_ready(mocks):
    (machine,) = build_fleet(specs(LOCAL[:1]), None)
    (ready,) = machine.ready
    host = GvisorHost(machine.name, machine, GvisorSettings())

    def check(args):
        instance, _ = args
        assert instance == "uuid-vm-amd64", "the launcher's instance id is handed on"
        readies = mocks.named("command:remote:Command")
        assert "cloud-init status --wait" in readies["vm-amd64-ssh-ready"].inputs["create"]
        install = shlex.split(readies["vm-amd64-install"].inputs["create"])
        assert install[install.index("preflight") + 1] == "x86_64"
        assert "-iuuid-vm-amd64" in install, "a new VM instance runs the install step again"
        assert isinstance(ready, pulumi.Resource)

    return resolved(machine.instance, host.facts, machines=[machine]).apply(check)


@pulumi.runtime.test
def test_supplied_private_key_is_used_and_no_key_is_made(mocks):
    supplied = generate_ed25519("mine")
    fleet = Fleet("fleet", specs(LOCAL[:1]), supplied.private_key, qemu_host=HOST)

    def check(args):
        (pub,) = args
        assert key_material(pub) == key_material(supplied.public_key)
        assert [k.name for k in mocks.of_type(DYNAMIC)] == ["vm-amd64-host-key"]
        seed = yaml.safe_load(plain(mocks.named("command:local:Command")["vm-amd64-vm"].inputs["stdin"]))
        assert key_material(seed["users"][0]["ssh_authorized_keys"][0]) == key_material(supplied.public_key)

    return resolved(fleet.public_key, machines=fleet.machines).apply(check)


@pulumi.runtime.test
def test_static_and_created_machines_mix(mocks):
    supplied = generate_ed25519("mine")
    items = [{"name": "edge", "address": "10.0.2.10", "arch": "aarch64", "hostKey": EDGE_KEY}, LOCAL[0]]
    problems: list[str] = []
    machines = build_fleet(
        parse_machines(items, True, problems, host_arch="x86_64", exists=FILES.__contains__), supplied.private_key
    )
    assert problems == []
    edge = machines[0]
    assert isinstance(edge, Machine) and edge.ready == () and edge.instance is None
    return resolved(edge.connection.host, edge.connection.host_key).apply(
        lambda a: _assert(a == ["10.0.2.10", EDGE_KEY], str(a))
    )


def test_empty_fleet_makes_nothing(mocks):
    assert build_fleet([], None) == []
    assert mocks.resources == []


@pulumi.runtime.test
def test_multipass_connection_host_comes_from_the_launcher(mocks):
    items = [{"name": "mp1", "backend": "multipass", "arch": "x86_64", "image": "22.04", "memory": 2048}]
    (machine,) = build_fleet(specs(items), None)

    def check(args):
        host, host_key = args
        assert host == "10.1.2.3"
        vm = mocks.named("command:local:Command")["mp1-vm"]
        words = shlex.split(vm.inputs["create"])
        assert words[:5] == ["sh", "components/fleet/scripts/multipass-vm.sh", "start", "mp1", "22.04"]
        assert words[6] == "2048" and words[-1] == host_key
        assert shlex.split(vm.inputs["delete"])[2:] == ["stop", "mp1"]
        assert yaml.safe_load(plain(vm.inputs["stdin"]))["ssh_keys"]["ed25519_public"].startswith(host_key)

    return resolved(machine.connection.host, machine.connection.host_key, machines=[machine]).apply(check)


def aws_item(name: str, arch: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "backend": "aws", "arch": arch, "allowedCidr": "10.20.0.0/24", **extra}


@pulumi.runtime.test
def test_aws_graph_x86_and_graviton(mocks):
    items = [aws_item("ec2-amd64", "x86_64"), aws_item("ec2-arm64", "aarch64", diskSize="30G")]
    fleet = Fleet("fleet", specs(items), None, aws_sdk=fake_aws())
    amd, arm = fleet.machines

    def check(args):
        amd_host, arm_host, login_public = args
        assert (amd_host, arm_host) == ("198.51.100.7", "198.51.100.7")
        (group,) = mocks.of_type("aws:ec2/securityGroup:SecurityGroup")  # same region and CIDR: shared
        ingress = group.inputs["ingress"]
        assert ingress == [
            {"protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_blocks": ["10.20.0.0/24"],
             "description": "SSH (gvisor-fleet)"},
        ], f"{group.name}: only SSH, only from the configured network"  # fmt: skip
        (key_pair,) = mocks.of_type("aws:ec2/keyPair:KeyPair")
        assert key_pair.inputs["public_key"] == key_material(login_public)
        instances = mocks.named("aws:ec2/instance:Instance")
        assert instances["ec2-amd64"].inputs["instance_type"] == "t3.small"
        assert instances["ec2-arm64"].inputs["instance_type"] == "t4g.small"
        assert instances["ec2-arm64"].inputs["root_block_device"] == {"volume_size": 30, "volume_type": "gp3"}
        for inst in instances.values():
            assert inst.inputs["ami"] == "ami-0123456789abcdef0"
            assert inst.inputs["metadata_options"] == {"http_tokens": "required"}
            assert plain(inst.inputs["user_data"]).startswith("#cloud-config"), inst.name
        amis = {c.args["filters"][1]["values"][0]: c.args for c in mocks.calls if c.token.endswith("getAmi")}
        assert set(amis) == {"x86_64", "arm64"}
        assert amis["arm64"]["filters"][0]["values"] == ["debian-12-arm64-*"]
        assert amis["arm64"]["owners"] == ["136693071363"]

    return resolved(amd.connection.host, arm.connection.host, fleet.public_key, machines=fleet.machines).apply(check)


@pulumi.runtime.test
def test_aws_regions_get_their_own_provider_key_pair_and_group(mocks):
    items = [
        aws_item("a", "x86_64", region="eu-west-1"),
        aws_item("b", "aarch64", region="us-east-1", subnetId="subnet-0123456789abcdef0", ami="ami-0fedcba987654321a"),
    ]
    fleet = Fleet("fleet", specs(items), None, aws_sdk=fake_aws())

    def check(_):
        providers = mocks.of_type("pulumi:providers:aws")
        assert sorted(p.inputs["region"] for p in providers) == ["eu-west-1", "us-east-1"]
        assert len(mocks.of_type("aws:ec2/keyPair:KeyPair")) == 2
        groups = mocks.named("aws:ec2/securityGroup:SecurityGroup")
        assert len(groups) == 2
        b = mocks.named("aws:ec2/instance:Instance")["b"]
        assert b.inputs["ami"] == "ami-0fedcba987654321a" and b.inputs["subnet_id"] == "subnet-0123456789abcdef0"
        assert [g.inputs.get("vpc_id") for g in groups.values() if "us-east-1" in g.name] == ["vpc-0abc"]
        assert not [c for c in mocks.calls if c.token.endswith("getAmi") and "arm64" in str(c.args)]

    return resolved(*[m.connection.host for m in fleet.machines], machines=fleet.machines).apply(check)


def test_aws_without_pulumi_aws_says_how_to_install(mocks, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_aws(name: str, *a: Any, **kw: Any) -> Any:
        if name == "pulumi_aws":
            raise ImportError(name)
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_aws)
    with pytest.raises(pulumi.RunError, match="pip install pulumi-aws"):
        Fleet("fleet", specs([aws_item("a", "x86_64")]), None)


def test_fleet_modules_do_not_import_pulumi_aws():
    import subprocess
    import sys

    code = "import sys, components.fleet.build, components.fleet.aws; print('pulumi_aws' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "pulumi-aws must load only when a stack has aws machines"


class RealAwsMocks(FleetMocks):
    """Mocks for the real pulumi-aws SDK: its inputs and outputs travel with camelCase names."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        rid, outputs = super().new_resource(args)
        if args.typ == "aws:ec2/instance:Instance":
            outputs.update(publicIp="198.51.100.8", privateIp="10.0.0.8", public_ip="198.51.100.8")
        elif args.typ == "aws:ec2/keyPair:KeyPair":
            outputs["keyName"] = f"{args.name}-kp"
        return rid, outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        self.calls.append(args)
        if args.token.endswith("getAmi"):
            return {"id": "ami-0123456789abcdef0"}
        if args.token.endswith("getSubnet"):
            return {"id": args.args.get("id"), "vpcId": "vpc-0abc"}
        return {}


@pulumi.runtime.test
def test_aws_graph_with_the_real_sdk():
    pytest.importorskip("pulumi_aws", reason="pulumi-aws (optional extra) is not installed")
    mocks = RealAwsMocks()
    pulumi.runtime.set_mocks(mocks, project="gvisor-fleet", stack="unit", preview=False)
    items = [
        aws_item("ec2-amd64", "x86_64"),
        aws_item("ec2-arm64", "aarch64", region="eu-west-1", subnetId="subnet-0123456789abcdef0", diskSize="30G"),
    ]
    fleet = Fleet("fleet", specs(items), None)

    def check(args):
        assert args == ["198.51.100.8", "198.51.100.8"]
        groups = mocks.of_type("aws:ec2/securityGroup:SecurityGroup")
        assert len(groups) == 2
        for group in groups:
            (rule,) = group.inputs["ingress"]
            assert (rule["protocol"], rule["fromPort"], rule["toPort"]) == ("tcp", 22, 22), group.name
            assert rule["cidrBlocks"] == ["10.20.0.0/24"], f"{group.name}: SSH open beyond the allowed CIDR"
        assert [g.inputs.get("vpcId") for g in groups if "eu-west-1" in g.name] == ["vpc-0abc"]
        instances = mocks.named("aws:ec2/instance:Instance")
        assert instances["ec2-amd64"].inputs["instanceType"] == "t3.small"
        assert instances["ec2-arm64"].inputs["instanceType"] == "t4g.small"
        assert instances["ec2-arm64"].inputs["rootBlockDevice"] == {"volumeSize": 30, "volumeType": "gp3"}
        for inst in instances.values():
            assert inst.inputs["metadataOptions"] == {"httpTokens": "required"}, inst.name
            assert plain(inst.inputs["userData"]).startswith("#cloud-config"), inst.name
            assert inst.inputs["keyName"].endswith("-kp")
        amis = sorted(c.args["filters"][0]["values"][0] for c in mocks.calls if c.token.endswith("getAmi"))
        assert amis == ["debian-12-amd64-*", "debian-12-arm64-*"]
        providers = mocks.of_type("pulumi:providers:aws")
        assert [p.inputs["region"] for p in providers] == ["eu-west-1"]

    return resolved(*[m.connection.host for m in fleet.machines], machines=fleet.machines).apply(check)
