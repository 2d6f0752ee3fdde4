"""The kinds of value settings hold, each with one rule wherever it is used.

A kind reads one raw value (as Pulumi and YAML give it), appends a problem
naming the key when it is wrong (and returns BAD), and says for the
configuration reference what it allows. components/schema.py holds the
reader that applies them to declared keys.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from components.schema import BAD, Kind, Setting, read


@dataclass(frozen=True)
class Text(Kind):
    """A non-empty string (trimmed), optionally matching `pattern`; `rule` says what it must be."""

    pattern: re.Pattern[str] | None = None
    rule: str = "is not valid"
    describe: str = ""

    def parse(self, value: object, key: str, problems: list[str]) -> object:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            problems.append(f"{key}: {value} is a number, not a string; quote it in YAML ('{value}')")
            return BAD
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{key}: must be a non-empty string")
            return BAD
        text = value.strip()
        if self.pattern and not self.pattern.match(text):
            problems.append(f"{key}: '{text}' {self.rule}")
            return BAD
        return text

    def allowed(self) -> str:
        return self.describe or "non-empty string"


@dataclass(frozen=True)
class Whole(Kind):
    """A whole number in bounds: an integer, or the digits the Pulumi CLI stores as a string."""

    low: int
    high: int
    unit: str = ""
    type_name: ClassVar[str] = "integer"

    def parse(self, value: object, key: str, problems: list[str]) -> object:
        number = value if isinstance(value, int) and not isinstance(value, bool) else None
        if isinstance(value, str) and value.strip().isdigit():
            number = int(value)
        if number is None or not self.low <= number <= self.high:
            of = f" of {self.unit}" if self.unit else ""
            problems.append(f"{key}: '{value}' must be a whole number{of} from {self.low} to {self.high}")
            return BAD
        return number

    def allowed(self) -> str:
        return f"{self.low} to {self.high}" + (f" ({self.unit})" if self.unit else "")


@dataclass(frozen=True)
class Flag(Kind):
    """true or false, or the strings "true"/"false" the Pulumi CLI stores for them."""

    type_name: ClassVar[str] = "boolean"

    def parse(self, value: object, key: str, problems: list[str]) -> object:
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        problems.append(f"{key}: must be true or false")
        return BAD

    def allowed(self) -> str:
        return "true, false"


@dataclass(frozen=True)
class Choice(Kind):
    """One of `options`; `retired` values get their own message (what to use instead)."""

    options: tuple[str, ...]
    hint: str = ""
    retired: Mapping[str, str] = field(default_factory=dict)

    def parse(self, value: object, key: str, problems: list[str]) -> object:
        text = value.strip() if isinstance(value, str) else value
        if text in self.options:
            return text
        if isinstance(text, str) and text in self.retired:
            problems.append(f"{key}: '{text}' {self.retired[text]}")
        else:
            problems.append(f"{key}: '{value}' is not supported; use one of {', '.join(self.options)}{self.hint}")
        return BAD

    def allowed(self) -> str:
        return ", ".join(self.options)


# Paths written on a host travel on the agent's command line and into TOML and JSON files.
_UNSAFE_PATH = re.compile(r"[\s'\"`\\$]")


@dataclass(frozen=True)
class HostPath(Kind):
    """An absolute path on a host: not '/' alone, no space, quote, backslash or '$'."""

    def parse(self, value: object, key: str, problems: list[str]) -> object:
        path = Text().parse(value, key, problems)
        if not isinstance(path, str):
            return BAD
        if not path.startswith("/"):
            problems.append(f"{key}: '{path}' must be an absolute path")
        elif path.rstrip("/") == "":
            problems.append(f"{key}: '/' alone is not allowed; name a folder or file below it")
        elif _UNSAFE_PATH.search(path):
            problems.append(f"{key}: '{path}' holds a space, quote, backslash or '$'; use a plain path")
        else:
            return path
        return BAD

    def allowed(self) -> str:
        return "absolute path on the host"


@dataclass(frozen=True)
class LocalPath(Kind):
    """A path on the machine running Pulumi: absolute or starting with ~ (expanded)."""

    what: str = "file"

    def parse(self, value: object, key: str, problems: list[str]) -> object:
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{key}: must be a {self.what} path on this machine (absolute, or starting with ~)")
            return BAD
        path = os.path.expanduser(value.strip())
        if not os.path.isabs(path):
            problems.append(f"{key}: '{value}' must be an absolute path or start with ~ (the {self.what})")
            return BAD
        return path

    def allowed(self) -> str:
        return "absolute path or ~/..., on the machine running Pulumi"


@dataclass(frozen=True)
class Url(Kind):
    """A URL with one of `schemes`; a trailing '/' is dropped."""

    schemes: tuple[str, ...] = ("https://",)

    def parse(self, value: object, key: str, problems: list[str]) -> object:
        text = Text().parse(value, key, problems)
        if not isinstance(text, str):
            return BAD
        if not text.startswith(self.schemes):
            problems.append(f"{key}: '{text}' must start with {' or '.join(self.schemes)}")
            return BAD
        return text.rstrip("/")

    def allowed(self) -> str:
        return " or ".join(f"{s}..." for s in self.schemes)


@dataclass(frozen=True)
class Table(Kind):
    """An object whose keys the program does not know in advance (flag names, machine names)."""

    what: str
    example: str
    type_name: ClassVar[str] = "object"

    def parse(self, value: object, key: str, problems: list[str]) -> object:
        if not isinstance(value, Mapping):
            problems.append(f"{key}: must be a map of {self.what}, e.g. {self.example}")
            return BAD
        return {str(k): v for k, v in value.items()}

    def allowed(self) -> str:
        return f"e.g. {self.example}"


@dataclass(frozen=True)
class Strings(Kind):
    """A list of strings, each matching `pattern`; non-empty unless `empty`."""

    pattern: re.Pattern[str]
    rule: str
    example: str
    empty: bool = False
    type_name: ClassVar[str] = "list"

    def parse(self, value: object, key: str, problems: list[str]) -> object:
        if not isinstance(value, list) or not (value or self.empty):
            problems.append(f"{key}: must be a list, e.g. {self.example}")
            return BAD
        wrong = [v for v in value if not isinstance(v, str) or not self.pattern.match(v)]
        if wrong:
            problems.append(f"{key}: {wrong[0]!r} is not {self.rule}")
            return BAD
        return tuple(value)

    def allowed(self) -> str:
        return f"{'list' if self.empty else 'non-empty list'}; each {self.rule}"


@dataclass(frozen=True)
class Obj(Kind):
    """A nested config object read with its own declarations; `off` lets `false` turn it off (None)."""

    settings: tuple[Setting, ...]
    what: str
    example: str
    off: bool = False
    type_name: ClassVar[str] = "object"

    def parse(self, value: object, key: str, problems: list[str]) -> object:
        if self.off and value is False:
            return None
        if not isinstance(value, Mapping):
            also = " or false" if self.off else ""
            problems.append(f"{key}: must be an object{also}, e.g. {self.example}")
            return BAD
        return read(self.settings, value, key, problems, self.what)

    def allowed(self) -> str:
        return "object (below)" + (" or false" if self.off else "")


@dataclass(frozen=True)
class Items(Kind):
    """A list of objects, each read by its layer (the fields of a machine depend on its backend)."""

    settings: tuple[Setting, ...]
    what: str
    example: str
    type_name: ClassVar[str] = "list"

    def parse(self, value: object, key: str, problems: list[str]) -> object:
        if not isinstance(value, list):
            problems.append(f"{key}: must be a list of {self.what}, e.g. {self.example}")
            return BAD
        return value

    def allowed(self) -> str:
        return f"list of {self.what} (below)"


ARCHES = ("x86_64", "aarch64")
ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64", "x86-64": "x86_64", "aarch_64": "aarch64"}


def arch_problem(value: object, allow_detect: bool = False) -> str | None:
    """Why `value` is not an architecture name as gVisor's releases (and `uname -m`) spell it."""
    allowed = ARCHES + (("detect",) if allow_detect else ())
    if value in allowed:
        return None
    hint = ARCH_ALIASES.get(str(value))
    if hint:
        return f"'{value}' is not an architecture name gVisor uses; write '{hint}' (as `uname -m` prints)"
    return f"unknown architecture '{value}'; use one of {', '.join(allowed)}"


@dataclass(frozen=True)
class Arch(Kind):
    """x86_64 or aarch64 (or detect, where the host says at `up`)."""

    allow_detect: bool = False

    def parse(self, value: object, key: str, problems: list[str]) -> object:
        why = arch_problem(value, self.allow_detect)
        if why:
            problems.append(f"{key}: {why}")
            return BAD
        return value

    def allowed(self) -> str:
        return ", ".join(ARCHES + (("detect",) if self.allow_detect else ()))


@dataclass(frozen=True)
class Digests(Kind):
    """A map of arch to a hex digest (lower-cased)."""

    hex_digits: int
    what: str
    type_name: ClassVar[str] = "object"

    def parse(self, value: object, key: str, problems: list[str]) -> object:
        if not isinstance(value, Mapping):
            problems.append(f"{key}: must be a map of arch to {self.what} hex, e.g. {{x86_64: <hex>}}")
            return BAD
        digests: dict[str, str] = {}
        pattern = re.compile(f"^[0-9a-f]{{{self.hex_digits}}}$")
        for arch, digest in value.items():
            why = arch_problem(arch)
            if why:
                problems.append(f"{key}.{arch}: {why}")
            elif not isinstance(digest, str) or not pattern.match(digest.lower()):
                problems.append(f"{key}.{arch}: must be {self.hex_digits} hex digits (a {self.what})")
            else:
                digests[str(arch)] = digest.lower()
        return digests if len(digests) == len(value) else BAD

    def allowed(self) -> str:
        return f"map of {' / '.join(ARCHES)} to {self.hex_digits} hex digits"


# Ranges set aside for documentation (RFC 5737, RFC 3849) and names (RFC 2606):
# no host is there, so a value inside them is a copied placeholder that would
# fail only at `up`, after machines were made.
DOCUMENTATION_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)
_EXAMPLE_NAME = re.compile(r"(^|\.)(example(\.(com|net|org))?|invalid|test)$")


def documentation_problem(value: str) -> str | None:
    """Why `value` (an address, a host name or a network) is a documentation placeholder."""
    try:
        net = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        if _EXAMPLE_NAME.search(value.strip().lower().rstrip(".")):
            return f"'{value}' is a name reserved for documentation (RFC 2606), not a real host"
        return None
    for doc in DOCUMENTATION_NETWORKS:
        if net.version == doc.version and net.subnet_of(doc):  # type: ignore[arg-type]
            rfc = "RFC 5737" if doc.version == 4 else "RFC 3849"
            return f"'{value}' is in {doc}, reserved for documentation ({rfc}): a placeholder, no host is there"
    return None


_OWN = "your address as <address>/32 (`curl -s https://checkip.amazonaws.com` prints it)"


def address_problem(value: object) -> str | None:
    """A host address: not a documentation placeholder."""
    why = documentation_problem(str(value))
    return f"{why}; write the host's real name or address" if why else None


def network_problem(value: object) -> str | None:
    """Who may reach SSH: a network in CIDR form, neither the whole internet nor a documentation range."""
    try:
        net = ipaddress.ip_network(str(value), strict=True)
    except ValueError as err:
        return f"'{value}' is not a network in CIDR form ({err}); e.g. {_OWN}"
    if net.prefixlen == 0:
        return f"'{value}' opens SSH to the whole internet; give your own network, e.g. {_OWN}"
    why = documentation_problem(str(value))
    return f"{why}; write your own network, e.g. {_OWN}" if why else None


SSH_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")


def ssh_key_problem(value: object) -> str | None:
    """Why `value` is not an OpenSSH public key line whose key decodes."""
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    parts = str(value).split()
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        return f"'{str(value)[:40]}' is not an OpenSSH public key line (type, base64 key, optional comment)"
    try:
        load_ssh_public_key(f"{parts[0]} {parts[1]}".encode())
    except (ValueError, TypeError) as err:
        return f"the {parts[0]} key '{parts[1][:24]}...' does not decode ({err}); it is a placeholder or cut short"
    return None
