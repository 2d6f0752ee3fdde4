"""Asks a sandbox's running containerd, over the CRI API, which runtimes its CRI plugin serves.

The files on disk say what containerd will read at its next start; only the
running daemon says what it serves now (a step killed between writing the
config and restarting containerd leaves the two apart). The CRI `Status` call
with `verbose` returns the plugin's effective config as JSON in `info["config"]`.
No generated stubs: the request is one bool field, and the reply's map is
decoded from the protobuf wire format here.
"""

from __future__ import annotations

import json

import grpc

from tests.host.sandbox import Sandbox

_STATUS = "/runtime.v1.RuntimeService/Status"
_VERBOSE = b"\x08\x01"  # StatusRequest{verbose: true}


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, bytes]]:
    """The length-delimited fields of a message (the only kind StatusResponse's map uses)."""
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 2:
            size, i = _varint(buf, i)
            out.append((number, buf[i : i + size]))
            i += size
        elif wire == 0:
            _, i = _varint(buf, i)
        else:
            raise ValueError(f"unexpected wire type {wire} in a CRI reply")
    return out


def status_info(host: Sandbox, address: str = "/run/containerd/containerd.sock") -> dict[str, str]:
    """StatusResponse.info (field 2, map<string, string>) of the sandbox's containerd at ADDRESS."""
    # The socket is reached through the sandbox's root as its PID 1 sees it.
    target = f"unix:/proc/{host.pid}/root{address}"
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(_STATUS, request_serializer=None, response_deserializer=None)
        reply = call(_VERBOSE, timeout=10)
    info = {}
    for number, entry in _fields(reply):
        if number == 2:
            kv = dict(_fields(entry))
            info[kv.get(1, b"").decode()] = kv.get(2, b"").decode()
    return info


def cri_runtimes(host: Sandbox, address: str = "/run/containerd/containerd.sock") -> set[str]:
    """The runtime handlers the running containerd's CRI plugin serves."""
    config = json.loads(status_info(host, address)["config"])
    return set(config["containerd"]["runtimes"])
