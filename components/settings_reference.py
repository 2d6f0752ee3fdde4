"""The configuration reference and Pulumi.yaml's `config:` block, made from the declarations.

    python -m components.settings_reference > docs/configuration.md
    python -m components.settings_reference --pulumi-yaml > Pulumi.yaml.new

Both outputs are committed; tests/unit/test_settings_reference.py fails when
either differs from what the declarations give, so neither can drift.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from components.kinds import Items, Obj
from components.schema import ALL_BACKENDS, NS, Setting, walk
from components.settings import TOP_LEVEL

PULUMI_TYPES = {"string": "string", "integer": "integer", "boolean": "boolean"}
PROJECT_FILE = Path(__file__).parents[1] / "Pulumi.yaml"


def default_text(s: Setting) -> str:
    """The default as the reference shows it."""
    if s.doc_default is not None:
        return s.doc_default
    if s.required:
        return "required"
    if s.default is None:
        return "unset"
    if isinstance(s.default, bool):
        return "true" if s.default else "false"
    if isinstance(s.default, tuple):
        return json.dumps(list(s.default))
    return str(s.default) if s.default != "" else '""'


def type_text(s: Setting) -> str:
    if isinstance(s.kind, Items):
        return "list of objects"
    return s.kind.type_name + (" (secret)" if s.secret else "")


def _cell(text: str, code: bool = False) -> str:
    if code and text:
        return f"`{text}`"
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _row(path: str, s: Setting) -> str:
    backends = "all" if s.backends == ALL_BACKENDS else ", ".join(s.backends)
    computed = s.doc_default is not None or s.required or s.default is None
    cells = [
        f"`{path}`",
        type_text(s),
        _cell(default_text(s), code=not computed),
        _cell(s.kind.allowed()),
        backends,
        _cell(s.help),
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = "| Key | Type | Default | Allowed values | Backends | Description |\n|---|---|---|---|---|---|"

INTRO = f"""# Configuration reference

Every key the program reads, from the declarations in the code (each layer's
settings module); `python -m components.settings_reference` writes this page,
and a unit test fails when it differs. Keys are stack config of the project
`{NS}`: `pulumi config set {NS}:release 20261116.0`, or in the stack file
(`stacks/Pulumi.<stack>.yaml`); objects and lists are YAML there, or
`pulumi config set --path`.

Rules that hold for every key:

- Every problem is reported at once, at `pulumi preview`, each naming the key
  (`{NS}:<key>`, with the path inside objects such as
  `{NS}:machines[0].arch`) and what to write instead.
- A boolean is `true` or `false`, or the strings `"true"`/`"false"` that
  `pulumi config set` stores; nothing else (not `yes`, `on` or `1`).
- A whole number is an integer or a string of digits; it must lie in the
  range given under "Allowed values".
- A string is trimmed and may not be empty.
- A key the program does not read is refused, with the nearest known key.
- Placeholders that would fail only at `pulumi up` are refused: addresses and
  networks in the documentation ranges (192.0.2.0/24, 198.51.100.0/24,
  203.0.113.0/24, 2001:db8::/32), names under example.com, and host keys that
  do not decode.

"Backends" says which machine backends read a key; "all" means the key does
not depend on the backend.
"""


def _section(title: str, intro: str, rows: Sequence[tuple[str, Setting]]) -> str:
    body = "\n".join(_row(path, s) for path, s in rows)
    return f"## {title}\n\n{intro}\n\n{HEADER}\n{body}\n"


def markdown() -> str:
    sections = [
        _section(
            "Top-level keys", "Objects and lists have a section of their own below.", [(s.name, s) for s in TOP_LEVEL]
        )
    ]
    for path, s in walk(TOP_LEVEL):
        if isinstance(s.kind, (Obj, Items)):
            inner = f"{path}[]." if isinstance(s.kind, Items) else f"{path}."
            rows = [(p, child) for p, child in walk(s.kind.settings, inner) if p.count(".") == inner.count(".")]
            sections.append(_section(f"{path}", _cell(s.help), rows))
    return INTRO + "\n" + "\n".join(sections)


def pulumi_config() -> dict[str, dict[str, object]]:
    """Pulumi.yaml's `config:` block: every top-level scalar with a default (typed, described)."""
    block: dict[str, dict[str, object]] = {}
    for s in TOP_LEVEL:
        if s.kind.type_name in PULUMI_TYPES and not s.secret and s.default is not None:
            block[s.name] = {"type": PULUMI_TYPES[s.kind.type_name], "default": s.default, "description": s.help}
    return block


def pulumi_config_text() -> str:
    """The `config:` block as Pulumi.yaml holds it, with a comment naming the keys it cannot declare."""
    lines = ["config:"]
    for name, entry in pulumi_config().items():
        lines.append(f"  {name}:")
        lines.append(f"    type: {entry['type']}")  # a plain word; the values below are JSON, which YAML reads
        lines.extend(f"    {field}: {json.dumps(entry[field])}" for field in ("default", "description"))
    rest = [s for s in TOP_LEVEL if s.name not in pulumi_config()]
    lines.append("# Also read, but not declared here (Pulumi.yaml declares only scalars with a default):")
    lines.extend(f"#   {s.name} ({type_text(s)})" for s in rest)
    lines.append("# docs/configuration.md describes every key; both are made by components/settings_reference.py.")
    return "\n".join(lines) + "\n"


def pulumi_yaml() -> str:
    """Pulumi.yaml with its `config:` block made from the declarations (the rest kept as it is)."""
    text = PROJECT_FILE.read_text()
    return text[: text.index("\nconfig:\n") + 1] + pulumi_config_text()


def main(argv: Sequence[str]) -> int:
    sys.stdout.write(pulumi_yaml() if "--pulumi-yaml" in argv else markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
