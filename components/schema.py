"""The declarative layer: each stack setting declared once, read by one reader.

A layer declares its keys as `Setting`s (name, kind of value from
components/kinds.py, default, help text, fix, which backends use it) and calls
`read`, which checks every key of one config
object and appends one line per problem, each naming `gvisor-fleet:<key>` (with
the path inside objects) and what to write instead. The same kind of value
follows the same rule everywhere. The configuration reference, Pulumi.yaml's
`config:` block and the known-key lists are derived from these declarations
(components/settings_reference.py).

Why a reader of our own rather than a validation library in strict mode
(pydantic v2 was the candidate):
- the Pulumi CLI stores top-level scalars as strings ("900", "true"): strict
  mode refuses what the CLI writes, lax mode accepts far more ("on", "1", 1.0);
  either way a rule of our own sits in front of the library;
- the messages are part of the program's interface (each names the key and its
  fix; tests and the troubleshooting index pin them), so every library error
  would be translated back into our wording, which is as long as reading the
  values ourselves;
- about 90 keys do not justify a compiled runtime dependency on every machine
  that runs Pulumi.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

NS = "gvisor-fleet"
ALL_BACKENDS = ("static", "qemu", "multipass", "aws")


class SettingsError(ValueError):
    """Invalid stack configuration; `problems` holds one line per setting."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        body = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid stack configuration:\n{body}")


def key_of(at: str, name: str) -> str:
    """The full key of `name` inside the object at `at`: gvisor-fleet:release, ...machines[0].arch."""
    return f"{at}:{name}" if at == NS else f"{at}.{name}"


class _Bad:
    """What a kind returns for a value it refused (its problem is already appended)."""

    def __repr__(self) -> str:
        return "BAD"


BAD = _Bad()


class Kind:
    """How one kind of value is read; `parse` appends its problems and returns BAD."""

    type_name: ClassVar[str] = "string"

    def parse(self, value: object, key: str, problems: list[str]) -> object:
        raise NotImplementedError

    def allowed(self) -> str:
        """The allowed values, as the reference shows them."""
        return ""


@dataclass(frozen=True)
class Setting:
    """One config key: how it is read, its default, and what the reference says about it.

    `required` (a text saying what to give) makes the key mandatory; `default`
    is used when it is absent. `doc_default` shows a default the code computes
    (e.g. per machine). `check` is a further rule on a well-typed value, its
    text naming the fix. `backends` lists the machine backends that read the
    key (machine fields only).
    """

    name: str
    kind: Kind
    help: str
    default: object = None
    required: str = ""
    fix: str = ""
    check: Callable[[object], str | None] | None = None
    backends: tuple[str, ...] = ALL_BACKENDS
    doc_default: str | None = None
    secret: bool = False


class Values(dict[str, object]):
    """What `read` found: each declared key's value (its default when absent or bad), and which were bad."""

    def __init__(self) -> None:
        super().__init__()
        self.bad: set[str] = set()
        self.given: set[str] = set()

    def ok(self, *names: str) -> bool:
        return not self.bad.intersection(names)

    def text(self, name: str) -> str:
        value = self[name]
        assert isinstance(value, str), name
        return value

    def maybe_text(self, name: str) -> str | None:
        value = self[name]
        return value if isinstance(value, str) else None

    def number(self, name: str) -> int:
        value = self[name]
        assert isinstance(value, int), name
        return value

    def flag(self, name: str) -> bool:
        return self[name] is True

    def sub(self, name: str) -> Values | None:
        value = self.get(name)
        return value if isinstance(value, Values) else None


def _suggest(name: str, known: Sequence[str]) -> str | None:
    """The known key `name` is nearest to, ignoring case."""
    lowered = {k.lower(): k for k in known}
    near = difflib.get_close_matches(name.lower(), list(lowered), n=1)
    return lowered[near[0]] if near else None


def unknown_problem(key: str, name: str, known: Sequence[str], what: str, everything: str = "") -> str:
    """A key the program does not read is a typo or a leftover: name it, and the nearest known key."""
    near = _suggest(name, known)
    mean = f"did you mean '{near}'?" if near else ""
    if everything:  # the top level: too many keys to list
        return f"{key}: is not a setting of {what}; {mean or everything}"
    listed = f"known keys: {', '.join(known)}"
    return f"{key}: is not a setting of {what}; " + (f"{mean} ({listed})" if mean else listed)


def read(settings: Sequence[Setting], raw: Mapping[Any, object], at: str, problems: list[str], what: str) -> Values:
    """Every declared key of one config object, checked; unknown keys are problems too."""
    known = [s.name for s in settings]
    for name in raw:
        if str(name) not in known:
            problems.append(unknown_problem(key_of(at, str(name)), str(name), known, what))
    values = Values()
    for s in settings:
        key = key_of(at, s.name)
        raw_value = raw.get(s.name)
        if raw_value is None:
            if s.required:
                problems.append(f"{key}: missing; {s.required}")
                values.bad.add(s.name)
            values[s.name] = s.default
            continue
        values.given.add(s.name)
        before = len(problems)
        value = s.kind.parse(raw_value, key, problems)
        if value is not BAD and s.check:
            why = s.check(value)
            if why:
                problems.append(f"{key}: {why}")
                value = BAD
        if value is BAD:
            if s.fix and len(problems) > before:
                problems[-1] += f"; {s.fix}"
            values.bad.add(s.name)
            values[s.name] = s.default
        else:
            values[s.name] = value
    return values


def walk(settings: Sequence[Setting], prefix: str = "") -> Iterator[tuple[str, Setting]]:
    """Every declaration with its dotted path, nested objects after their parent."""
    for s in settings:
        path = f"{prefix}{s.name}"
        yield path, s
        children = getattr(s.kind, "settings", None)  # objects and lists of objects (components/kinds.py)
        if children:
            yield from walk(children, f"{path}[]." if s.kind.type_name == "list" else f"{path}.")
