"""Keeps each resource's record in the stack's state to what the engine needs.

The Python SDK sends the whole call stack with every resource registration
(language host, asyncio and SDK frames: about 1.3 KB per resource), and the
engine stores it in the state, rewritten at every checkpoint. For a fleet of
hundreds of machines with seven resources each that is most of the state.
Only the source position is kept: the line of this program that declared the
resource, which the engine shows in its messages. And the SSH key every
remote resource keeps (encrypted, in its inputs and its outputs) is stored in
its most compact form.
"""

from __future__ import annotations

import sys
import traceback
from functools import cache

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


def keep_only_the_source_position() -> None:
    """Registers resources with their source position and no stack trace. A no-op on SDKs without these hooks."""
    hooks = ("_get_stack_trace", "_get_source_position", "_get_source_position_for_frame")
    if all(hasattr(_sdk_resource, hook) for hook in hooks):
        _sdk_resource._get_stack_trace = _source_position_only
        _sdk_resource._get_source_position = _declared_position


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
