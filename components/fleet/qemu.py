"""Local VMs under QEMU: the default backend.

Functional core: `qemu_argv` (the whole QEMU command line), `choose_accel`,
`launcher_command` are pure. The shell is `QemuMachine`: a host key, one
`local.Command` that runs scripts/qemu-vm.sh (create = start, delete = stop),
and a readiness probe over SSH. The launcher script does the work on this
machine: base image download (cached), a throwaway qcow2 overlay, the
cloud-init NoCloud seed ISO, QEMU itself, and a bounded wait until SSH answers
with the pinned host key. Tests run the same script directly. VMs with a
`lanAddress` also share a private LAN (components/fleet/lan.py).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pulumi
from pulumi_command import local, remote

from components.fleet.cloudinit import meta_data, secret_user_data
from components.fleet.keys import SshKey, key_material
from components.fleet.lan import LanNic, LanSegment, lan_mac, lan_segment, netdev_args
from components.fleet.machine import Machine
from components.fleet.specs import MachineSpec, QemuOptions, local_arch

SCRIPT = Path(__file__).parent / "scripts" / "qemu-vm.sh"
PROJECT_ROOT = Path(__file__).parents[2]

BINARIES = {"x86_64": "qemu-system-x86_64", "aarch64": "qemu-system-aarch64"}
CONSOLES = {"x86_64": "ttyS0", "aarch64": "ttyAMA0"}
# File names inside a VM's directory; scripts/qemu-vm.sh uses the same ones.
DISK, SEED, SERIAL_LOG, PIDFILE = "disk.qcow2", "seed.iso", "serial.log", "qemu.pid"

# Waits for SSH after the launcher saw the pinned host key: auth is set up by
# then, so few dial retries are needed.
READY_SCRIPT = (
    "if command -v cloud-init >/dev/null 2>&1; then cloud-init status --wait >/dev/null 2>&1 || true; fi; uname -m"
)


def state_root() -> Path:
    """Where VM directories live (overlay, seed, logs): $GVISOR_FLEET_STATE or ~/.local/state/gvisor-fleet."""
    base = os.environ.get("GVISOR_FLEET_STATE") or os.path.join(Path.home(), ".local", "state", "gvisor-fleet")
    return Path(base) / "qemu"


def cache_root() -> Path:
    """Where downloaded base images are kept: $GVISOR_FLEET_CACHE or ~/.cache/gvisor-fleet."""
    base = os.environ.get("GVISOR_FLEET_CACHE") or os.path.join(Path.home(), ".cache", "gvisor-fleet")
    return Path(base) / "qemu-images"


def choose_accel(requested: str, arch: str, host_arch: str, kvm_works: bool) -> str:
    """kvm for the machine's own architecture when KVM really runs guests; tcg otherwise."""
    if requested == "tcg":
        return "tcg"
    native = arch == host_arch
    if requested == "kvm":
        if not native:
            raise ValueError(f"accel kvm cannot run {arch} on this {host_arch} machine; use accel auto or tcg")
        if not kvm_works:
            raise ValueError("accel kvm was asked for, but /dev/kvm cannot run guests here; use accel auto or tcg")
        return "kvm"
    return "kvm" if native and kvm_works else "tcg"


@cache
def kvm_works(arch: str) -> bool:
    """Runs the launcher's KVM probe: a tiny guest must really execute under KVM.

    /dev/kvm can exist, open and create VMs yet not run a stock kernel (nested
    KVM that hides CPU features); the probe asks QEMU to enforce a baseline CPU.
    Read-only: a temporary file, removed again.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    try:
        out = subprocess.run(
            ["sh", str(SCRIPT), "probe-kvm", arch], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.stdout.strip() == "yes"


def qemu_argv(
    name: str, arch: str, accel: str, opts: QemuOptions, vm_dir: str, segment: LanSegment | None = None
) -> list[str]:
    """The complete QEMU command line for one VM (daemonized; SSH on 127.0.0.1:<ssh_port>).

    A VM with a LAN address gets a second NIC on `segment`, the stack's LAN.
    """
    d = vm_dir.rstrip("/")
    argv = [BINARIES[arch], "-name", f"gvisor-fleet-{name}"]
    if arch == "x86_64":
        argv += ["-machine", "q35"]
        cpu = "host" if accel == "kvm" else "max"
    else:
        argv += ["-machine", "virt,gic-version=max" if accel == "kvm" else "virt"]
        # pauth-impdef: pointer authentication that is cheap to emulate.
        cpu = "host" if accel == "kvm" else "max,pauth-impdef=on"
    # tb-size bounds TCG's translation cache (halves host memory per VM).
    argv += ["-accel", "kvm" if accel == "kvm" else "tcg,thread=multi,tb-size=256", "-cpu", cpu]
    argv += ["-smp", str(opts.cpus), "-m", str(opts.memory_mb)]
    argv += ["-nodefaults", "-display", "none", "-monitor", "none", "-serial", f"file:{d}/{SERIAL_LOG}"]
    if opts.kernel and opts.initrd:
        append = f"{opts.kernel_args} console={CONSOLES[arch]}"
        argv += ["-kernel", opts.kernel, "-initrd", opts.initrd, "-append", append]
    elif opts.firmware:
        argv += ["-bios", opts.firmware]
    # The root disk first, so it is /dev/vda; the seed is found by its label.
    argv += ["-drive", f"file={d}/{DISK},if=virtio,format=qcow2,discard=unmap"]
    argv += ["-drive", f"file={d}/{SEED},if=virtio,format=raw,readonly=on"]
    forwards = "".join(f",hostfwd=tcp:127.0.0.1:{host}-:{guest}" for host, guest in opts.forwards)
    argv += ["-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{opts.ssh_port}-:22{forwards}"]
    argv += ["-device", "virtio-net-pci,netdev=net0,romfile="]
    if opts.lan_address:
        if segment is None:
            raise ValueError(f"machine {name} has a LAN address but no LAN segment was given")
        argv += netdev_args(segment, lan_mac(name))
    argv += ["-device", "virtio-rng-pci"]  # entropy for sshd and cloud-init without waiting
    argv += ["-daemonize", "-pidfile", f"{d}/{PIDFILE}"]
    return argv


def launcher_command(
    action: str,
    name: str,
    vm_dir: str,
    *,
    script: str = "components/fleet/scripts/qemu-vm.sh",
    opts: QemuOptions | None = None,
    host_key: str = "",
    meta: str = "",
    cache_dir: str = "",
    argv: list[str] | None = None,
) -> str:
    """`sh qemu-vm.sh start|stop|status ...` as one shell line, every part quoted."""
    parts = ["sh", script, action, "--dir", vm_dir, "--name", name]
    if action == "start":
        assert opts is not None and argv is not None
        parts += ["--port", str(opts.ssh_port), "--host-key", key_material(host_key), "--image", opts.image]
        parts += ["--cache", cache_dir, "--timeout", str(opts.boot_timeout)]
        parts += ["--meta-data", meta]
        if opts.image_checksum:
            parts += ["--image-checksum", opts.image_checksum]
        if opts.disk_size:
            parts += ["--disk-size", opts.disk_size]
        parts += ["--", *argv]
    return " ".join(shlex.quote(p) for p in parts)


def parse_launcher_facts(stdout: str) -> dict[str, str]:
    facts: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.replace("_", "").isalnum():
            facts[key] = value
    return facts


@dataclass(frozen=True)
class QemuHost:
    """Facts about the machine that runs the VMs (the one running Pulumi)."""

    arch: str
    kvm_works: Callable[[str], bool]


def this_host() -> QemuHost:
    return QemuHost(arch=local_arch(), kvm_works=kvm_works)


class QemuMachine(pulumi.ComponentResource):
    """One local VM: pinned host key, QEMU started by the launcher, SSH ready."""

    machine: Machine
    vm: local.Command

    def __init__(
        self,
        spec: MachineSpec,
        authorized_key: pulumi.Input[str],
        private_key: pulumi.Input[str],
        host: QemuHost,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("gvisor-fleet:fleet:QemuMachine", spec.name, None, opts)
        assert isinstance(spec.options, QemuOptions)
        o = spec.options
        name = spec.name
        try:
            accel = choose_accel(
                o.accel, spec.arch, host.arch, host.kvm_works(spec.arch) if o.accel != "tcg" else False
            )
        except ValueError as err:
            raise pulumi.RunError(f"gvisor-fleet:machines ({name}).accel: {err}") from None
        vm_dir = str(state_root() / f"{pulumi.get_project()}-{pulumi.get_stack()}" / name)
        segment = lan_segment(pulumi.get_project(), pulumi.get_stack())
        argv = qemu_argv(name, spec.arch, accel, o, vm_dir, segment)
        lan = LanNic(lan_mac(name), o.lan_address) if o.lan_address else None
        host_key = SshKey(f"{name}-host-key", comment=f"{name} host key", opts=pulumi.ResourceOptions(parent=self))
        seed = secret_user_data(name, spec.user, authorized_key, host_key.private_key, host_key.public_key, lan)
        meta = meta_data(f"gvisor-fleet-{name}", name)
        script = os.path.relpath(SCRIPT, PROJECT_ROOT)
        create = host_key.public_key.apply(
            lambda pub: launcher_command(
                "start", name, vm_dir, script=script, opts=o, host_key=pub, meta=meta,
                cache_dir=str(cache_root()), argv=argv,
            )
        )  # fmt: skip
        self.vm = local.Command(
            f"{name}-vm",
            create=create,
            delete=launcher_command("stop", name, vm_dir, script=script),
            stdin=seed,
            # A script change shows in the preview; the VM itself stays.
            environment={"GVISOR_FLEET_LAUNCHER_SHA256": hashlib.sha256(SCRIPT.read_bytes()).hexdigest()},
            opts=pulumi.ResourceOptions(
                parent=self,
                # Another command line or seed is another VM: stop the old one
                # first, it holds the SSH port.
                replace_on_changes=["create", "stdin"],
                delete_before_replace=True,
            ),
        )
        connection = remote.ConnectionArgs(
            host="127.0.0.1",
            port=o.ssh_port,
            user=spec.user,
            private_key=pulumi.Output.secret(private_key),
            host_key=host_key.public_key.apply(key_material),
            dial_error_limit=20,
            per_dial_timeout=30,
        )
        instance = self.vm.stdout.apply(lambda out: parse_launcher_facts(out).get("instance", ""))
        ready = remote.Command(
            f"{name}-ssh-ready",
            connection=connection,
            create=READY_SCRIPT,
            triggers=[instance],  # a new VM is checked again
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.vm]),
        )
        self.machine = Machine(
            name=name, arch=spec.arch, user=spec.user, connection=connection, ready=(ready,), instance=instance,
            private_address=spec.private_address,
        )  # fmt: skip
        self.register_outputs({"instance": instance, "accel": accel, "ssh_port": o.ssh_port})
