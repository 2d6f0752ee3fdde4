"""The fenced blocks of README.md and docs/, and the markers that say which test runs each.

See tests/unit/test_docs_commands.py for the rule; tests that run a block read it from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
SHELL = {"sh", "shell", "bash", "console"}
FENCE = re.compile(r"^```(\S*)\s*$")
MARKER = re.compile(r"^<!-- (?P<kind>run|not run): (?P<what>.+?) -->$")


@dataclass(frozen=True)
class Block:
    doc: str  # path relative to the repository
    line: int  # of the opening fence, 1-based
    language: str
    marker: str | None  # the line above the fence
    body: str

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}"


def blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end] != "```":
            end += 1
        marker = lines[i - 1] if i > 0 else None
        doc = str(path.relative_to(ROOT))
        found.append(Block(doc, i + 1, opening.group(1), marker, "\n".join(lines[i + 1 : end]) + "\n"))
        i = end + 1
    return found


ALL = [b for path in DOCS for b in blocks(path)]
SHELL_BLOCKS = [b for b in ALL if b.language in SHELL]


def first_command(block: Block) -> str:
    for line in block.body.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line
    return ""


def marked(doc: str, runner: str) -> list[Block]:
    """The shell blocks of DOC whose marker names RUNNER: what a test that runs them reads."""
    return [
        b
        for b in SHELL_BLOCKS
        if b.doc == doc and b.marker and (m := MARKER.match(b.marker)) and m["what"].split()[0] == runner
    ]
