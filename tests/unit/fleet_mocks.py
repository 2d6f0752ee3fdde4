"""Pulumi mocks for fleet graphs: keys really made, launchers answer with facts."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pulumi

from components.fleet.keys import generate_ed25519

LAUNCHER_STDOUT = "name={name}\naddress={address}\nport=20022\npid=4242\ninstance=uuid-{name}\nssh_seconds=40\n"


class FleetMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []
        self.calls: list[pulumi.runtime.MockCallArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(args)
        outputs = dict(args.inputs)
        if args.typ == "pulumi-python:dynamic:Resource":
            pair = generate_ed25519(args.inputs.get("comment", ""))
            outputs.update(private_key=pair.private_key, public_key=pair.public_key)
        elif args.typ == "command:local:Command":
            name = args.name.removesuffix("-vm")
            outputs["stdout"] = LAUNCHER_STDOUT.format(name=name, address="10.1.2.3")
        elif args.typ == "command:remote:Command":
            outputs["stdout"] = "x86_64"
        elif args.typ == "aws:ec2/instance:Instance":
            outputs.update(public_ip="198.51.100.7", private_ip="10.0.0.7")
        elif args.typ == "aws:ec2/keyPair:KeyPair":
            outputs["key_name"] = f"{args.name}-kp"
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        self.calls.append(args)
        if args.token.endswith("getAmi"):
            return {"id": "ami-0123456789abcdef0"}
        if args.token.endswith("getSubnet"):
            return {"id": args.args.get("id"), "vpc_id": "vpc-0abc"}
        return {}

    def of_type(self, typ: str) -> list[pulumi.runtime.MockResourceArgs]:
        return [r for r in self.resources if r.typ == typ]

    def named(self, typ: str) -> dict[str, pulumi.runtime.MockResourceArgs]:
        return {r.name: r for r in self.of_type(typ)}


class _Fake(pulumi.CustomResource):
    """Stands in for a pulumi-aws resource class (same name, type token and outputs)."""

    TYPE = ""
    OUTPUTS: tuple[str, ...] = ()

    def __init__(self, resource_name: str, opts: pulumi.ResourceOptions | None = None, **props: Any) -> None:
        super().__init__(self.TYPE, resource_name, {**{o: None for o in self.OUTPUTS}, **props}, opts)


class _Provider(pulumi.ProviderResource):
    def __init__(self, resource_name: str, opts: pulumi.ResourceOptions | None = None, **props: Any) -> None:
        super().__init__("aws", resource_name, props, opts)


def _invoke(token: str, **args: Any) -> Any:
    opts = args.pop("opts", None)
    return pulumi.Output.from_input(pulumi.runtime.invoke(token, args, opts=opts).value)


def fake_aws() -> SimpleNamespace:
    """The slice of the pulumi-aws API the aws backend uses, recording into the mocks."""

    class KeyPair(_Fake):
        TYPE, OUTPUTS = "aws:ec2/keyPair:KeyPair", ("key_name",)

    class SecurityGroup(_Fake):
        TYPE = "aws:ec2/securityGroup:SecurityGroup"

    class Instance(_Fake):
        TYPE, OUTPUTS = "aws:ec2/instance:Instance", ("public_ip", "private_ip")

    def get_ami_output(**args: Any) -> Any:
        return SimpleNamespace(id=_invoke("aws:ec2/getAmi:getAmi", **args).apply(lambda r: r["id"]))

    def get_subnet_output(**args: Any) -> Any:
        return SimpleNamespace(vpc_id=_invoke("aws:ec2/getSubnet:getSubnet", **args).apply(lambda r: r["vpc_id"]))

    ec2 = SimpleNamespace(
        KeyPair=KeyPair,
        SecurityGroup=SecurityGroup,
        Instance=Instance,
        SecurityGroupIngressArgs=dict,
        SecurityGroupEgressArgs=dict,
        InstanceRootBlockDeviceArgs=dict,
        InstanceMetadataOptionsArgs=dict,
        GetAmiFilterArgs=dict,
        get_ami_output=get_ami_output,
        get_subnet_output=get_subnet_output,
    )
    return SimpleNamespace(Provider=_Provider, ec2=ec2)
