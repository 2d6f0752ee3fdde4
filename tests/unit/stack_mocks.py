"""Mocks that answer as a whole stack's providers do: generated keys, VM launchers, the cloud, the cluster.

Shared by the example-stack test and the library-use example's test.
"""

from __future__ import annotations

import pulumi

from components.fleet.keys import generate_ed25519
from tests.unit.fleet_mocks import LAUNCHER_STDOUT
from tests.unit.mocks import RecordingMocks

KUBECONFIG = "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://10.0.1.1:6443\n  name: c\n"


class StackMocks(RecordingMocks):
    """RecordingMocks plus what the cloud and the cluster answer: an AMI, an address, a finished Job."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        rid, outputs = super().new_resource(args)
        if args.typ == "pulumi-python:dynamic:Resource":  # the stack's generated SSH keys
            pair = generate_ed25519(args.inputs.get("comment", ""))
            outputs.update(private_key=pair.private_key, public_key=pair.public_key)
        elif args.typ == "command:local:Command":  # a VM launcher's facts
            outputs["stdout"] = LAUNCHER_STDOUT.format(name=args.name.removesuffix("-vm"), address="127.0.0.1")
        elif args.typ == "aws:ec2/instance:Instance":
            outputs.update(publicIp="", privateIp="10.0.0.8")
        elif args.typ == "aws:ec2/keyPair:KeyPair":
            outputs["keyName"] = f"{args.name}-kp"
        elif args.typ == "kubernetes:batch/v1:Job":
            outputs["status"] = {"succeeded": 1, "completionTime": "2026-11-28T10:00:00Z"}
        return [rid, outputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token.endswith("getAmi"):
            return {"id": "ami-0123456789abcdef0"}
        if args.token.endswith("getSubnet"):
            return {"id": args.args.get("id"), "vpcId": "vpc-0abc"}
        return {}
