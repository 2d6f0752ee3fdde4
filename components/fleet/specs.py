"""Machines as the stack describes them: `gvisor-fleet:machines` parsed and checked.

Pure: no Pulumi resources. Every machine field is declared once in
`MACHINE_FIELDS`, with the backends that read it; components/schema.py reads
them, and the rules between fields (arch and image, kernel and initrd, ports)
follow here, so every mistake in the machine list is reported at preview with
the config key (`gvisor-fleet:machines[i].field`) and what to write instead.
Facts about the machine running Pulumi (its architecture, which local files
exist) come in as arguments so tests can state them.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from components.fleet.lan import EXAMPLE as LAN_EXAMPLE
from components.fleet.lan import LanMember, lan_address_problem, lan_ip, lan_problems, private_address_problem
from components.kinds import (
    ARCH_ALIASES,
    SSH_KEY_TYPES,
    Arch,
    Choice,
    Flag,
    Items,
    LocalPath,
    Strings,
    Text,
    Whole,
    address_problem,
    network_problem,
    ssh_key_problem,
)
from components.schema import ALL_BACKENDS, BAD, NS, Setting, Values, read

KEY = "gvisor-fleet:machines"
BACKENDS = ALL_BACKENDS
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
    lan_address: str | None = None  # CIDR on the stack's LAN (components/fleet/lan.py); None: no LAN NIC
    # (port on 127.0.0.1, port in the guest) pairs forwarded besides SSH, e.g. a Kubernetes API server.
    forwards: tuple[tuple[int, int], ...] = ()


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
    # The IP the other machines reach this one on (static: privateAddress, qemu:
    # the IP of lanAddress); None when the stack does not know it in advance.
    private_address: str | None = None


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


_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_VM = ("qemu", "multipass")
_LINUX_USER = Text(USER, "is not a Linux user name", "Linux user name")
_USER_FIX = "lower-case letters, digits, '_' and '-', at most 32"
_SIZE_FIX = "write a size like 8G or 20480M"
_QEMU_IMAGE = (
    f"a cloud image name ({', '.join(QEMU_IMAGES)}), an https:// URL, or the absolute path of a qcow2/raw image"
)

FORWARD = re.compile(r"^\d{1,5}:\d{1,5}$")


def forwards_problem(value: object) -> str | None:
    pairs = [str(v).split(":") for v in value] if isinstance(value, (list, tuple)) else []
    for host, guest in pairs:
        if not (1024 <= int(host) <= 65535 and 1 <= int(guest) <= 65535):
            return f"'{host}:{guest}': the port on this machine must be 1024-65535, the guest's 1-65535"
    hosts = [h for h, _ in pairs]
    dup = next((h for h in hosts if hosts.count(h) > 1), None)
    return f"port {dup} on this machine is forwarded twice" if dup else None


MACHINE_FIELDS = (
    Setting("name", Text(NAME, "must be a lower-case DNS label (letters, digits, '-')", "lower-case DNS label"),
            "Machine name: unique, a lower-case DNS label; names its resources and its Kubernetes node.",
            required="give each machine a name, a lower-case DNS label"),
    Setting("backend", Choice(BACKENDS), "static (an existing host), or qemu, multipass, aws (made by the stack).",
            "static"),
    Setting("arch", Arch(allow_detect=True), "Architecture; detect asks the host at `up`.", "detect",
            backends=("static",)),
    Setting("arch", Arch(), "Architecture of the machine to make.", backends=CREATED,
            required="say which architecture to make: x86_64 or aarch64"),
    Setting("user", _LINUX_USER, "SSH login user (non-root users need passwordless sudo).", "root",
            fix=_USER_FIX, backends=("static",)),
    Setting("user", _LINUX_USER, "Login user the stack creates (passwordless sudo).", DEFAULT_USER,
            fix=_USER_FIX, backends=CREATED),
    Setting("buildsImages", Flag(), "This machine builds images: runsc never becomes its Docker default runtime.",
            False),
    Setting("address", Text(describe="host name or IP, not a documentation range"),
            "Host name or IP address that SSH reaches.", check=address_problem, backends=("static",),
            required="give the host name or IP that SSH reaches"),
    Setting("port", Whole(1, 65535), "SSH port.", 22, backends=("static",)),
    Setting("hostKey", Text(describe=f"{', '.join(SSH_KEY_TYPES)} key line"),
            "The host's SSH public key line, pinned on every connection.", check=ssh_key_problem,
            fix="paste the line `ssh-keyscan -t ed25519 HOST` prints", backends=("static",)),
    Setting("privateAddress", Text(describe="IPv4 or IPv6 address"),
            "Address the other machines of the fleet reach this one on (its Kubernetes node IP); unset: the "
            "machine's default-route address.", check=private_address_problem, backends=("static",)),
    Setting("image", Text(), f"Base image: {_QEMU_IMAGE}.", backends=("qemu",), required=f"give {_QEMU_IMAGE}"),
    Setting("imageChecksum", Text(CHECKSUM, "is not a checksum", "sha256:<64 hex> or sha512:<128 hex>"),
            "Checked after the image is downloaded.", fix="write 'sha256:<64 hex>' or 'sha512:<128 hex>'",
            backends=("qemu",)),
    Setting("kernel", LocalPath("kernel (vmlinuz)"), "Direct kernel boot (with initrd), else firmware boots the disk.",
            backends=("qemu",)),
    Setting("initrd", LocalPath("initrd"), "The initrd for direct kernel boot.", backends=("qemu",)),
    Setting("kernelArgs", Text(), "Kernel command line for direct kernel boot.", "root=/dev/vda rw",
            backends=("qemu",)),
    Setting("firmware", LocalPath("UEFI firmware"), "UEFI firmware for disk boot.", backends=("qemu",),
            doc_default=f"{AARCH64_FIRMWARE} for aarch64 disk boot"),
    Setting("cpus", Whole(1, 64), "Virtual CPUs.", 2, backends=_VM),
    Setting("memory", Whole(256, 1048576, "MiB"), "Memory in MiB.", 1024, backends=_VM),
    Setting("diskSize", Text(SIZE, "is not a size", "e.g. 8G"), "Grow the disk to this size; unset keeps the image's.",
            fix=_SIZE_FIX, backends=("qemu",)),
    Setting("sshPort", Whole(1024, 65535), "127.0.0.1 port forwarded to the VM's SSH.", backends=("qemu",),
            doc_default=f"{SSH_PORT_BASE} + a hash of the name (stable, below {SSH_PORT_BASE + SSH_PORT_SPAN})"),
    Setting("accel", Choice(("auto", "kvm", "tcg")),
            "auto: KVM for this machine's own arch when it really works, else TCG (emulation).", "auto",
            backends=("qemu",)),
    Setting("bootTimeout", Whole(30, 7200, "seconds"), "Seconds until SSH answers with the pinned host key.", 900,
            backends=("qemu",)),
    Setting("lanAddress", Text(describe=f"private IPv4 address with prefix length, e.g. {LAN_EXAMPLE}"),
            "Address on a LAN the stack's VMs share (a second NIC), and the machine's private address; all of a "
            "stack's in one subnet. Unset: no LAN.", check=lan_address_problem,
            backends=("qemu",)),
    Setting("forwards", Strings(FORWARD, "HOSTPORT:GUESTPORT, e.g. 26443:6443", "['26443:6443']"),
            "TCP ports of the VM reachable from this machine at 127.0.0.1:HOSTPORT (SSH is always forwarded), "
            "e.g. a Kubernetes API server.", check=forwards_problem, backends=("qemu",)),
    Setting("image", Text(), "Ubuntu image multipass launches.", "24.04", backends=("multipass",)),
    Setting("diskSize", Text(SIZE, "is not a size", "e.g. 10G"), "Disk size.", "10G", fix=_SIZE_FIX,
            backends=("multipass",)),
    Setting("launchTimeout", Whole(30, 7200, "seconds"), "Seconds `multipass launch` may take.", 900,
            backends=("multipass",)),
    Setting("allowedCidr", Text(describe="CIDR, not /0, not a documentation range"),
            "Who may reach SSH (port 22); never the whole internet.", check=network_problem, backends=("aws",),
            required="say who may reach SSH, e.g. your own address as <address>/32"),
    Setting("instanceType", Text(_INSTANCE_TYPE, "is not an instance type", "e.g. t3.small"),
            "EC2 instance type; must match arch.", fix="e.g. t3.small", backends=("aws",),
            doc_default=", ".join(f"{t} ({a})" for a, t in AWS_DEFAULT_TYPES.items())),
    Setting("image", Choice(AWS_IMAGES), "OS whose newest AMI is looked up per arch.", "debian-12", backends=("aws",)),
    Setting("ami", Text(re.compile(r"^ami-[0-9a-f]{8,17}$"), "is not an AMI id", "ami-..."),
            "This AMI exactly, instead of image.", fix="an AMI id looks like ami-0123456789abcdef0", backends=("aws",)),
    Setting("region", Text(re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$"), "is not an AWS region", "e.g. eu-west-1"),
            "AWS region.", fix="e.g. eu-west-1", backends=("aws",), doc_default="the stack's aws:region"),
    Setting("subnetId", Text(re.compile(r"^subnet-[0-9a-f]{8,17}$"), "is not a subnet id", "subnet-..."),
            "Subnet to launch in; unset uses the default VPC.", fix="e.g. subnet-0123456789abcdef0", backends=("aws",)),
    Setting("diskSize", Text(re.compile(r"^[1-9][0-9]*G$"), "is not a size in GiB", "e.g. 20G"), "Root disk size.",
            fix="write a size in GiB like 20G", backends=("aws",), doc_default="the AMI's"),
    Setting("publicIp", Flag(), "Give the instance a public IP (SSH goes there).", True, backends=("aws",)),
)  # fmt: skip

SETTINGS = (
    Setting("machines", Items(MACHINE_FIELDS, "machines", "[{name: web1, address: web1.internal}]"),
            "The machines: existing hosts (static) or made by the stack (qemu, multipass, aws)."),
    Setting("sshPrivateKey", Text(), "SSH private key for static machines (a secret); made machines get a "
                                     "generated key unless this is set.", secret=True,
            doc_default="none (needed by static machines)"),
)  # fmt: skip


def fields_of(backend: str) -> tuple[Setting, ...]:
    """The machine fields one backend reads."""
    return tuple(s for s in MACHINE_FIELDS if backend in s.backends)


@dataclass(frozen=True)
class _Machine:
    """One machine's fields as read, with what the rules between them need."""

    at: str
    v: Values
    problems: list[str]

    def problem(self, field: str, text: str) -> None:
        self.problems.append(f"{self.at}.{field}: {text}")

    def arch(self) -> str | None:
        return self.v.maybe_text("arch") if self.v.ok("arch") else None


def _local_file(m: _Machine, field: str, exists: Callable[[str], bool], what: str) -> str | None:
    path = m.v.maybe_text(field)
    if path is not None and not exists(path):
        m.problem(field, f"{path} does not exist on this machine; build or download the {what} first")
        return None
    return path


def _static(m: _Machine, name: str) -> MachineSpec | None:
    v = m.v
    if not v.ok("address", "arch"):  # a spec with a default in their place would raise further problems
        return None
    return MachineSpec(
        name=name, arch=v.text("arch"), address=v.text("address"), port=v.number("port"), user=v.text("user"),
        host_key=v.maybe_text("hostKey"), private_address=v.maybe_text("privateAddress"),
    )  # fmt: skip


def _qemu_image(m: _Machine, exists: Callable[[str], bool], arch: str | None) -> str | None:
    raw = m.v.maybe_text("image")
    if raw is None:
        return None
    if raw in QEMU_IMAGES:
        return QEMU_IMAGES[raw][arch] if arch else None
    if re.match(r"^https?://", raw):
        return raw
    path = os.path.expanduser(raw)
    if not os.path.isabs(path):
        m.problem("image", f"'{raw}' must be an absolute path to the base image, a cloud image name or a URL")
        return None
    m.v["image"] = path
    return _local_file(m, "image", exists, "base image")


def _qemu(m: _Machine, name: str, exists: Callable[[str], bool], host_arch: str) -> MachineSpec | None:
    v, arch = m.v, m.arch()
    image = _qemu_image(m, exists, arch)
    kernel = _local_file(m, "kernel", exists, "kernel (vmlinuz)")
    initrd = _local_file(m, "initrd", exists, "initrd")
    if ("kernel" in v.given) != ("initrd" in v.given):
        absent = "initrd" if "kernel" in v.given else "kernel"
        m.problem(absent, "missing; direct kernel boot needs both kernel and initrd")
    firmware = _local_file(m, "firmware", exists, "UEFI firmware")
    if arch == "aarch64" and not {"kernel", "firmware"} & v.given:
        if exists(AARCH64_FIRMWARE):
            firmware = AARCH64_FIRMWARE
        else:
            m.problem(
                "firmware",
                f"aarch64 VMs that boot their disk need UEFI firmware and {AARCH64_FIRMWARE} is missing; "
                "`apt-get install qemu-efi-aarch64`, set firmware to another QEMU_EFI.fd, or boot a kernel directly",
            )
    if v["accel"] == "kvm" and arch and arch != host_arch:
        m.problem("accel", f"KVM runs only this machine's own architecture ({host_arch}), not {arch}; use auto or tcg")
    ssh_port = v.number("sshPort") if "sshPort" in v.given and v.ok("sshPort") else default_ssh_port(name)
    lan = v.maybe_text("lanAddress")
    if image is None or arch is None:
        return None
    options = QemuOptions(
        image=image, image_checksum=v.maybe_text("imageChecksum"), kernel=kernel, initrd=initrd,
        kernel_args=v.text("kernelArgs"), firmware=firmware, cpus=v.number("cpus"), memory_mb=v.number("memory"),
        disk_size=v.maybe_text("diskSize"), ssh_port=ssh_port, accel=v.text("accel"),
        boot_timeout=v.number("bootTimeout"), lan_address=lan, forwards=_forwards(v["forwards"]),
    )  # fmt: skip
    return MachineSpec(
        name=name, arch=arch, backend="qemu", address="127.0.0.1", port=ssh_port, user=v.text("user"), options=options,
        private_address=lan_ip(lan) if lan else None,
    )  # fmt: skip


def _forwards(value: object) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, (list, tuple)):
        return ()
    return tuple((int(h), int(g)) for h, g in (str(v).split(":") for v in value))


def _multipass(m: _Machine, name: str, host_arch: str) -> MachineSpec | None:
    v, arch = m.v, m.arch()
    if arch and arch != host_arch:
        m.problem(
            "arch",
            f"multipass runs only this machine's own architecture ({host_arch}), not {arch}; "
            f"use backend: qemu (emulates {arch}) or aws for {arch} machines",
        )
        return None
    if arch is None:
        return None
    options = MultipassOptions(
        image=v.text("image"), cpus=v.number("cpus"), memory_mb=v.number("memory"), disk_size=v.text("diskSize"),
        launch_timeout=v.number("launchTimeout"),
    )  # fmt: skip
    return MachineSpec(name=name, arch=arch, backend="multipass", user=v.text("user"), options=options)


def _aws(m: _Machine, name: str) -> MachineSpec | None:
    v, arch = m.v, m.arch()
    instance_type = v.maybe_text("instanceType")
    if arch and instance_type and aws_instance_arch(instance_type) != arch:
        m.problem(
            "instanceType",
            f"'{instance_type}' is an {aws_instance_arch(instance_type)} instance type but arch is {arch}; "
            f"use e.g. {AWS_DEFAULT_TYPES[arch]}",
        )
        instance_type = None
    cidr = v.maybe_text("allowedCidr")
    if arch is None or cidr is None or not v.ok("allowedCidr"):
        return None
    disk = v.maybe_text("diskSize")
    options = AwsOptions(
        allowed_cidr=cidr, instance_type=instance_type or AWS_DEFAULT_TYPES[arch], image=v.text("image"),
        ami=v.maybe_text("ami"), region=v.maybe_text("region"), subnet_id=v.maybe_text("subnetId"),
        disk_gb=int(disk[:-1]) if disk else None, public_ip=v.flag("publicIp"),
    )  # fmt: skip
    return MachineSpec(name=name, arch=arch, backend="aws", user=v.text("user"), options=options)


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
    if items is None or SETTINGS[0].kind.parse(items, KEY, problems) is BAD or not isinstance(items, list):
        return ()
    host = host_arch or local_arch()
    specs: list[MachineSpec] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        at = f"{KEY}[{i}]"
        if not isinstance(item, Mapping):
            problems.append(f"{at}: must be an object with at least name and address")
            continue
        backend = str(item.get("backend", "static"))
        if backend in BACKENDS:
            m = _Machine(at, read(fields_of(backend), item, at, problems, f"{backend} machines"), problems)
        else:  # the backend decides which fields exist: check only the name and the backend
            known = {k: item.get(k) for k in ("name", "backend")}
            m = _Machine(at, read(MACHINE_FIELDS[:2], known, at, problems, "machines"), problems)
        if not m.v.ok("name"):
            continue
        name = m.v.text("name")
        if name in seen:
            m.problem("name", f"'{name}' is used twice; machine names must be unique")
        seen.add(name)
        if not m.v.ok("backend"):
            continue
        spec: MachineSpec | None
        if backend == "qemu":
            spec = _qemu(m, name, exists, host)
        elif backend == "multipass":
            spec = _multipass(m, name, host)
        elif backend == "aws":
            spec = _aws(m, name)
        else:
            spec = _static(m, name)
        if spec:
            specs.append(dataclasses.replace(spec, builds_images=m.v.flag("buildsImages")))
    _check_ports(items, specs, problems)
    _check_lan(items, specs, problems)
    needs_key = [s.name for s in specs if s.backend == "static"]
    if needs_key and not has_private_key:
        problems.append(
            f"{NS}:sshPrivateKey: missing; machines {', '.join(needs_key)} need an "
            "SSH key: `pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519`"
        )
    return tuple(specs)


def _check_ports(items: list[object], specs: list[MachineSpec], problems: list[str]) -> None:
    """Local VMs forward SSH from 127.0.0.1:<sshPort> (and `forwards`); two cannot share a port."""
    index = {item.get("name"): i for i, item in enumerate(items) if isinstance(item, Mapping)}
    owner: dict[int, str] = {}
    for spec in specs:
        if spec.backend != "qemu" or not isinstance(spec.options, QemuOptions):
            continue
        for key, port in [("sshPort", spec.port), *(("forwards", host) for host, _ in spec.options.forwards)]:
            if port in owner:
                problems.append(
                    f"{KEY}[{index[spec.name]}].{key}: port {port} on 127.0.0.1 is also used by machine "
                    f"'{owner[port]}'; give one of them another port"
                )
            owner.setdefault(port, spec.name)


def _check_lan(items: list[object], specs: list[MachineSpec], problems: list[str]) -> None:
    """The stack's VMs share one LAN: one subnet, each address once."""
    index = {item.get("name"): i for i, item in enumerate(items) if isinstance(item, Mapping)}
    members = [
        LanMember(at=f"{KEY}[{index[s.name]}]", name=s.name, address=s.options.lan_address)
        for s in specs
        if isinstance(s.options, QemuOptions) and s.options.lan_address
    ]
    problems.extend(lan_problems(members))
