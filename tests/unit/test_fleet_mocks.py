"""The fleet mocks' stand-in for pulumi-aws (tests/unit/fleet_mocks.py) against the real SDK."""

from __future__ import annotations

from tests.unit.fleet_mocks import fake_aws


def test_fake_aws_has_the_real_sdk_names():
    """With pulumi-aws installed (an optional extra), the stand-in must not drift from it."""
    import pytest

    aws = pytest.importorskip("pulumi_aws", reason="pulumi-aws (optional extra) is not installed")
    fake = fake_aws()
    for name in vars(fake.ec2):
        assert hasattr(aws.ec2, name), f"pulumi_aws.ec2 has no {name}"
    for cls in ("KeyPair", "SecurityGroup", "Instance"):
        real = getattr(aws.ec2, cls)
        token = getattr(real, "pulumi_type", None)
        if isinstance(token, str):
            assert token == getattr(fake.ec2, cls).TYPE
