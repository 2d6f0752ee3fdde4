"""README.md, which the docs site does not build: its links reach files and headings that exist,
and it stays a short page for users (the rest belongs in docs/)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
LINK = re.compile(r"\]\((?!https?://|#)([^)\s]+)\)")
MAX_LINES = 300


def anchors(page: Path) -> set[str]:
    """The heading ids MkDocs gives a page (Python-Markdown's toc slugs)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slugify(re.sub(r"[`*]", "", h), "-") for h in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("target", sorted(set(LINK.findall(README.read_text()))))
def test_each_link_of_the_readme_resolves(target: str):
    path, _, anchor = target.partition("#")
    page = ROOT / path
    assert page.exists(), f"README.md links to {path}, which does not exist"
    if anchor:
        assert anchor in anchors(page), f"README.md links to {target}: no such heading in {path}"


def test_the_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_LINES, f"README.md has {lines} lines; move reference and development material to docs/"
