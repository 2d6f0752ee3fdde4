"""The private LAN between a stack's QEMU VMs, and the machines' private addresses (pure).

Each VM with a `lanAddress` gets a second virtio NIC whose frames QEMU sends
as UDP datagrams to a multicast group on this machine's loopback interface
(`-netdev socket,mcast=...,localaddr=127.0.0.1`): every VM of the segment
joins that group, so together they form one Ethernet segment that never
leaves the machine. The group and port are a function of the Pulumi project
and stack, so two stacks never share a LAN; the NIC's MAC is a function of
the machine name, so the guest can match it.

In the guest, cloud-init sets the address twice over: a systemd-networkd
`.network` file matching the MAC (read at every boot, and on a networkd
restart), and a `bootcmd` that sets it with `ip` at every boot (for images
without networkd, and for the first boot, where networkd started before the
file was written).

The address rules (`lan_address_problem`, `private_address_problem`,
`lan_problems`) are the settings layer's checks (components/fleet/specs.py).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from components.kinds import documentation_problem

# Organisation-local multicast scope (RFC 2365): 2^18 groups to pick from.
GROUPS = ipaddress.IPv4Network("239.192.0.0/14")
# UDP ports below the SSH forwards (20000+) and the kernel's ephemeral range.
PORT_BASE, PORT_SPAN = 10000, 10000
NETDEV = "lan"
# Lexically before the images' own catch-all (tests/toolchain/build-vm-images.sh
# writes 50-dhcp.network for en* eth*) and netplan's 10-netplan-*: the first
# file that matches a link configures it.
NETWORK_FILE = "/etc/systemd/network/10-gvisor-fleet-lan.network"
PRIVATE_RANGES = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
# QEMU user networking behind every VM's first NIC (SSH forward, internet).
USER_NETWORK = ipaddress.IPv4Network("10.0.2.0/24")
EXAMPLE = "192.168.76.10/24"


@dataclass(frozen=True)
class LanSegment:
    """Where a stack's LAN frames travel: a multicast group and UDP port on 127.0.0.1."""

    group: str
    port: int


@dataclass(frozen=True)
class LanNic:
    """One VM's LAN NIC as the guest configures it."""

    mac: str
    address: str  # CIDR, e.g. 192.168.76.10/24


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def lan_segment(project: str, stack: str) -> LanSegment:
    """The segment of one stack: the same project and stack always get the same group and port."""
    d = _digest(f"gvisor-fleet-lan/{project}/{stack}")
    group = GROUPS[int.from_bytes(d[:4], "big") % GROUPS.num_addresses]
    return LanSegment(group=str(group), port=PORT_BASE + int.from_bytes(d[4:8], "big") % PORT_SPAN)


def lan_mac(name: str) -> str:
    """A stable MAC for a machine's LAN NIC: locally administered (02:...), unicast, 40 bits of the name's hash."""
    d = _digest(f"gvisor-fleet-lan/{name}")
    return ":".join(f"{b:02x}" for b in (0x02, *d[:5]))


def netdev_args(segment: LanSegment, mac: str) -> list[str]:
    """QEMU's arguments for the LAN NIC."""
    return [
        "-netdev", f"socket,id={NETDEV},mcast={segment.group}:{segment.port},localaddr=127.0.0.1",
        "-device", f"virtio-net-pci,netdev={NETDEV},mac={mac},romfile=",
    ]  # fmt: skip


def networkd_file(nic: LanNic) -> str:
    """The guest's systemd-networkd configuration of the LAN NIC: the static address only."""
    return (
        f"[Match]\nMACAddress={nic.mac}\n\n"
        # The LAN must not hold up boot (a peer may not exist yet).
        "[Link]\nRequiredForOnline=no\n\n"
        # No IPv6 link-local: a multicast segment echoes a VM's own frames, so
        # duplicate address detection would always fail.
        f"[Network]\nAddress={nic.address}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
    )


def _on_nic(nic: LanNic, command: str) -> str:
    """Shell that runs `command` with "$link" set to the name of the NIC with the LAN MAC."""
    return (
        "for d in /sys/class/net/*; do "
        f'if [ "$(cat "$d/address" 2>/dev/null)" = {nic.mac} ]; then link="${{d##*/}}"; {command}; fi; done'
    )


def bootcmd(nic: LanNic) -> str:
    """Shell run at every boot: find the NIC by its MAC, bring it up, set the address."""
    return _on_nic(nic, f'ip link set dev "$link" up && ip address replace {nic.address} dev "$link"')


def reload(nic: LanNic) -> str:
    """Shell run once, after write_files: networkd configures the NIC from the new file from then on
    (at the first boot it matched the image's own file, read before the new one was written)."""
    return (
        "if systemctl is-active --quiet systemd-networkd 2>/dev/null; then networkctl reload && "
        + _on_nic(nic, 'networkctl reconfigure "$link"')
        + "; fi"
    )


def cloud_config(nic: LanNic) -> dict[str, list[object]]:
    """The user-data keys that give the guest its LAN address."""
    return {
        "write_files": [{"path": NETWORK_FILE, "permissions": "0644", "content": networkd_file(nic)}],
        "bootcmd": [bootcmd(nic)],
        "runcmd": [reload(nic)],
    }


def lan_address_problem(value: object) -> str | None:
    """Why `value` is not a LAN address: a private IPv4 address with its prefix length, off QEMU's user network."""
    text = str(value)
    fix = f"write a private IPv4 address with its prefix length, e.g. {EXAMPLE}"
    if "/" not in text:
        return f"'{text}' has no prefix length; {fix}"
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        return f"'{text}' is not an address with a prefix length; {fix}"
    if not isinstance(iface, ipaddress.IPv4Interface):
        return f"'{text}' is IPv6; the LAN is IPv4: {fix}"
    net, ip = iface.network, iface.ip
    if not any(net.subnet_of(r) for r in PRIVATE_RANGES):
        ranges = ", ".join(str(r) for r in PRIVATE_RANGES)
        return f"'{text}' is not in a private range ({ranges}); {fix}"
    if not 8 <= net.prefixlen <= 30:
        return f"'{text}': the prefix length must be from /8 to /30 (room for the stack's VMs); {fix}"
    if ip in (net.network_address, net.broadcast_address):
        return f"'{text}' is the network's own or broadcast address, not a host's; {fix}"
    if net.overlaps(USER_NETWORK):
        return (
            f"'{text}' overlaps {USER_NETWORK}, the network of QEMU's user networking behind every VM's "
            f"first NIC (SSH, internet); {fix}"
        )
    return None


def lan_ip(address: str) -> str:
    """The address part of a LAN address: 192.168.76.10/24 -> 192.168.76.10."""
    return str(ipaddress.IPv4Interface(address).ip)


def private_address_problem(value: object) -> str | None:
    """Why `value` is not an address other machines can reach this one on."""
    text = str(value)
    fix = "write the IPv4 or IPv6 address the other machines reach this one on, e.g. 10.0.0.5"
    if "/" in text:
        return f"'{text}' has a prefix length; write the address alone, e.g. {text.split('/')[0]}"
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return f"'{text}' is not an IPv4 or IPv6 address; {fix}"
    why = documentation_problem(text)
    if why:
        return f"{why}; {fix}"
    for kind, bad in (("loopback", ip.is_loopback), ("unspecified", ip.is_unspecified),
                      ("multicast", ip.is_multicast), ("link-local", ip.is_link_local)):  # fmt: skip
        if bad:
            return f"'{text}' is a {kind} address, which other machines cannot reach; {fix}"
    return None


@dataclass(frozen=True)
class LanMember:
    """A machine on the LAN, as the cross-machine rules see it."""

    at: str  # its config path, e.g. gvisor-fleet:machines[1]
    name: str
    address: str  # CIDR, already valid


def lan_problems(members: Sequence[LanMember]) -> list[str]:
    """The rules between the stack's LAN addresses: one subnet, each address once."""
    problems: list[str] = []
    if not members:
        return problems
    first = members[0]
    subnet = ipaddress.IPv4Interface(first.address).network
    owners: dict[ipaddress.IPv4Address, str] = {}
    for m in members:
        iface = ipaddress.IPv4Interface(m.address)
        key = f"{m.at}.lanAddress"
        if iface.network != subnet:
            problems.append(
                f"{key}: '{m.address}' is not on the stack's LAN {subnet} (machine '{first.name}' has "
                f"{first.address}); all LAN addresses of a stack share one subnet: write an address in {subnet} "
                f"with /{subnet.prefixlen}"
            )
        elif iface.ip in owners:
            problems.append(
                f"{key}: {iface.ip} is also the LAN address of machine '{owners[iface.ip]}'; "
                "give each machine its own address"
            )
        owners.setdefault(iface.ip, m.name)
    return problems
