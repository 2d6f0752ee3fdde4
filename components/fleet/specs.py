"""Machines as the stack describes them: `gvisor-fleet:machines` parsed and checked.

Pure: no Pulumi resources. Each backend's own fields are checked here too, so
every mistake in the machine list is reported at preview, with the config key
(`gvisor-fleet:machines[i].field`) and what to write instead. Facts about the
machine running Pulumi (its architecture, which local files exist) come in as
arguments so tests can state them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import platform
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

KEY = "gvisor-fleet:machines"
ARCHES = ("x86_64", "aarch64")
ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64", "x86-64": "x86_64", "aarch_64": "aarch64"}
BACKENDS = ("static", "qemu", "multipass", "aws")
CREATED = ("qemu", "multipass", "aws")  # backends that make the machine (and its keys)
NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
SIZE = re.compile(r"^[1-9][0-9]*[MGT]$")
DEFAULT_USER = "fleet"

# Cloud images per arch, by short name (qemu). Debian's arm64 image boots
# through UEFI firmware; Ubuntu's too.
QEMU_IMAGES: Mapping[str, Mapping[str, str]] = {
    "debian-12": {
        "x86_64": "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2",
        "aarch64": "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-arm64.qcow2",
    },
    "ubuntu-24.04": {
        "x86_64": "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img",
        "aarch64": "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-arm64.img",
    },
    "ubuntu-22.04": {
        "x86_64": "https://cloud-images.ubuntu.com/jammy/current/jammy-server-cloudimg-amd64.img",
        "aarch64": "https://cloud-images.ubuntu.com/jammy/current/jammy-server-cloudimg-arm64.img",
    },
}
AARCH64_FIRMWARE = "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd"  # Debian package qemu-efi-aarch64
AWS_IMAGES = ("debian-12", "ubuntu-24.04", "ubuntu-22.04")
AWS_DEFAULT_TYPES = {"x86_64": "t3.small", "aarch64": "t4g.small"}
SSH_PORT_BASE, SSH_PORT_SPAN = 20000, 10000
CHECKSUM = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")


@dataclass(frozen=True)
class QemuOptions:
    image: str  # http(s) URL or absolute path of a qcow2/raw base image
    ssh_port: int
    image_checksum: str | None = None  # "sha256:<hex>" or "sha512:<hex>", checked after download
    kernel: str | None = None  # direct kernel boot (with initrd); else firmware boots the disk
    initrd: str | None = None
    kernel_args: str = "root=/dev/vda rw"
    firmware: str | None = None  # aarch64 UEFI for disk boot
    cpus: int = 2
    memory_mb: int = 1024
    disk_size: str | None = None  # grow the overlay, e.g. "8G"; None keeps the image's size
    accel: str = "auto"  # auto (kvm for the native arch when it really works, else tcg), kvm, tcg
    boot_timeout: int = 900  # seconds from start until SSH answers with the pinned host key


@dataclass(frozen=True)
class MultipassOptions:
    image: str = "24.04"
    cpus: int = 2
    memory_mb: int = 1024
    disk_size: str = "10G"
    launch_timeout: int = 900


@dataclass(frozen=True)
class AwsOptions:
    allowed_cidr: str  # who may reach SSH (port 22); never the whole internet
    instance_type: str
    image: str = "debian-12"  # AMI looked up per arch, or...
    ami: str | None = None  # ...this AMI id exactly
    region: str | None = None  # None: the aws:region of the stack
    subnet_id: str | None = None
    disk_gb: int | None = None
    public_ip: bool = True


BackendOptions = QemuOptions | MultipassOptions | AwsOptions


@dataclass(frozen=True)
class MachineSpec:
    """One machine from stack config, before any backend makes or reaches it."""

    name: str
    arch: str  # x86_64, aarch64, or "detect" (static machines only)
    backend: str = "static"
    address: str = ""
    port: int = 22
    user: str = "root"
    host_key: str | None = None
    options: BackendOptions | None = None  # the backend's own settings (None for static)
    builds_images: bool = False  # never gets runsc as Docker's default runtime


def local_arch() -> str:
    """`uname -m` of the machine running Pulumi, in gVisor's names."""
    machine = platform.machine().lower()
    return ARCH_ALIASES.get(machine, machine)


def default_ssh_port(name: str) -> int:
    """A stable 127.0.0.1 port for a local VM's SSH: the same name always gets the same port."""
    return SSH_PORT_BASE + zlib.crc32(name.encode()) % SSH_PORT_SPAN


def aws_instance_arch(instance_type: str) -> str:
    """x86_64 or aarch64 for an EC2 instance type: Graviton families carry a 'g' after the generation."""
    family = instance_type.split(".", 1)[0]
    if family == "a1" or family.startswith("mac2"):
        return "aarch64"
    m = re.match(r"^[a-z]+-?\d+([a-z-]*)$", family)
    return "aarch64" if m and "g" in m.group(1) else "x86_64"


def arch_problem(key: str, value: object, allow_detect: bool) -> str | None:
    allowed = ARCHES + (("detect",) if allow_detect else ())
    if value in allowed:
        return None
    hint = ARCH_ALIASES.get(str(value))
    if hint:
        return f"{key}: '{value}' is not an architecture name gVisor uses; write '{hint}' (as `uname -m` prints)"
    return f"{key}: unknown architecture '{value}'; use one of {', '.join(allowed)}"


class _Fields:
    """Reads one machine's fields, appending a problem (with its key) for each bad one."""

    def __init__(self, at: str, item: Mapping[str, object], problems: list[str]) -> None:
        self.at, self.item, self.problems = at, item, problems

    def problem(self, field: str, text: str) -> None:
        self.problems.append(f"{self.at}.{field}: {text}")

    def text(
        self, field: str, default: str | None = None, pattern: re.Pattern[str] | None = None, hint: str = ""
    ) -> str | None:
        value = self.item.get(field)
        if value is None:
            return default
        if not isinstance(value, str) or not value.strip() or (pattern and not pattern.match(value.strip())):
            self.problem(field, f"'{value}' is not valid{'; ' + hint if hint else ''}")
            return default
        return value.strip()

    def integer(self, field: str, default: int, low: int, high: int, unit: str = "") -> int:
        value = self.item.get(field, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.problem(field, f"'{value}' must be a whole number from {low} to {high}{unit}")
            return default
        return value

    def flag(self, field: str, default: bool) -> bool:
        value = self.item.get(field, default)
        if not isinstance(value, bool):
            self.problem(field, "must be true or false")
            return default
        return value

    def choice(self, field: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.item.get(field, default)
        if value not in allowed:
            self.problem(field, f"'{value}' is not supported; use one of {', '.join(allowed)}")
            return default
        return str(value)

    def unknown(self, known: tuple[str, ...], backend: str) -> None:
        for field in self.item:
            if field not in known:
                self.problem(str(field), f"not a setting of {backend} machines; known: {', '.join(sorted(known))}")


COMMON = ("name", "backend", "arch", "user", "buildsImages")
STATIC_FIELDS = (*COMMON, "address", "port", "hostKey")
QEMU_FIELDS = (*COMMON, "image", "imageChecksum", "kernel", "initrd", "kernelArgs", "firmware", "cpus", "memory",
               "diskSize", "sshPort", "accel", "bootTimeout")  # fmt: skip
MULTIPASS_FIELDS = (*COMMON, "image", "cpus", "memory", "diskSize", "launchTimeout")
AWS_FIELDS = (*COMMON, "allowedCidr", "instanceType", "image", "ami", "region", "subnetId", "diskSize", "publicIp")


def _static(f: _Fields, name: str) -> MachineSpec | None:
    f.unknown(STATIC_FIELDS, "static")
    address = f.item.get("address")
    if not isinstance(address, str) or not address:
        f.problem("address", "missing; give the host name or IP that SSH reaches")
        return None
    port = f.integer("port", 22, 1, 65535)
    user = f.text("user", "root", USER, "must be a user name") or "root"
    arch = f.item.get("arch", "detect")
    p = arch_problem(f"{f.at}.arch", arch, allow_detect=True)
    if p:
        f.problems.append(p)
    host_key = f.item.get("hostKey")
    if host_key is not None and (not isinstance(host_key, str) or not host_key.startswith(("ssh-", "ecdsa-"))):
        f.problem("hostKey", "must be an OpenSSH public key line, e.g. from `ssh-keyscan -t ed25519 HOST`")
        host_key = None
    return MachineSpec(name=name, arch=str(arch), address=address, port=port, user=user, host_key=host_key)


def _created_arch(f: _Fields, backend: str) -> str | None:
    arch = f.item.get("arch")
    if arch is None:
        f.problem("arch", f"missing; say which architecture the {backend} backend should create: x86_64 or aarch64")
        return None
    p = arch_problem(f"{f.at}.arch", arch, allow_detect=False)
    if p:
        f.problems.append(p)
        return None
    return str(arch)


def _local_file(f: _Fields, field: str, exists: Callable[[str], bool], what: str) -> str | None:
    path = f.text(field)
    if path is None:
        return None
    path = os.path.expanduser(path)
    if not os.path.isabs(path):
        f.problem(field, f"'{path}' must be an absolute path to the {what}")
        return None
    if not exists(path):
        f.problem(field, f"{path} does not exist on this machine; build or download the {what} first")
        return None
    return path


def _qemu(f: _Fields, name: str, exists: Callable[[str], bool], host_arch: str) -> MachineSpec | None:
    f.unknown(QEMU_FIELDS, "qemu")
    arch = _created_arch(f, "qemu")
    user = f.text("user", DEFAULT_USER, USER, "must be a Linux user name") or DEFAULT_USER
    raw_image = f.text("image")
    image: str | None = None
    if raw_image is None:
        f.problem(
            "image",
            f"missing; give a cloud image name ({', '.join(QEMU_IMAGES)}), an https:// URL, "
            "or the absolute path of a qcow2/raw image",
        )
    elif raw_image in QEMU_IMAGES:
        image = QEMU_IMAGES[raw_image][arch] if arch else None
    elif re.match(r"^https?://", raw_image):
        image = raw_image
    else:
        image = _local_file(f, "image", exists, "base image")
    checksum = f.text("imageChecksum", None, CHECKSUM, "write 'sha256:<64 hex>' or 'sha512:<128 hex>'")
    kernel = _local_file(f, "kernel", exists, "kernel (vmlinuz)")
    initrd = _local_file(f, "initrd", exists, "initrd")
    if (f.item.get("kernel") is None) != (f.item.get("initrd") is None):
        absent = "kernel" if f.item.get("kernel") is None else "initrd"
        f.problem(absent, "missing; direct kernel boot needs both kernel and initrd")
    firmware = _local_file(f, "firmware", exists, "UEFI firmware")
    if arch == "aarch64" and f.item.get("kernel") is None and f.item.get("firmware") is None:
        if exists(AARCH64_FIRMWARE):
            firmware = AARCH64_FIRMWARE
        else:
            f.problem(
                "firmware",
                f"aarch64 VMs that boot their disk need UEFI firmware and {AARCH64_FIRMWARE} is missing; "
                "`apt-get install qemu-efi-aarch64`, set firmware to another QEMU_EFI.fd, or boot a kernel directly",
            )
    ssh_port = f.integer("sshPort", default_ssh_port(name), 1024, 65535)
    accel = f.choice("accel", "auto", ("auto", "kvm", "tcg"))
    if accel == "kvm" and arch and arch != host_arch:
        f.problem("accel", f"KVM runs only this machine's own architecture ({host_arch}), not {arch}; use auto or tcg")
    if image is None or arch is None:
        return None
    options = QemuOptions(
        image=image,
        image_checksum=checksum,
        kernel=kernel,
        initrd=initrd,
        kernel_args=f.text("kernelArgs", "root=/dev/vda rw") or "root=/dev/vda rw",
        firmware=firmware,
        cpus=f.integer("cpus", 2, 1, 64),
        memory_mb=f.integer("memory", 1024, 256, 1048576, " (MiB)"),
        disk_size=f.text("diskSize", None, SIZE, "write a size like 8G or 20480M"),
        ssh_port=ssh_port,
        accel=accel,
        boot_timeout=f.integer("bootTimeout", 900, 30, 7200, " (seconds)"),
    )
    return MachineSpec(
        name=name, arch=arch, backend="qemu", address="127.0.0.1", port=ssh_port, user=user, options=options
    )


def _multipass(f: _Fields, name: str, host_arch: str) -> MachineSpec | None:
    f.unknown(MULTIPASS_FIELDS, "multipass")
    arch = _created_arch(f, "multipass")
    if arch and arch != host_arch:
        f.problem(
            "arch",
            f"multipass runs only this machine's own architecture ({host_arch}), not {arch}; "
            f"use backend: qemu (emulates {arch}) or aws for {arch} machines",
        )
        arch = None
    options = MultipassOptions(
        image=f.text("image", "24.04") or "24.04",
        cpus=f.integer("cpus", 2, 1, 64),
        memory_mb=f.integer("memory", 1024, 256, 1048576, " (MiB)"),
        disk_size=f.text("diskSize", "10G", SIZE, "write a size like 10G") or "10G",
        launch_timeout=f.integer("launchTimeout", 900, 30, 7200, " (seconds)"),
    )
    user = f.text("user", DEFAULT_USER, USER, "must be a Linux user name") or DEFAULT_USER
    if arch is None:
        return None
    return MachineSpec(name=name, arch=arch, backend="multipass", user=user, options=options)


def _aws(f: _Fields, name: str) -> MachineSpec | None:
    f.unknown(AWS_FIELDS, "aws")
    arch = _created_arch(f, "aws")
    cidr = f.text("allowedCidr")
    if cidr is None:
        f.problem("allowedCidr", "missing; say who may reach SSH, e.g. your address as 203.0.113.7/32")
    else:
        try:
            net = ipaddress.ip_network(cidr, strict=True)
        except ValueError as err:
            f.problem("allowedCidr", f"'{cidr}' is not a network in CIDR form ({err}); e.g. 203.0.113.7/32")
            cidr = None
        else:
            if net.prefixlen == 0:
                f.problem(
                    "allowedCidr",
                    f"'{cidr}' opens SSH to the whole internet; give your own network, e.g. 203.0.113.7/32",
                )
                cidr = None
    instance_type = f.text("instanceType", None, re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$"), "e.g. t3.small")
    if arch and instance_type and aws_instance_arch(instance_type) != arch:
        f.problem(
            "instanceType",
            f"'{instance_type}' is an {aws_instance_arch(instance_type)} instance type but arch is {arch}; "
            f"use e.g. {AWS_DEFAULT_TYPES[arch]}",
        )
        instance_type = None
    image = f.choice("image", "debian-12", AWS_IMAGES)
    ami = f.text("ami", None, re.compile(r"^ami-[0-9a-f]{8,17}$"), "an AMI id looks like ami-0123456789abcdef0")
    disk = f.item.get("diskSize")
    disk_gb: int | None = None
    if disk is not None:
        if isinstance(disk, str) and re.match(r"^[1-9][0-9]*G$", disk):
            disk_gb = int(disk[:-1])
        else:
            f.problem("diskSize", f"'{disk}' must be a size in GiB like 20G")
    user = f.text("user", DEFAULT_USER, USER, "must be a Linux user name") or DEFAULT_USER
    region = f.text("region", None, re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$"), "e.g. eu-west-1")
    subnet = f.text("subnetId", None, re.compile(r"^subnet-[0-9a-f]{8,17}$"), "e.g. subnet-0123456789abcdef0")
    public_ip = f.flag("publicIp", True)
    if arch is None or cidr is None:
        return None
    options = AwsOptions(
        allowed_cidr=cidr,
        instance_type=instance_type or AWS_DEFAULT_TYPES[arch],
        image=image,
        ami=ami,
        region=region,
        subnet_id=subnet,
        disk_gb=disk_gb,
        public_ip=public_ip,
    )
    return MachineSpec(name=name, arch=arch, backend="aws", user=user, options=options)


def parse_machines(
    items: object,
    has_private_key: bool,
    problems: list[str],
    *,
    host_arch: str | None = None,
    exists: Callable[[str], bool] = os.path.exists,
) -> tuple[MachineSpec, ...]:
    """Checks the machine list, appending one line per problem to `problems`.

    `host_arch` is the architecture of the machine running Pulumi (default: this
    one); `exists` tells whether a local path exists (default: the file system).
    """
    if items is None:
        return ()
    if not isinstance(items, list):
        problems.append(f"{KEY}: must be a list of machines, e.g. [{{name: web1, address: 192.0.2.10}}]")
        return ()
    host = host_arch or local_arch()
    specs: list[MachineSpec] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        at = f"{KEY}[{i}]"
        if not isinstance(item, Mapping):
            problems.append(f"{at}: must be an object with at least name and address")
            continue
        name = item.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            problems.append(f"{at}.name: '{name}' must be a lower-case DNS label (letters, digits, '-')")
            continue
        if name in seen:
            problems.append(f"{at}.name: '{name}' is used twice; machine names must be unique")
        seen.add(name)
        backend = item.get("backend", "static")
        if backend not in BACKENDS:
            problems.append(f"{at}.backend: '{backend}' is not supported; use one of {', '.join(BACKENDS)}")
            continue
        f = _Fields(at, item, problems)
        spec: MachineSpec | None
        if backend == "qemu":
            spec = _qemu(f, name, exists, host)
        elif backend == "multipass":
            spec = _multipass(f, name, host)
        elif backend == "aws":
            spec = _aws(f, name)
        else:
            spec = _static(f, name)
        if spec and f.flag("buildsImages", False):
            spec = dataclasses.replace(spec, builds_images=True)
        if spec:
            specs.append(spec)
    _check_ports(items, specs, problems)
    needs_key = [s.name for s in specs if s.backend == "static"]
    if needs_key and not has_private_key:
        problems.append(
            f"gvisor-fleet:sshPrivateKey: missing; machines {', '.join(needs_key)} need an "
            "SSH key: `pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519`"
        )
    return tuple(specs)


def _check_ports(items: list[object], specs: list[MachineSpec], problems: list[str]) -> None:
    """Local VMs forward SSH from 127.0.0.1:<sshPort>; two machines cannot share one."""
    index = {item.get("name"): i for i, item in enumerate(items) if isinstance(item, Mapping)}
    owner: dict[int, str] = {}
    for spec in specs:
        if spec.backend != "qemu":
            continue
        if spec.port in owner:
            problems.append(
                f"{KEY}[{index[spec.name]}].sshPort: port {spec.port} is also used by machine "
                f"'{owner[spec.port]}'; set a different sshPort on one of them"
            )
        owner.setdefault(spec.port, spec.name)
