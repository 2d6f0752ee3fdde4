"""Real VMs for the VM tests and the VM benchmark, started by the qemu backend's own code.

The QEMU command line comes from `components.fleet.qemu.qemu_argv`, the
accelerator from `choose_accel` with the real KVM probe, the seed from
`components.fleet.cloudinit`, the keys from `components.fleet.keys`, and the
VM is started and stopped by `components/fleet/scripts/qemu-vm.sh`: the same
path `pulumi up` takes, minus the engine. Images come from
tests/toolchain/build-vm-images.sh (Debian packages, cached outside the repo);
every VM boots a throwaway overlay in its own directory. VMs given a LAN
address share one private LAN (components/fleet/lan.py), on a segment of
this test process. `converge` runs the host layer's steps on a VM as
GvisorHost orders them.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# Resolved here, in the importing thread: pulumi_command loads `remote` lazily, and two
# threads touching it first at once can see it half-initialised.
from pulumi_command.remote import ConnectionArgs

from components.fleet.cloudinit import meta_data, user_data
from components.fleet.keys import KeyPair, generate_ed25519, key_material
from components.fleet.lan import LanNic, LanSegment, lan_ip, lan_mac, lan_segment
from components.fleet.machine import Machine
from components.fleet.qemu import SCRIPT, choose_accel, kvm_works, launcher_command, parse_launcher_facts, qemu_argv
from components.fleet.specs import QemuOptions, local_arch
from components.gvisor.agent import agent_file, parse_facts
from components.gvisor.host import host_commands
from components.gvisor.settings import GvisorSettings
from tests.support.loopback import free_port
from tests.support.mirror import archive, release_name
from tests.support.paths import CACHE, REPO, TOOLCHAIN
from tests.support.ssh import run_ssh
from tests.support.toolchain import gvisor_dir

BUILD_IMAGES = TOOLCHAIN / "build-vm-images.sh"
BUILD_GVISOR = TOOLCHAIN / "build-gvisor.sh"
AGENT = REPO / "components" / "gvisor" / "scripts" / "gvisor-host.sh"
ARCHES = ("x86_64", "aarch64")
# The LAN of this test process's VMs: another run at the same time, or a stack's
# VMs, are on a segment of their own.
SEGMENT = lan_segment("gvisor-fleet-tests", f"vm-{os.getpid()}")
# The tier's VMs on that LAN, as stacks/Pulumi.local.yaml has them; the x86_64
# VM has what a kubeadm control plane needs (1700 MB at least) and forwards
# its API server's port to this machine's loopback.
LAN = {"x86_64": "192.168.76.10/24", "aarch64": "192.168.76.11/24"}
MEMORY = {"x86_64": 2048, "aarch64": 1024}
# Room for a kubeadm node: the copied release, the installed binaries, the images.
DISK_SIZE = {"x86_64": "6G", "aarch64": "4G"}
API_PORT_ON_HOST = free_port()
FORWARDS = {"x86_64": ((API_PORT_ON_HOST, 6443),), "aarch64": ()}
USER = "fleet"
STEPS = ("install", "docker", "containerd", "verify")  # install runs the preflight checks first
TOOLS = (
    "qemu-system-x86_64", "qemu-system-aarch64", "qemu-img", "mmdebstrap", "mkfs.ext4", "genisoimage",
    "ssh", "ssh-keyscan", "curl",
)  # fmt: skip


def missing_prerequisite() -> str | None:
    """Why the VM tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "VM tests need root (mmdebstrap builds the images)"
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"VM tests need '{tool}': run sh tests/toolchain/install-vm-deps.sh"
    if shutil.which("go") is None and not (gvisor_dir() / "VERSION").exists():
        return "VM tests need Go to build runsc (tests/toolchain/build-gvisor.sh)"
    return None


def image_dir() -> Path:
    out = subprocess.run(["sh", str(BUILD_IMAGES), "--print-dir"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def ensure_images(arches: tuple[str, ...] = ARCHES) -> dict[str, Path]:
    """Builds the missing images (x86_64 ~3 min, aarch64 ~8-15 min on 2 cores) and returns arch -> dir."""
    root = image_dir()
    if not all((root / a / ".complete").exists() for a in arches):
        subprocess.run(["sh", str(BUILD_IMAGES), *arches], check=True)
    return {a: root / a for a in arches}


def ensure_mirror() -> tuple[Path, str]:
    """A mirror laid out like gVisor's bucket (<release>/<arch>/gvisor.tar.bz2 + .sha512) from a current runsc."""
    src = gvisor_dir()
    if not (src / "RUNSC_VERSION").exists():
        subprocess.run(["sh", str(BUILD_GVISOR)], check=True)
    release = release_name((src / "VERSION").read_text().strip()) + ".0"  # the commit's date, as a dated release
    root = CACHE / "vm-mirror"
    stamp = root / f".complete-{hashlib.sha256(runsc_version().encode()).hexdigest()[:12]}"
    if not stamp.exists():
        shutil.rmtree(root, ignore_errors=True)
        for arch in ARCHES:
            archive(src / arch, root / release / arch)
        stamp.touch()
    return root, release


def runsc_version() -> str:
    """What the test runsc prints after `runsc version` (go-<commit time>-<commit>)."""
    return (gvisor_dir() / "RUNSC_VERSION").read_text().strip()


@dataclass
class Vm:
    """One VM as the qemu backend makes it, plus an SSH client pinned to its host key."""

    name: str
    arch: str
    images: Path
    work: Path
    port: int = field(default_factory=free_port)
    login: KeyPair = field(default_factory=lambda: generate_ed25519("vm-test login"))
    host_key: KeyPair = field(default_factory=lambda: generate_ed25519("vm-test host key"))
    lan_address: str | None = None  # CIDR on the LAN (SEGMENT); None: no LAN NIC
    memory_mb: int = 1024
    forwards: tuple[tuple[int, int], ...] = ()  # (port on 127.0.0.1, port in the guest) besides SSH
    disk_size: str | None = None  # grow the overlay (cloud-init grows the file system); None: the image's 2G
    segment: LanSegment = SEGMENT
    accel: str = ""
    booted: str = ""  # snapshot() right after boot (conftest.py)
    facts: dict[str, str] = field(default_factory=dict)
    boot_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.vm_dir = str(self.work / "vm")
        self.key_file = self.work / "id_ed25519"
        self.key_file.write_text(self.login.private_key)
        self.key_file.chmod(0o600)
        self.known_hosts = self.work / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {key_material(self.host_key.public_key)}\n")
        self.accel = choose_accel("auto", self.arch, local_arch(), kvm_works(self.arch))
        self.options = QemuOptions(
            image=str(self.images / "disk.qcow2"),
            kernel=str(self.images / "vmlinuz"),
            initrd=str(self.images / "initrd.img"),
            # Docker on an AppArmor kernel needs apparmor_parser, which the
            # minimal test images leave out (README, vm tier).
            kernel_args="root=/dev/vda rw apparmor=0",
            ssh_port=self.port,
            memory_mb=self.memory_mb,
            lan_address=self.lan_address,
            forwards=self.forwards,
            disk_size=self.disk_size,
            boot_timeout=int(os.environ.get("GVISOR_FLEET_VM_BOOT_TIMEOUT", "900")),
        )

    def launcher(self, action: str) -> list[str]:
        """The backend's own launcher line, with the script's absolute path."""
        line = launcher_command(
            action, self.name, self.vm_dir, script=str(SCRIPT), opts=self.options,
            host_key=self.host_key.public_key, meta=meta_data(f"vm-test-{self.name}", self.name),
            cache_dir=str(CACHE / "qemu-images"),
            argv=qemu_argv(self.name, self.arch, self.accel, self.options, self.vm_dir, self.segment),
        )  # fmt: skip
        return ["sh", "-c", line]

    def seed(self) -> str:
        lan = LanNic(lan_mac(self.name), self.lan_address) if self.lan_address else None
        return user_data(
            self.name, USER, self.login.public_key, self.host_key.private_key, self.host_key.public_key, lan
        )

    @property
    def lan_ip(self) -> str:
        """The VM's address on the LAN, without the prefix length."""
        assert self.lan_address, f"{self.name} has no LAN address"
        return lan_ip(self.lan_address)

    def start(self) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        result = subprocess.run(self.launcher("start"), input=self.seed(), capture_output=True, text=True)
        if result.returncode == 0 and not self.boot_seconds:
            self.boot_seconds = time.monotonic() - started
        self.facts = parse_launcher_facts(result.stdout)
        return result

    def stop(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.launcher("stop"), capture_output=True, text=True)

    def ssh_argv(self, known_hosts: Path | None = None) -> list[str]:
        return [
            "ssh", "-i", str(self.key_file), "-p", str(self.port),
            "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", "HostKeyAlgorithms=ssh-ed25519",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR",
            f"{USER}@127.0.0.1",
        ]  # fmt: skip

    def ssh(self, command: str, stdin: str = "", timeout: float = 900) -> subprocess.CompletedProcess[str]:
        out = self.ssh_bytes(command, stdin.encode(), timeout)
        text = [b.decode(errors="replace") for b in (out.stdout, out.stderr)]
        return subprocess.CompletedProcess(out.args, out.returncode, *text)

    def ssh_bytes(self, command: str, stdin: bytes = b"", timeout: float = 900) -> subprocess.CompletedProcess[bytes]:
        """As `ssh`, with binary input and output (files copied in or out)."""
        return run_ssh([*self.ssh_argv(), command], stdin, timeout)

    def agent(self, command_line: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """One host-layer command line, as GvisorHost runs it, after putting the agent script
        where its copy resource does (over SSH here; the e2e tests run the real SFTP copy)."""
        place = shlex.quote('mkdir -p "${1%/*}" && cat > "$1"')
        copy = f"sh -c {place} sh {shlex.quote(agent_file())}"
        return self.ssh(f"{copy} && {command_line}", stdin=AGENT.read_text(), timeout=timeout)

    def serial_tail(self, lines: int = 30) -> str:
        log = Path(self.vm_dir) / "serial.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no serial log)"


def start_all(vms: list[Vm]) -> dict[str, subprocess.CompletedProcess[str]]:
    """Starts every VM at once (as `pulumi up` would) and waits for all; name -> launcher result."""
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    threads = [threading.Thread(target=lambda v=v: results.__setitem__(v.name, v.start())) for v in vms]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def describe_failure(vm: Vm, result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"{vm.name} ({vm.arch}, accel {vm.accel}) launcher exit {result.returncode}\n"
        f"command: {shlex.join(vm.launcher('start'))[:400]}...\nstderr:\n{result.stderr[-3000:]}\n"
        f"serial:\n{vm.serial_tail()}"
    )


def machine_record(vm: Vm, arch: str | None = None) -> Machine:
    connection = ConnectionArgs(host="127.0.0.1", port=vm.port, user=USER, host_key=vm.host_key.public_key)
    return Machine(name=vm.name, arch=arch or vm.arch, user=USER, connection=connection)


def converge(vm: Vm, settings: GvisorSettings) -> dict[str, str]:
    """Runs the host layer's steps in GvisorHost's order; returns the facts of all of them."""
    commands = host_commands(machine_record(vm), settings)
    facts: dict[str, str] = {}
    for step in STEPS:
        if step not in commands:
            continue
        result = vm.agent(commands[step][0])
        assert result.returncode == 0, f"{vm.name} ({vm.arch}) step {step} failed:\n{result.stderr[-3000:]}"
        facts.update(parse_facts(result.stdout))
    return facts


# What the VMs must get back byte for byte: every path the kubeadm step or
# kubeadm writes, the engines' configs, units, kernel settings, the routes,
# the firewall rules, and containerd's images for the kubelet.
SNAPSHOT = r"""
for p in /etc /usr/local/bin /opt /var/lib/kubelet /var/lib/etcd /var/lib/cni /var/lib/gvisor-fleet; do
    [ -e "$p" ] || { echo "absent $p"; continue; }
    find "$p" -xdev -type f ! -path '/etc/ld.so.cache' -print0 | sort -z | xargs -0r sha256sum 2>/dev/null
    find "$p" -xdev -type l -printf '%p -> %l\n' | sort
    find "$p" -xdev -type d | sort
done
ip -4 route show table main | grep -v 'proto dhcp'
iptables -S; iptables -t nat -S
sysctl -n net.ipv4.ip_forward
ctr -n k8s.io images ls -q | sort
systemctl is-enabled kubelet 2>&1 || true
"""


def snapshot(vm: Vm) -> str:
    out = vm.ssh(f"sudo -n sh -c {shlex.quote(SNAPSHOT)}", timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout


def differences(before: str, after: str) -> str:
    a, b = set(before.splitlines()), set(after.splitlines())
    return "\n".join([*(f"- {line}" for line in sorted(a - b)), *(f"+ {line}" for line in sorted(b - a))][:60])
