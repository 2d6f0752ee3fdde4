"""SSH keys the fleet makes: the stack's client key and each machine's host key.

Keys are ed25519, made in Python (`cryptography`) by a small dynamic provider:
`create` runs once and the key then lives in the stack's state, encrypted as a
secret, so every later `pulumi up` sees the same key and changes nothing.
Replacing the resource (or `pulumi up --replace`) makes a new key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider

ALGORITHM = "ed25519"


@dataclass(frozen=True)
class KeyPair:
    private_key: str  # OpenSSH format (-----BEGIN OPENSSH PRIVATE KEY-----)
    public_key: str  # one authorized_keys line: "ssh-ed25519 AAAA... comment"


def generate_ed25519(comment: str) -> KeyPair:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return KeyPair(private_key=private, public_key=f"{public} {comment}".strip())


def public_key_of(private_key: str, comment: str = "") -> str:
    """The authorized_keys line for a private key (OpenSSH or PEM; ed25519, RSA or ECDSA)."""
    from cryptography.hazmat.primitives import serialization

    data = private_key.strip().encode() + b"\n"
    try:
        if b"BEGIN OPENSSH PRIVATE KEY" in data:
            key: Any = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    except (ValueError, TypeError, AttributeError) as err:
        raise ValueError(
            "gvisor-fleet:sshPrivateKey: cannot read the key (it must be an unencrypted OpenSSH or PEM "
            f"private key, e.g. from `ssh-keygen -t ed25519 -N ''`): {err}"
        ) from None
    return f"{public.decode()} {comment}".strip()


def key_material(public_key: str) -> str:
    """'ssh-ed25519 AAAA... comment' -> 'ssh-ed25519 AAAA...' (what host key pinning compares)."""
    return " ".join(public_key.split()[:2])


class _SshKeyProvider(ResourceProvider):
    """Makes a key once; its inputs (algorithm, comment) only ever replace it."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        pair = generate_ed25519(str(props.get("comment", "")))
        outs = {**props, "private_key": pair.private_key, "public_key": pair.public_key}
        return CreateResult(id_=f"{ALGORITHM}:{key_material(pair.public_key).split()[1][-16:]}", outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in ("algorithm", "comment") if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=props)


class SshKey(Resource):
    """An ed25519 key pair kept in state; `private_key` is a secret."""

    private_key: pulumi.Output[str]
    public_key: pulumi.Output[str]

    def __init__(self, name: str, comment: str, opts: pulumi.ResourceOptions | None = None) -> None:
        secret = pulumi.ResourceOptions(additional_secret_outputs=["private_key"])
        super().__init__(
            _SshKeyProvider(),
            name,
            {"algorithm": ALGORITHM, "comment": comment, "private_key": None, "public_key": None},
            pulumi.ResourceOptions.merge(opts, secret),
        )
