"""Keeps each resource's record in the stack's state to what the engine needs.

The Python SDK sends the whole call stack with every resource registration
(language host, asyncio and SDK frames: about 1.3 KB per resource), and the
engine stores it in the state, rewritten at every checkpoint. For a fleet of
hundreds of machines with seven resources each that is most of the state.
Only the first frame, the line of this program that declared the resource,
is kept: it is also the resource's source position, which the engine shows
in its messages. And the SSH key every remote resource keeps (encrypted, in
its inputs and its outputs) is stored in its most compact form.
"""

from __future__ import annotations

import sys
import traceback
from functools import cache
from typing import Any

import pulumi
from pulumi.runtime import resource as _sdk_resource
from pulumi.runtime.proto import source_pb2
from pulumi_command import remote


def _declaring_frame() -> Any:
    """The SDK's stack trace cut to its first frame, found without building the others.

    Same walk as the SDK's `_get_stack_trace`: outward from here to the third
    `__init__` (Resource, Custom/ComponentResource, the concrete class); the
    frame that called it declared the resource.
    """
    frame = sys._getframe(1)
    inits = 0
    while frame is not None:
        if frame.f_code.co_name == "__init__":
            inits += 1
            if inits == 3:
                caller = frame.f_back
                if caller is None:
                    break
                summary = traceback.FrameSummary(caller.f_code.co_filename, caller.f_lineno, "", lookup_line=False)
                position = _sdk_resource._get_source_position_for_frame(summary)
                return source_pb2.StackTrace(frames=[source_pb2.StackFrame(pc=position)])
        frame = frame.f_back  # type: ignore[assignment]
    return source_pb2.StackTrace()


def keep_only_the_declaring_frame() -> None:
    """Sends the SDK's stack traces cut to their first frame. A no-op on SDKs without them."""
    if hasattr(_sdk_resource, "_get_stack_trace") and hasattr(_sdk_resource, "_get_source_position_for_frame"):
        _sdk_resource._get_stack_trace = _declaring_frame


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
