import pulumi
import pytest

from tests.unit.mocks import RecordingMocks


@pytest.fixture
def mocks() -> RecordingMocks:
    m = RecordingMocks()
    pulumi.runtime.set_mocks(m, project="gvisor-fleet", stack="unit", preview=False)
    return m
