import pytest

from tests.unit.mocks import RecordingMocks, use


@pytest.fixture
def mocks() -> RecordingMocks:
    return use(RecordingMocks())
