"""components/lean_state.py under mocks: what each registration sends the engine, and a loud
warning when the SDK functions it replaces are gone or changed."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pulumi
import pytest
from pulumi.runtime import resource as sdk_resource
from pulumi_command import remote

from components import lean_state
from components.program import build
from tests.unit.mocks import KEY, RecordingMocks, RecordingMonitor, configure

CONNECTION = remote.ConnectionArgs(host="10.0.2.1")
COMPONENTS = (Path(__file__).parents[2] / "components").as_uri() + "/"
HOOKS = ("_get_stack_trace", "_get_source_position")


class RequestMonitor(RecordingMonitor):
    """Keeps each registration request as the engine would receive it."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.requests: dict[str, object] = {}

    def RegisterResource(self, request):
        self.requests[request.name] = request
        return super().RegisterResource(request)


@pytest.fixture
def monitor() -> RequestMonitor:
    mocks = RecordingMocks()
    monitor = RequestMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="gvisor-fleet", stack="unit", preview=False, monitor=monitor)
    return monitor


@pytest.fixture
def sdk(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The SDK's functions as they are now, put back after the test (installing the hook is global)."""
    for hook in HOOKS:
        monkeypatch.setattr(sdk_resource, hook, getattr(sdk_resource, hook))
    yield


@pytest.fixture
def sdk_as_shipped(sdk: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's own functions, even when an earlier test installed the hook."""
    lean_state.keep_only_the_source_position()  # records the originals if nothing did yet
    for hook in HOOKS:
        monkeypatch.setattr(sdk_resource, hook, lean_state.sdk_originals[hook])


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pulumi.runtime.test
def test_a_registration_carries_the_declaring_line_and_no_stack_trace(sdk, monitor):
    assert lean_state.keep_only_the_source_position() is True
    line, command = sys._getframe().f_lineno, remote.Command("probe", create="true", connection=CONNECTION)

    def check(_):
        request = monitor.requests["probe"]
        assert request.sourcePosition.uri == Path(__file__).as_uri()
        assert request.sourcePosition.line == line
        assert list(request.stackTrace.frames) == []

    return command.urn.apply(check)


@pulumi.runtime.test
def test_without_the_hook_the_sdk_sends_the_whole_stack(sdk_as_shipped, monitor):
    """What the hook saves: the SDK's own functions send every frame below the declaring line."""
    line, command = sys._getframe().f_lineno, remote.Command("probe", create="true", connection=CONNECTION)

    def check(_):
        request = monitor.requests["probe"]
        assert request.sourcePosition.line == line
        assert len(request.stackTrace.frames) > 5
        assert len(request.stackTrace.SerializeToString()) > 500

    return command.urn.apply(check)


@pulumi.runtime.test
def test_every_resource_of_the_program_carries_its_line_in_components_and_no_stack_trace(sdk, monitor):
    machines = [{"name": "amd", "address": "10.0.2.1", "arch": "x86_64"}]
    configure(machines=machines, sshPrivateKey=KEY)
    program = build(pulumi.Config("gvisor-fleet"))

    def check(_):
        assert len(monitor.requests) >= 7, sorted(monitor.requests)
        for name, request in monitor.requests.items():
            assert request.sourcePosition.uri.startswith(COMPONENTS), (name, request.sourcePosition)
            assert request.sourcePosition.line > 0, name
            assert list(request.stackTrace.frames) == [], name

    return program.hosts["amd"].checks_passed.apply(check)


@pytest.mark.parametrize("hook", [*HOOKS, "_get_source_position_for_frame"])
def test_a_missing_sdk_function_warns_and_replaces_nothing(hook, sdk, monitor, monkeypatch, caplog):
    monkeypatch.delattr(sdk_resource, hook)
    before = {h: getattr(sdk_resource, h, None) for h in HOOKS}
    assert lean_state.keep_only_the_source_position() is False
    assert {h: getattr(sdk_resource, h, None) for h in HOOKS} == before
    (warning,) = warnings_of(caplog)
    assert f"pulumi.runtime.resource.{hook} is gone" in warning
    assert "Every resource now stores its whole call stack" in warning
    assert "Fix: go back to the pulumi version requirements.txt pins" in warning


def test_a_changed_signature_warns_and_replaces_nothing(sdk, monitor, monkeypatch, caplog):
    monkeypatch.setattr(sdk_resource, "_get_source_position", lambda stack, frames_to_skip: None)
    before = sdk_resource._get_stack_trace
    assert lean_state.keep_only_the_source_position() is False
    assert sdk_resource._get_stack_trace is before
    (warning,) = warnings_of(caplog)
    assert "pulumi.runtime.resource._get_source_position no longer takes 1 argument(s)" in warning


def test_an_sdk_that_no_longer_calls_the_functions_warns(sdk, monitor, monkeypatch, caplog):
    def register_resource(*args, **kwargs):  # registers without asking for a stack trace
        return None

    monkeypatch.setattr(sdk_resource, "register_resource", register_resource)
    assert lean_state.keep_only_the_source_position() is False
    (warning,) = warnings_of(caplog)
    assert "pulumi.runtime.resource.register_resource no longer calls _get_stack_trace" in warning
    assert "register_resource no longer calls _get_source_position" in warning
    assert "read_resource" not in warning


def test_the_pinned_sdk_installs_without_a_warning(sdk, monitor, caplog):
    assert lean_state.keep_only_the_source_position() is True
    assert sdk_resource._get_stack_trace is lean_state._source_position_only
    assert warnings_of(caplog) == []
