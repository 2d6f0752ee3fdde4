"""EC2 machines: x86_64 and Graviton (aarch64) from one stack.

pulumi-aws is an optional extra (`pip install pulumi-aws==7.51.1`, the version
requirements-dev.txt pins and the tests run): it is imported
only when a stack has aws machines, so other stacks never load it. The pure
parts (AMI query per arch, the SSH ingress rule, names) are plain functions.

Per region the fleet makes one key pair (the stack's login key); per region,
subnet and allowed CIDR one security group that lets only that CIDR reach
port 22. Every instance gets the shared cloud-init user-data with its own
pinned host key, and requires IMDSv2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi_command import remote

from components.fleet.cloudinit import secret_user_data
from components.fleet.keys import SshKey, key_material
from components.fleet.machine import Machine
from components.fleet.qemu import READY_SCRIPT
from components.fleet.specs import AwsOptions, MachineSpec

# Publishers' AWS accounts and AMI name patterns, per image and Debian arch name.
AMI_OWNERS = {"debian": "136693071363", "ubuntu": "099720109477"}
AMI_NAMES = {
    "debian-12": "debian-12-{arch}-*",
    "ubuntu-24.04": "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-{arch}-server-*",
    "ubuntu-22.04": "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-{arch}-server-*",
}
EC2_ARCH = {"x86_64": "x86_64", "aarch64": "arm64"}
DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclass(frozen=True)
class AmiQuery:
    owner: str
    name: str
    architecture: str  # as EC2 names it: x86_64 or arm64


def ami_query(image: str, arch: str) -> AmiQuery:
    """Where the newest AMI of `image` for `arch` comes from."""
    return AmiQuery(
        owner=AMI_OWNERS[image.split("-", 1)[0]],
        name=AMI_NAMES[image].format(arch=DEBIAN_ARCH[arch]),
        architecture=EC2_ARCH[arch],
    )


def ssh_ingress(cidr: str) -> dict[str, Any]:
    """The only inbound rule: SSH from the configured network."""
    family = "ipv6_cidr_blocks" if ":" in cidr else "cidr_blocks"
    return {"protocol": "tcp", "from_port": 22, "to_port": 22, family: [cidr], "description": "SSH (gvisor-fleet)"}


def group_key(o: AwsOptions) -> str:
    """Machines sharing region, subnet and allowed CIDR share one security group."""
    raw = f"{o.region or 'default'}-{o.subnet_id or 'default'}-{o.allowed_cidr}"
    return re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")


def import_sdk() -> Any:
    try:
        import pulumi_aws
    except ImportError:
        raise pulumi.RunError(
            "gvisor-fleet:machines: backend 'aws' needs the pulumi-aws package, which is an optional extra; "
            "install it into the project's virtualenv: pip install pulumi-aws==7.51.1"
        ) from None
    return pulumi_aws


class AwsFleet(pulumi.ComponentResource):
    """The EC2 part of a fleet: shared providers, key pairs and security groups, one instance per machine."""

    def __init__(
        self,
        name: str,
        public_key: pulumi.Input[str],
        private_key: pulumi.Input[str],
        sdk: Any = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("gvisor-fleet:fleet:AwsFleet", name, None, opts)
        self._aws = sdk or import_sdk()
        self._public_key = public_key
        self._private_key = private_key
        self._providers: dict[str, Any] = {}
        self._key_pairs: dict[str, Any] = {}
        self._groups: dict[str, Any] = {}
        self.register_outputs({})

    def _opts(self, region: str | None, **extra: Any) -> pulumi.ResourceOptions:
        provider = None
        if region:
            if region not in self._providers:
                self._providers[region] = self._aws.Provider(
                    f"aws-{region}", region=region, opts=pulumi.ResourceOptions(parent=self)
                )
            provider = self._providers[region]
        return pulumi.ResourceOptions(parent=self, provider=provider, **extra)

    def _key_pair(self, region: str | None) -> Any:
        key = region or "default"
        if key not in self._key_pairs:
            self._key_pairs[key] = self._aws.ec2.KeyPair(
                f"gvisor-fleet-{key}",
                public_key=pulumi.Output.from_input(self._public_key).apply(key_material),
                opts=self._opts(region),
            )
        return self._key_pairs[key]

    def _group(self, o: AwsOptions) -> Any:
        key = group_key(o)
        if key not in self._groups:
            ec2 = self._aws.ec2
            vpc_id = None
            if o.subnet_id:
                vpc_id = ec2.get_subnet_output(id=o.subnet_id, opts=pulumi.InvokeOptions(parent=self)).vpc_id
            self._groups[key] = ec2.SecurityGroup(
                f"ssh-{key}",
                description=f"SSH from {o.allowed_cidr} only (gvisor-fleet)",
                vpc_id=vpc_id,
                ingress=[ec2.SecurityGroupIngressArgs(**ssh_ingress(o.allowed_cidr))],
                # Machines fetch gVisor, packages and images.
                egress=[
                    ec2.SecurityGroupEgressArgs(
                        protocol="-1", from_port=0, to_port=0, cidr_blocks=["0.0.0.0/0"], ipv6_cidr_blocks=["::/0"]
                    )
                ],
                opts=self._opts(o.region),
            )
        return self._groups[key]

    def machine(self, spec: MachineSpec) -> Machine:
        assert isinstance(spec.options, AwsOptions)
        o, name, ec2 = spec.options, spec.name, self._aws.ec2
        if o.ami:
            ami_id: pulumi.Input[str] = o.ami
        else:
            q = ami_query(o.image, spec.arch)
            ami_id = ec2.get_ami_output(
                most_recent=True,
                owners=[q.owner],
                filters=[
                    ec2.GetAmiFilterArgs(name="name", values=[q.name]),
                    ec2.GetAmiFilterArgs(name="architecture", values=[q.architecture]),
                ],
                opts=pulumi.InvokeOptions(parent=self, provider=self._opts(o.region).provider),
            ).id
        host_key = SshKey(f"{name}-host-key", comment=f"{name} host key", opts=pulumi.ResourceOptions(parent=self))
        seed = secret_user_data(name, spec.user, self._public_key, host_key.private_key, host_key.public_key)
        root = ec2.InstanceRootBlockDeviceArgs(volume_size=o.disk_gb, volume_type="gp3") if o.disk_gb else None
        instance = ec2.Instance(
            name,
            ami=ami_id,
            instance_type=o.instance_type,
            key_name=self._key_pair(o.region).key_name,
            vpc_security_group_ids=[self._group(o).id],
            subnet_id=o.subnet_id,
            associate_public_ip_address=o.public_ip,
            user_data=seed,
            user_data_replace_on_change=True,
            root_block_device=root,
            metadata_options=ec2.InstanceMetadataOptionsArgs(http_tokens="required"),
            tags={"Name": name, "gvisor-fleet:stack": pulumi.get_stack(), "gvisor-fleet:arch": spec.arch},
            opts=self._opts(o.region, additional_secret_outputs=["userData"]),
        )
        address = instance.public_ip if o.public_ip else instance.private_ip
        connection = remote.ConnectionArgs(
            host=address,
            user=spec.user,
            private_key=pulumi.Output.secret(self._private_key),
            host_key=host_key.public_key.apply(key_material),
            # A new instance boots for a minute or two before sshd answers.
            dial_error_limit=60,
            per_dial_timeout=15,
        )
        ready = remote.Command(
            f"{name}-ssh-ready",
            connection=connection,
            create=READY_SCRIPT,
            triggers=[instance.id],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[instance]),
        )
        return Machine(
            name=name, arch=spec.arch, user=spec.user, connection=connection, ready=(ready,), instance=instance.id,
            private_address=instance.private_ip,
        )  # fmt: skip
