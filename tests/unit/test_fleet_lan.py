"""The LAN between a stack's QEMU VMs and every machine's private address: pure parts, settings, graphs."""

from __future__ import annotations

import configparser
import ipaddress
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from components.fleet.build import Fleet, build_fleet
from components.fleet.cloudinit import user_data
from components.fleet.keys import generate_ed25519
from components.fleet.lan import (
    GROUPS,
    NETWORK_FILE,
    PORT_BASE,
    PORT_SPAN,
    LanNic,
    LanSegment,
    bootcmd,
    lan_mac,
    lan_segment,
)
from components.fleet.qemu import qemu_argv
from components.fleet.specs import QemuOptions, parse_machines
from tests.unit.fleet_mocks import FleetMocks, fake_aws
from tests.unit.test_fleet_graph import HOST, plain, qemu_item, resolved, start_argv

IMAGES = {"/img/disk.qcow2", "/img/vmlinuz", "/img/initrd.img"}
OPTS = QemuOptions(image="/img/disk.qcow2", ssh_port=20022, kernel="/img/vmlinuz", initrd="/img/initrd.img")
SEGMENT = LanSegment(group="239.192.7.9", port=12345)
KEYS = generate_ed25519("login"), generate_ed25519("host")


def flag(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == name]


# --- segment and MAC --------------------------------------------------------------------------------------------


def test_segment_is_stable_and_in_the_organisation_local_multicast_scope():
    seg = lan_segment("gvisor-fleet", "local")
    assert seg == lan_segment("gvisor-fleet", "local")
    assert ipaddress.IPv4Address(seg.group) in GROUPS and ipaddress.IPv4Address(seg.group).is_multicast
    assert PORT_BASE <= seg.port < PORT_BASE + PORT_SPAN


def test_segments_differ_per_stack_and_per_project():
    stacks = [("gvisor-fleet", s) for s in ("local", "qemu", "dev", "ci", "staging")] + [("other", "local")]
    segments = [lan_segment(p, s) for p, s in stacks]
    assert len({s.group for s in segments}) == len(stacks)
    assert len({s.port for s in segments}) == len(stacks)
    # The join of project and stack cannot make two stacks one segment.
    assert lan_segment("a-b", "c") != lan_segment("a", "b-c")


def test_mac_is_stable_distinct_unicast_and_locally_administered():
    names = ("vm-amd64", "vm-arm64", "node-1", "node-2", "vm-x86-64", "vm-aarch64")
    macs = [lan_mac(n) for n in names]
    assert macs[0] == lan_mac("vm-amd64")
    assert len(set(macs)) == len(names)
    for mac in macs:
        octets = [int(o, 16) for o in mac.split(":")]
        assert len(octets) == 6 and mac == mac.lower()
        assert octets[0] & 0x02, f"{mac}: locally administered bit"
        assert not octets[0] & 0x01, f"{mac}: must be unicast"
        assert mac != "52:54:00:12:34:56", "QEMU's default MAC, which the first NIC has"


# --- QEMU command line ------------------------------------------------------------------------------------------


def test_argv_without_a_lan_has_only_the_user_network():
    argv = qemu_argv("vm1", "x86_64", "tcg", OPTS, "/state/vm1", SEGMENT)
    assert flag(argv, "-netdev") == ["user,id=net0,hostfwd=tcp:127.0.0.1:20022-:22"]
    assert [d for d in flag(argv, "-device") if d.startswith("virtio-net")] == ["virtio-net-pci,netdev=net0,romfile="]


def test_argv_with_a_lan_adds_a_second_nic_on_the_segment():
    o = QemuOptions(**{**OPTS.__dict__, "lan_address": "192.168.76.10/24"})
    argv = qemu_argv("vm1", "x86_64", "tcg", o, "/state/vm1", SEGMENT)
    assert flag(argv, "-netdev") == [
        "user,id=net0,hostfwd=tcp:127.0.0.1:20022-:22",
        "socket,id=lan,mcast=239.192.7.9:12345,localaddr=127.0.0.1",  # loopback only: never leaves the machine
    ]
    nics = [d for d in flag(argv, "-device") if d.startswith("virtio-net")]
    assert nics == ["virtio-net-pci,netdev=net0,romfile=", f"virtio-net-pci,netdev=lan,mac={lan_mac('vm1')},romfile="]
    # Everything before -daemonize: QEMU takes the NIC arguments in any order, the launcher only its own.
    assert argv.index("-daemonize") > argv.index("socket,id=lan,mcast=239.192.7.9:12345,localaddr=127.0.0.1")


def test_argv_with_a_lan_needs_the_segment():
    o = QemuOptions(**{**OPTS.__dict__, "lan_address": "192.168.76.10/24"})
    with pytest.raises(ValueError, match="no LAN segment"):
        qemu_argv("vm1", "x86_64", "tcg", o, "/state/vm1")


# --- cloud-init -------------------------------------------------------------------------------------------------


def seed(lan: LanNic | None) -> dict[str, Any]:
    login, host = KEYS
    text = user_data("vm1", "fleet", login.public_key, host.private_key, host.public_key, lan)
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    return doc


def test_user_data_without_a_lan_has_no_network_parts():
    doc = seed(None)
    assert not {"write_files", "bootcmd", "runcmd"} & set(doc)


def test_user_data_writes_a_networkd_file_matching_the_mac_before_the_images_catch_all():
    nic = LanNic(lan_mac("vm1"), "192.168.76.10/24")
    (entry,) = seed(nic)["write_files"]
    assert entry["path"] == NETWORK_FILE and entry["permissions"] == "0644"
    name = Path(NETWORK_FILE).name
    # networkd uses the first file (by name) that matches a link: before the images'
    # 50-dhcp.network (en* eth*) and before netplan's 10-netplan-*.
    assert sorted([name, "50-dhcp.network", "10-netplan-ens3.network"])[0] == name
    ini = configparser.ConfigParser()
    ini.optionxform = str  # type: ignore[assignment,method-assign]
    ini.read_string(entry["content"])
    assert dict(ini["Match"]) == {"MACAddress": nic.mac}
    assert ini["Network"]["Address"] == "192.168.76.10/24"
    assert ini["Network"]["LinkLocalAddressing"] == "no"
    assert ini["Link"]["RequiredForOnline"] == "no"


def run_on_fake_guest(tmp_path: Path, script: str, mac: str, tools: dict[str, int]) -> list[str]:
    """Runs guest shell against a fake /sys/class/net (the LAN NIC is enp0s3) with stub tools that record
    their arguments and exit with the given status; returns the calls."""
    net = tmp_path / "net"
    for link, address in (("enp0s2", "52:54:00:12:34:56"), ("enp0s3", mac), ("lo", "00:00:00:00:00:00")):
        (net / link).mkdir(parents=True, exist_ok=True)
        (net / link / "address").write_text(address + "\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "calls"
    calls.write_text("")
    for tool, status in tools.items():
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "$0 $*" >> {shlex.quote(str(calls))}\nexit {status}\n')
        (bin_dir / tool).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    out = subprocess.run(["sh", "-c", script.replace("/sys/class/net", str(net))], env=env, capture_output=True)
    assert out.returncode == 0, out.stderr
    return [line.replace(f"{bin_dir}/", "") for line in calls.read_text().splitlines()]


def test_user_data_bootcmd_sets_the_address_on_the_nic_with_that_mac(tmp_path: Path):
    nic = LanNic(lan_mac("vm1"), "192.168.76.10/24")
    (command,) = seed(nic)["bootcmd"]
    assert command == bootcmd(nic)
    assert run_on_fake_guest(tmp_path, command, nic.mac, {"ip": 0}) == [
        "ip link set dev enp0s3 up",
        "ip address replace 192.168.76.10/24 dev enp0s3",
    ]


def test_user_data_runcmd_hands_the_nic_to_networkd_where_it_runs(tmp_path: Path):
    nic = LanNic(lan_mac("vm1"), "192.168.76.10/24")
    (command,) = seed(nic)["runcmd"]
    tools = {"systemctl": 0, "networkctl": 0}
    assert run_on_fake_guest(tmp_path, command, nic.mac, tools) == [
        "systemctl is-active --quiet systemd-networkd",
        "networkctl reload",
        "networkctl reconfigure enp0s3",
    ]
    # Without networkd (the bootcmd's address is all there is), it does nothing.
    tools["systemctl"] = 3
    assert run_on_fake_guest(tmp_path, command, nic.mac, tools) == ["systemctl is-active --quiet systemd-networkd"]


# --- settings ---------------------------------------------------------------------------------------------------


def parse(items: list[dict[str, Any]], has_key: bool = False):
    problems: list[str] = []
    specs = parse_machines(items, has_key, problems, host_arch="x86_64", exists=IMAGES.__contains__)
    return specs, problems


def on_lan(name: str, arch: str, address: object) -> dict[str, Any]:
    return qemu_item(name, arch, lanAddress=address)


def test_lan_addresses_parse_into_options_and_private_addresses():
    pair = [on_lan("a", "x86_64", "192.168.76.10/24"), on_lan("b", "aarch64", "192.168.76.11/24")]
    specs, problems = parse([*pair, qemu_item("c", "x86_64")])
    assert problems == []
    a, b, c = specs
    assert isinstance(a.options, QemuOptions) and a.options.lan_address == "192.168.76.10/24"
    assert (a.private_address, b.private_address, c.private_address) == ("192.168.76.10", "192.168.76.11", None)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("192.168.76.10", "has no prefix length; write a private IPv4 address with its prefix length, e.g. 192.168"),
        ("192.168.76.300/24", "is not an address with a prefix length"),
        ("fd00::10/64", "is IPv6; the LAN is IPv4"),
        ("8.8.8.10/24", "is not in a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)"),
        ("172.32.0.5/16", "is not in a private range"),
        ("192.168.76.0/24", "the network's own or broadcast address"),
        ("192.168.76.255/24", "the network's own or broadcast address"),
        ("192.168.76.10/31", "prefix length must be from /8 to /30"),
        ("10.0.2.20/24", "overlaps 10.0.2.0/24, the network of QEMU's user networking"),
        ("10.1.0.5/8", "overlaps 10.0.2.0/24"),
        (24, "is a number, not a string"),
    ],
)
def test_lan_address_mistakes_name_the_key_and_the_fix(value, words):
    _, problems = parse([on_lan("a", "x86_64", value)])
    assert len(problems) == 1, problems
    assert problems[0].startswith("gvisor-fleet:machines[0].lanAddress: "), problems[0]
    assert words in problems[0], problems[0]


def test_two_machines_with_one_lan_address():
    _, problems = parse([on_lan("a", "x86_64", "192.168.76.10/24"), on_lan("b", "aarch64", "192.168.76.10/24")])
    assert problems == [
        "gvisor-fleet:machines[1].lanAddress: 192.168.76.10 is also the LAN address of machine 'a'; "
        "give each machine its own address"
    ]


@pytest.mark.parametrize("other", ["192.168.77.11/24", "192.168.76.11/16"])
def test_lan_addresses_of_a_stack_share_one_subnet(other):
    lan = [on_lan("b", "x86_64", "192.168.76.10/24"), on_lan("c", "x86_64", other)]
    _, problems = parse([qemu_item("a", "x86_64"), *lan])
    assert len(problems) == 1, problems
    start = f"gvisor-fleet:machines[2].lanAddress: '{other}' is not on the stack's LAN 192.168.76.0/24"
    assert problems[0].startswith(f"{start} (machine 'b' has 192.168.76.10/24)"), problems[0]
    assert "write an address in 192.168.76.0/24 with /24" in problems[0]


def test_lan_address_is_a_qemu_setting_only():
    _, problems = parse([{"name": "mp", "backend": "multipass", "arch": "x86_64", "lanAddress": "192.168.76.10/24"}])
    assert len(problems) == 1 and problems[0].startswith("gvisor-fleet:machines[0].lanAddress: is not a setting of")


def static(**extra: Any) -> dict[str, Any]:
    return {"name": "edge", "address": "edge.internal", "arch": "x86_64", **extra}


@pytest.mark.parametrize("value", ["10.0.0.5", "172.20.1.1", "fd12:3456::5", "100.64.3.4"])
def test_static_private_address(value):
    specs, problems = parse([static(privateAddress=value)], has_key=True)
    assert problems == [] and specs[0].private_address == value
    assert parse([static()], has_key=True)[0][0].private_address is None


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("10.0.0.5/24", "'10.0.0.5/24' has a prefix length; write the address alone, e.g. 10.0.0.5"),
        ("edge.internal", "is not an IPv4 or IPv6 address; write the IPv4 or IPv6 address the other machines reach"),
        ("192.0.2.5", "reserved for documentation (RFC 5737)"),
        ("127.0.0.1", "is a loopback address, which other machines cannot reach"),
        ("0.0.0.0", "is a unspecified address"),
        ("fe80::1", "is a link-local address"),
        ("224.0.0.5", "is a multicast address"),
    ],
)
def test_private_address_mistakes_name_the_key_and_the_fix(value, words):
    _, problems = parse([static(privateAddress=value)], has_key=True)
    assert len(problems) == 1, problems
    assert problems[0].startswith("gvisor-fleet:machines[0].privateAddress: "), problems[0]
    assert words in problems[0], problems[0]


# --- Machine.private_address per backend, under mocks -------------------------------------------------------------


@pytest.fixture
def mocks() -> FleetMocks:
    m = FleetMocks()
    pulumi.runtime.set_mocks(m, project="gvisor-fleet", stack="unit", preview=False)
    return m


LAN_PAIR = [on_lan("vm-amd64", "x86_64", "192.168.76.10/24"), on_lan("vm-arm64", "aarch64", "192.168.76.11/24")]


@pulumi.runtime.test
def test_qemu_vms_share_the_stacks_segment_and_get_their_address_in_the_seed(mocks):
    fleet = Fleet("fleet", parse(LAN_PAIR)[0], None, qemu_host=HOST)
    amd, arm = fleet.machines
    assert (amd.private_address, arm.private_address) == ("192.168.76.10", "192.168.76.11")

    def check(_):
        segment = lan_segment("gvisor-fleet", "unit")
        vms = mocks.named("command:local:Command")
        for name, address in (("vm-amd64", "192.168.76.10/24"), ("vm-arm64", "192.168.76.11/24")):
            vm = vms[f"{name}-vm"]
            _, argv = start_argv(vm.inputs["create"])
            assert f"socket,id=lan,mcast={segment.group}:{segment.port},localaddr=127.0.0.1" in argv, name
            assert f"virtio-net-pci,netdev=lan,mac={lan_mac(name)},romfile=" in argv, name
            doc = yaml.safe_load(plain(vm.inputs["stdin"]))
            assert f"MACAddress={lan_mac(name)}" in doc["write_files"][0]["content"], name
            assert f"Address={address}" in doc["write_files"][0]["content"], name
        # No resource of its own: the LAN is two QEMU arguments and a few lines of seed.
        assert {r.typ for r in mocks.resources} == {
            "gvisor-fleet:fleet:Fleet", "gvisor-fleet:fleet:QemuMachine", "pulumi-python:dynamic:Resource",
            "command:local:Command", "command:remote:Command",
        }  # fmt: skip

    return resolved(machines=fleet.machines).apply(check)


@pulumi.runtime.test
def test_qemu_vm_without_a_lan_has_no_private_address_and_no_second_nic(mocks):
    (machine,) = build_fleet(parse([qemu_item("vm-amd64", "x86_64")])[0], None)
    assert machine.private_address is None

    def check(_):
        _, argv = start_argv(mocks.named("command:local:Command")["vm-amd64-vm"].inputs["create"])
        assert not any(a.startswith("socket,") for a in argv)

    return resolved(machines=[machine]).apply(check)


def test_static_machine_private_address(mocks):
    specs, _ = parse([static(privateAddress="10.0.0.5"), static(name="edge2")], has_key=True)
    edge, edge2 = build_fleet(specs, generate_ed25519("mine").private_key)
    assert (edge.private_address, edge2.private_address) == ("10.0.0.5", None)


def test_multipass_machine_has_no_private_address(mocks):
    specs, _ = parse([{"name": "mp", "backend": "multipass", "arch": "x86_64"}])
    (machine,) = build_fleet(specs, None)
    assert machine.private_address is None


@pulumi.runtime.test
def test_aws_machine_private_address_is_the_instances_private_ip(mocks):
    specs, _ = parse([{"name": "ec2", "backend": "aws", "arch": "x86_64", "allowedCidr": "10.20.0.0/24"}])
    (machine,) = Fleet("fleet", specs, None, aws_sdk=fake_aws()).machines
    assert isinstance(machine.private_address, pulumi.Output)
    return resolved(machine.private_address, machine.connection.host, machines=[machine]).apply(
        lambda v: _equal(v, ["10.0.0.7", "198.51.100.7"])
    )


def _equal(got: object, want: object) -> None:
    assert got == want, got


def test_the_local_stack_puts_both_vms_on_one_lan_with_room_for_a_control_plane():
    stack = yaml.safe_load((Path(__file__).parents[2] / "stacks" / "Pulumi.local.yaml").read_text())
    items = stack["config"]["gvisor-fleet:machines"]
    problems: list[str] = []
    specs = parse_machines(items, False, problems, host_arch="x86_64", exists=lambda _: True)
    assert problems == []
    by_name = {s.name: s for s in specs}
    assert (by_name["vm-amd64"].private_address, by_name["vm-arm64"].private_address) == (
        "192.168.76.10",
        "192.168.76.11",
    )
    amd = by_name["vm-amd64"].options
    assert isinstance(amd, QemuOptions) and amd.memory_mb >= 1700, "kubeadm's control plane needs 1700 MB"
