"""The private LAN between the VMs (components/fleet/lan.py), on the real pair of VMs (no mocks).

Each VM reaches the other on its LAN address (ICMP, and TCP to the other's
sshd), the address sits on the NIC with the machine's LAN MAC, and
systemd-networkd puts it back from the seeded file after the address is
flushed and networkd restarted (what a node script or an operator may do).
"""

from __future__ import annotations

import shlex
import time

import pytest

from components.fleet.lan import NETWORK_FILE, lan_mac
from tests.vm.qemu_vms import Vm

pytestmark = pytest.mark.vm


def lan_link(vm: Vm) -> str:
    """The name of the VM's LAN NIC, found by its MAC."""
    mac = lan_mac(vm.name)
    script = f'for d in /sys/class/net/*; do if [ "$(cat "$d/address")" = {mac} ]; then echo "${{d##*/}}"; fi; done'
    out = vm.ssh(script)
    assert out.returncode == 0 and out.stdout.strip(), f"{vm.name}: no NIC with MAC {mac}: {out.stderr}"
    return out.stdout.strip()


def addresses(vm: Vm, link: str) -> list[str]:
    out = vm.ssh(f"ip -o -4 address show dev {shlex.quote(link)}")
    assert out.returncode == 0, f"{vm.name}: {out.stderr}"
    return [line.split()[3] for line in out.stdout.splitlines()]


def network_file(vm: Vm, link: str) -> str:
    """The .network file networkd configures `link` from, as `networkctl status` names it."""
    out = vm.ssh(f"networkctl status {shlex.quote(link)}")
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip().startswith("Network File:")]
    return lines[0] if lines else f"(none) {out.stdout}{out.stderr}"


def reaches(vm: Vm, peer: Vm) -> None:
    """ICMP and TCP (the peer's sshd banner) from `vm` to the peer's LAN address."""
    ping = vm.ssh(f"sudo -n busybox ping -c 3 -W 10 {peer.lan_ip}", timeout=120)
    assert ping.returncode == 0, f"{vm.name} cannot ping {peer.name} at {peer.lan_ip}:\n{ping.stdout}{ping.stderr}"
    banner = vm.ssh(f"busybox nc -w 20 {peer.lan_ip} 22 </dev/null | head -n 1", timeout=120)
    assert banner.stdout.startswith("SSH-2.0-"), (
        f"{vm.name} got no SSH banner from {peer.name} at {peer.lan_ip}:22: {banner.stdout!r} {banner.stderr}"
    )


def test_lan_each_vm_reaches_the_other_and_networkd_keeps_the_address(vms: dict[str, Vm]):
    pair = list(vms.values())
    assert len(pair) == 2, "the LAN test needs both VMs"
    links = {vm.name: lan_link(vm) for vm in pair}
    for vm in pair:
        assert addresses(vm, links[vm.name]) == [vm.lan_address], f"{vm.name}: the LAN NIC has the wrong address"
        # Since the first boot's cloud-init run, networkd configures the NIC from the seeded file.
        assert NETWORK_FILE in network_file(vm, links[vm.name]), f"{vm.name}: networkd did not take over the NIC"
    for vm, peer in (pair, pair[::-1]):
        reaches(vm, peer)

    # Flush the address and restart networkd: the seeded .network file alone must put it back.
    for vm in pair:
        link = shlex.quote(links[vm.name])
        out = vm.ssh(f"sudo -n ip address flush dev {link} && sudo -n systemctl restart systemd-networkd")
        assert out.returncode == 0, f"{vm.name}: {out.stderr}"
    for vm in pair:
        deadline = time.monotonic() + 120
        while addresses(vm, links[vm.name]) != [vm.lan_address] and time.monotonic() < deadline:
            time.sleep(2)
        assert addresses(vm, links[vm.name]) == [vm.lan_address], f"{vm.name}: networkd did not restore the address"
        assert NETWORK_FILE in network_file(vm, links[vm.name]), f"{vm.name}: the LAN NIC is not set by the file"
    for vm, peer in (pair, pair[::-1]):
        reaches(vm, peer)
