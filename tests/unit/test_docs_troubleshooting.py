"""docs/troubleshooting.md has an entry for every message the program can stop with.

The messages are collected from the code, so a new one without an entry
fails this test:

- the host agent and the k3s node script (components/gvisor/scripts/*.sh,
  components/kube/scripts/*.sh): every `die "..."`;
- the release fetch and `latest` (components/gvisor/release_fetch.py,
  release_latest.py), the drift check (drift.py, host_check.py) and the Kubernetes
  layer (components/kube/*.py but settings.py): every string or f-string
  literal given to an exception (a call of a name ending in `Error`);
- the settings: one family per config key (`components.settings.KNOWN_KEYS`
  and `gvisor-fleet:overhead`), since every settings message starts with its key.

A message's key is its text with every shell expansion (`$x`, `${x}`,
`$(...)`) or f-string field (`{x}`) written as `...`, cut before the first
`; ` or line break (what follows is the fix). To add an entry, print the keys
(`python -m tests.unit.test_docs_troubleshooting`), and put the missing one,
verbatim, in a code span of the entry that explains it, with what it means
and the fix. Settings keys are written `gvisor-fleet:<key>` in the settings
section. Messages with no words of their own (a message made only of other
messages) are not collected.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.overhead.settings import CONFIG_NAME as OVERHEAD_KEY
from components.settings import KNOWN_KEYS

ROOT = Path(__file__).parents[2]
PAGE = ROOT / "docs" / "troubleshooting.md"
SCRIPTS = sorted([*ROOT.glob("components/gvisor/scripts/*.sh"), *ROOT.glob("components/kube/scripts/*.sh")])
PYTHON = sorted(
    [ROOT / f"components/gvisor/{m}.py" for m in ("release_fetch", "release_latest", "drift", "host_check")]
    + [p for p in ROOT.glob("components/kube/*.py") if p.name not in ("settings.py", "__init__.py")]
)

DIE = re.compile(r'\bdie "')
VARIABLE = re.compile(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\$[0-9#?@*]")


def _die_argument(text: str, start: int) -> str:
    """The double-quoted argument from START, each `$(...)` (which may hold quotes) as `...`."""
    out, i, depth = [], start, 0
    while i < len(text):
        c = text[i]
        if c == "\\" and depth == 0:
            out.append(text[i + 1])
            i += 2
            continue
        if text.startswith("$(", i):
            depth += 1
            if depth == 1:
                out.append("...")
            i += 2
            continue
        if depth and c == "(":
            depth += 1
        elif depth and c == ")":
            depth -= 1
        elif c == '"' and depth == 0:
            break
        elif depth == 0:
            out.append(c)
        i += 1
    return "".join(out)


def message_key(text: str) -> str:
    """The part of a message that names what happened, with variable parts as `...`."""
    text = re.split(r"; |\n", text, maxsplit=1)[0]
    text = re.sub(r"(\.\.\.)+", "...", text)
    return text.strip()


def shell_messages(path: Path) -> Iterator[str]:
    text = path.read_text()
    for match in DIE.finditer(text):
        yield message_key(VARIABLE.sub("...", _die_argument(text, match.end())))


def _literal(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            else:
                parts.append("...")
        return "".join(parts)
    return None


def python_messages(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name.endswith("Error"):
            text = _literal(node.args[-1])
            if text is not None:
                yield message_key(text)


def collected() -> dict[str, str]:
    """message key -> the file it comes from."""
    found: dict[str, str] = {}
    for path in SCRIPTS:
        for key in shell_messages(path):
            found.setdefault(key, str(path.relative_to(ROOT)))
    for path in PYTHON:
        for key in python_messages(path):
            found.setdefault(key, str(path.relative_to(ROOT)))
    # A message made only of other messages and variable parts says nothing of its own.
    return {k: v for k, v in found.items() if re.search(r"[A-Za-z]{3}", k.replace("...", ""))}


def settings_keys() -> list[str]:
    return sorted({*KNOWN_KEYS, OVERHEAD_KEY})


def test_the_collection_finds_the_messages():
    """Guards the rule itself: each source must yield messages, or the rule missed them."""
    keys = collected()
    sources = set(keys.values())
    for path in [*SCRIPTS, *PYTHON[:1]]:
        assert str(path.relative_to(ROOT)) in sources, f"no message collected from {path}"
    assert "must run as root (set the machine's user to root or give it passwordless sudo)" in keys
    assert "cannot resolve ... (DNS) for ...: this host cannot look up the release server..." in keys


@pytest.mark.parametrize(("key", "source"), sorted(collected().items()))
def test_each_message_has_an_entry(key: str, source: str):
    assert f"`{key}`" in PAGE.read_text(), (
        f"docs/troubleshooting.md has no entry for this message of {source}:\n  `{key}`\n"
        "add it, verbatim in a code span, to the entry that explains it (what it means, the fix)"
    )


@pytest.mark.parametrize("key", settings_keys())
def test_each_setting_has_an_entry(key: str):
    assert f"`gvisor-fleet:{key}`" in PAGE.read_text(), (
        f"docs/troubleshooting.md, settings: no entry for `gvisor-fleet:{key}`"
    )


if __name__ == "__main__":
    for key, source in sorted(collected().items(), key=lambda kv: (kv[1], kv[0])):
        print(f"{source}: `{key}`")
    for key in settings_keys():
        print(f"settings: `gvisor-fleet:{key}`")
