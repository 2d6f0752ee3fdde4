"""The qemu backend's pure core: QEMU command lines, accel choice, launcher lines, seeds, keys."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from components.fleet.cloudinit import meta_data, user_data
from components.fleet.keys import generate_ed25519, key_material, public_key_of
from components.fleet.qemu import SCRIPT, choose_accel, launcher_command, parse_launcher_facts, qemu_argv
from components.fleet.specs import QemuOptions

OPTS = QemuOptions(image="/img/disk.qcow2", ssh_port=20022, kernel="/img/vmlinuz", initrd="/img/initrd.img")


def flag(argv: list[str], name: str) -> list[str]:
    """Every value given to a QEMU flag, in order."""
    return [argv[i + 1] for i, a in enumerate(argv) if a == name]


@pytest.mark.parametrize(
    ("arch", "accel", "binary", "machine", "cpu", "accel_arg", "console"),
    [
        ("x86_64", "tcg", "qemu-system-x86_64", "q35", "max", "tcg,thread=multi,tb-size=256", "ttyS0"),
        ("x86_64", "kvm", "qemu-system-x86_64", "q35", "host", "kvm", "ttyS0"),
        (
            "aarch64",
            "tcg",
            "qemu-system-aarch64",
            "virt",
            "max,pauth-impdef=on",
            "tcg,thread=multi,tb-size=256",
            "ttyAMA0",
        ),
        ("aarch64", "kvm", "qemu-system-aarch64", "virt,gic-version=max", "host", "kvm", "ttyAMA0"),
    ],
)
def test_argv_per_arch_and_accel(arch, accel, binary, machine, cpu, accel_arg, console):
    argv = qemu_argv("vm1", arch, accel, OPTS, "/state/vm1")
    assert argv[0] == binary
    assert flag(argv, "-machine") == [machine]
    assert flag(argv, "-cpu") == [cpu]
    assert flag(argv, "-accel") == [accel_arg]
    assert flag(argv, "-append") == [f"root=/dev/vda rw console={console}"]
    assert flag(argv, "-serial") == ["file:/state/vm1/serial.log"]


def test_argv_disks_network_and_daemon():
    argv = qemu_argv("vm1", "x86_64", "tcg", OPTS, "/state/vm1/")
    drives = flag(argv, "-drive")
    assert drives[0].startswith("file=/state/vm1/disk.qcow2,if=virtio,format=qcow2")  # first: /dev/vda
    assert drives[1] == "file=/state/vm1/seed.iso,if=virtio,format=raw,readonly=on"
    assert flag(argv, "-netdev") == ["user,id=net0,hostfwd=tcp:127.0.0.1:20022-:22"]  # loopback only
    assert "-daemonize" in argv and flag(argv, "-pidfile") == ["/state/vm1/qemu.pid"]
    assert flag(argv, "-smp") == ["2"] and flag(argv, "-m") == ["1024"]
    assert "-bios" not in argv


def test_argv_forwards_more_ports_on_loopback_only():
    opts = QemuOptions(image="/i.qcow2", ssh_port=20022, forwards=((26443, 6443),))
    (netdev,) = flag(qemu_argv("vm1", "x86_64", "kvm", opts, "/state/vm1"), "-netdev")[:1]
    assert netdev == "user,id=net0,hostfwd=tcp:127.0.0.1:20022-:22,hostfwd=tcp:127.0.0.1:26443-:6443"


def test_argv_disk_boot_uses_firmware_not_kernel():
    o = QemuOptions(image="/img/a.qcow2", ssh_port=20023, firmware="/fw/QEMU_EFI.fd", cpus=4, memory_mb=4096)
    argv = qemu_argv("vm2", "aarch64", "tcg", o, "/s/vm2")
    assert flag(argv, "-bios") == ["/fw/QEMU_EFI.fd"] and "-kernel" not in argv and "-append" not in argv
    assert flag(argv, "-smp") == ["4"] and flag(argv, "-m") == ["4096"]


@pytest.mark.parametrize(
    ("requested", "arch", "host", "kvm_works", "expected"),
    [
        ("auto", "x86_64", "x86_64", True, "kvm"),  # native arch, KVM that runs guests
        ("auto", "x86_64", "x86_64", False, "tcg"),  # /dev/kvm that cannot run a stock kernel (this CI)
        ("auto", "aarch64", "x86_64", True, "tcg"),  # the other arch is always emulated
        ("auto", "aarch64", "aarch64", True, "kvm"),
        ("tcg", "x86_64", "x86_64", True, "tcg"),
        ("kvm", "aarch64", "aarch64", True, "kvm"),
    ],
)
def test_choose_accel(requested, arch, host, kvm_works, expected):
    assert choose_accel(requested, arch, host, kvm_works) == expected


@pytest.mark.parametrize(
    ("arch", "works", "words"), [("aarch64", True, "cannot run aarch64 on this x86_64"), ("x86_64", False, "/dev/kvm")]
)
def test_choose_accel_kvm_refused_with_reason(arch, works, words):
    with pytest.raises(ValueError, match=words):
        choose_accel("kvm", arch, "x86_64", works)


def test_launcher_command_is_quoted_and_round_trips():
    argv = qemu_argv("vm 1", "x86_64", "tcg", OPTS, "/state dir/vm 1")
    line = launcher_command(
        "start", "vm 1", "/state dir/vm 1", opts=OPTS, host_key="ssh-ed25519 AAAAkey vm1 host key",
        meta="instance-id: x\nlocal-hostname: vm1\n", cache_dir="/c", argv=argv,
    )  # fmt: skip
    words = shlex.split(line)
    assert words[:3] == ["sh", "components/fleet/scripts/qemu-vm.sh", "start"]
    sep = words.index("--")
    assert words[sep + 1 :] == argv
    opts = dict(zip(words[3:sep:2], words[4:sep:2], strict=True))
    assert opts["--dir"] == "/state dir/vm 1"
    assert opts["--host-key"] == "ssh-ed25519 AAAAkey"  # the key, not its comment
    assert opts["--meta-data"] == "instance-id: x\nlocal-hostname: vm1\n"
    assert opts["--timeout"] == "900" and opts["--port"] == "20022"
    stop = shlex.split(launcher_command("stop", "vm 1", "/state dir/vm 1"))
    assert stop == ["sh", "components/fleet/scripts/qemu-vm.sh", "stop", "--dir", "/state dir/vm 1", "--name", "vm 1"]


def test_parse_launcher_facts_ignores_other_lines():
    out = "qemu-vm: starting\naddress=127.0.0.1\nport=20022\ninstance=abc-1\nnot a fact\n"
    assert parse_launcher_facts(out) == {"address": "127.0.0.1", "port": "20022", "instance": "abc-1"}


def test_user_data_seeds_user_key_and_only_the_pinned_host_key():
    client, host = generate_ed25519("client"), generate_ed25519("host")
    text = user_data("vm1", "fleet", client.public_key, host.private_key, host.public_key)
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    (user,) = doc["users"]
    assert user["name"] == "fleet" and user["sudo"] == "ALL=(ALL) NOPASSWD:ALL" and user["lock_passwd"] is True
    assert user["ssh_authorized_keys"] == [client.public_key]
    assert doc["ssh_keys"]["ed25519_private"] == host.private_key
    assert doc["ssh_keys"]["ed25519_public"] == host.public_key
    assert doc["ssh_genkeytypes"] == [] and doc["ssh_deletekeys"] is True and doc["ssh_pwauth"] is False
    assert doc["hostname"] == "vm1"


def test_user_data_for_root():
    client, host = generate_ed25519("c"), generate_ed25519("h")
    doc = yaml.safe_load(user_data("vm1", "root", client.public_key, host.private_key, host.public_key))
    assert doc["disable_root"] is False
    assert doc["users"][0]["name"] == "root" and "sudo" not in doc["users"][0]


def test_meta_data():
    assert yaml.safe_load(meta_data("gvisor-fleet-vm1", "vm1")) == {
        "instance-id": "gvisor-fleet-vm1",
        "local-hostname": "vm1",
    }


def test_generated_keys_are_openssh_ed25519_and_round_trip():
    pair = generate_ed25519("vm1 host key")
    assert pair.private_key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert pair.public_key.startswith("ssh-ed25519 ") and pair.public_key.endswith(" vm1 host key")
    assert public_key_of(pair.private_key) == key_material(pair.public_key)
    assert generate_ed25519("x").private_key != generate_ed25519("x").private_key


def test_public_key_of_reads_ssh_keygen_output(tmp_path: Path):
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    assert public_key_of(key.read_text()) == key_material((tmp_path / "id.pub").read_text())


def test_public_key_of_rejects_garbage_with_the_config_key():
    with pytest.raises(ValueError, match="gvisor-fleet:sshPrivateKey"):
        public_key_of("not a key")


def test_launcher_script_arguments_are_checked():
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", str(SCRIPT), *args], capture_output=True, text=True, input="", check=False)

    r = run("start", "--dir", "/tmp/x")
    assert r.returncode != 0 and "start needs --dir, --name, --port, --host-key and --image" in r.stderr
    r = run("start", "--bogus", "1")
    assert r.returncode != 0 and "unknown option '--bogus'" in r.stderr
    r = run("reboot")
    assert r.returncode != 0 and "unknown action 'reboot'" in r.stderr
    r = run("status", "--dir", "/nonexistent/gvisor-fleet-vm", "--name", "x")
    assert r.returncode == 0 and r.stdout == "state=stopped\n"
    # Stopping a VM that is gone is fine (destroy after a host reboot).
    r = run("stop", "--dir", "/nonexistent/gvisor-fleet-vm", "--name", "x")
    assert r.returncode == 0 and "stopped=x" in r.stdout
    assert run("probe-kvm", "riscv64").stdout.strip() == "no"
