"""Keeps each resource's record in the stack's state to what the engine needs.

The Python SDK sends the whole call stack with every resource registration
(language host, asyncio and SDK frames: about 1.3 KB per resource), and the
engine stores it in the state, rewritten at every checkpoint. For a fleet of
hundreds of machines with seven resources each that is most of the state.
Only the source position is kept: the line of this program that declared the
resource, which the engine shows in its messages. And the SSH key every
remote resource keeps (encrypted, in its inputs and its outputs) is stored in
its most compact form.

Keeping only the source position replaces two private functions of the SDK.
Before replacing them, the SDK is checked to still have them, with the same
parameters, called where resources are registered; if not, nothing is
replaced and preview and up show a warning, since the state would otherwise
grow without anyone noticing.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import sys
import traceback
from functools import cache
from types import CodeType

import pulumi
from pulumi.runtime import resource as _sdk_resource
from pulumi.runtime.proto import source_pb2
from pulumi_command import remote

# The declaring line of the resource being registered: the SDK asks for the
# stack trace, then at once (same thread, no await between) for its position.
_declared_at: list[source_pb2.SourcePosition | None] = [None]


def _source_position_only() -> source_pb2.StackTrace:
    """In place of the SDK's `_get_stack_trace`: no frames (so the state keeps
    no stack trace), after noting the declaring line for `_declared_position`.

    Same walk as the SDK's: outward from here to the third `__init__`
    (Resource, Custom/ComponentResource, the concrete class); the frame that
    called it declared the resource.
    """
    _declared_at[0] = None
    frame = sys._getframe(1)
    inits = 0
    while frame is not None:
        if frame.f_code.co_name == "__init__":
            inits += 1
            if inits == 3:
                caller = frame.f_back
                if caller is not None:
                    summary = traceback.FrameSummary(caller.f_code.co_filename, caller.f_lineno, "", lookup_line=False)
                    _declared_at[0] = _sdk_resource._get_source_position_for_frame(summary)
                break
        frame = frame.f_back  # type: ignore[assignment]
    return source_pb2.StackTrace()


def _declared_position(stack: source_pb2.StackTrace) -> source_pb2.SourcePosition | None:
    return _declared_at[0]


# What this module replaces, with the parameters each takes; checked before anything is replaced.
_HOOKS = {"_get_stack_trace": 0, "_get_source_position": 1, "_get_source_position_for_frame": 1}
# The SDK's own functions, once replaced (tests put them back to compare).
sdk_originals: dict[str, object] = {}
# Where the SDK calls the first two: the registration paths whose requests carry the stack trace.
_CALLERS = ("register_resource", "read_resource")


def _calls(code: CodeType, name: str) -> bool:
    """Whether `code`, or a function nested in it, refers to the global `name`."""
    return name in code.co_names or any(isinstance(c, CodeType) and _calls(c, name) for c in code.co_consts)


def _hook_problems() -> list[str]:
    """What is missing or changed in the SDK's hooks; empty when they are as this module expects."""
    problems = []
    for hook, arity in _HOOKS.items():
        function = getattr(_sdk_resource, hook, None)
        if not callable(function):
            problems.append(f"pulumi.runtime.resource.{hook} is gone")
        elif function not in (_source_position_only, _declared_position) and (
            len(inspect.signature(function).parameters) != arity
        ):
            problems.append(f"pulumi.runtime.resource.{hook} no longer takes {arity} argument(s)")
    for caller in _CALLERS:
        function = getattr(_sdk_resource, caller, None)
        code = getattr(function, "__code__", None)
        for hook in ("_get_stack_trace", "_get_source_position"):
            if code is None or not _calls(code, hook):
                problems.append(f"pulumi.runtime.resource.{caller} no longer calls {hook}")
    return problems


def keep_only_the_source_position() -> bool:
    """Registers resources with their source position and no stack trace.

    On an SDK whose hooks are gone or changed it replaces nothing (a wrong
    replacement would break every registration) and warns at preview and up:
    the state then grows by the whole call stack of every resource.
    """
    problems = _hook_problems()
    if problems:
        pulumi.log.warn(
            f"components/lean_state.py cannot keep the stack trace out of the state with "
            f"pulumi {_sdk_version()}: {'; '.join(problems)}. Every resource now stores its whole call stack "
            "(about 1.3 KB each; the state's bound is 25 KB per machine). Fix: go back to the pulumi version "
            "requirements.txt pins, or update lean_state.py for this SDK (tests/unit/test_lean_state.py checks it)."
        )
        return False
    for hook in ("_get_stack_trace", "_get_source_position"):
        sdk_originals.setdefault(hook, getattr(_sdk_resource, hook))
    _sdk_resource._get_stack_trace = _source_position_only
    _sdk_resource._get_source_position = _declared_position
    return True


def _sdk_version() -> str:
    try:
        return importlib.metadata.version("pulumi")
    except importlib.metadata.PackageNotFoundError:
        return "(unknown version)"


@cache  # a fleet's machines share one key: parse it once
def compact_private_key(text: str) -> str:
    """An unencrypted ed25519 key in PKCS#8 PEM (119 bytes) instead of OpenSSH's format (about 400).

    Every remote resource keeps its connection, key included, encrypted in the
    state, twice (inputs and outputs); the command provider reads both formats.
    Any other key is returned unchanged.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if "BEGIN OPENSSH PRIVATE KEY" not in text:
        return text
    try:
        key = serialization.load_ssh_private_key(text.encode(), password=None)
    except (ValueError, TypeError):
        return text
    if not isinstance(key, Ed25519PrivateKey):
        return text
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem.decode()


def lean_connection(connection: remote.ConnectionArgs) -> remote.ConnectionArgs:
    """The same connection with its private key (if any) in the compact form; still a secret."""
    values = dict(vars(connection))
    key = values.get("private_key")
    if key is not None:
        compact: pulumi.Output[str] = pulumi.Output.from_input(key).apply(compact_private_key)
        values["private_key"] = pulumi.Output.secret(compact)
    return remote.ConnectionArgs(**values)
