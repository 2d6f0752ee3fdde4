"""Every shell command in README.md and docs/ is run by a test, or says why not.

Each fenced block of shell (```sh, ```shell, ```bash, ```console) must sit
right below a marker comment, with no blank line between:

    <!-- run: PATH (optional note) -->
    <!-- not run: the reason -->

`run:` names the file that executes the block: a test that reads the block
from this document (the file then names the document, e.g. `README.md`), or
a script that holds the block's first command verbatim (`.ci/run` holds
`sh tests/run.sh`). `not run:` gives the reason, e.g. what the command needs
that no test has, and which test covers the same thing another way.

Every fence must name its language, so a shell block cannot pass unnoticed
as plain text (`text` is for output and diagrams).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.doc_blocks import ALL, MARKER, ROOT, SHELL_BLOCKS, Block, first_command, marked
from tests.unit.recorded_report import stack_output


def test_the_docs_have_shell_blocks():
    assert len(SHELL_BLOCKS) >= 5, "the parser found too few shell blocks: the fence rule may have broken"
    assert any(b.doc == "README.md" for b in SHELL_BLOCKS)


@pytest.mark.parametrize("block", ALL, ids=str)
def test_every_fence_names_its_language(block: Block):
    assert block.language, f"{block}: write ```text for output, ```sh for commands"


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=str)
def test_every_shell_block_is_run_or_says_why_not(block: Block):
    match = MARKER.match(block.marker or "")
    assert match, (
        f"{block}: put `<!-- run: PATH -->` (the test or script that runs it) or "
        "`<!-- not run: reason -->` on the line right above the fence"
    )
    if match["kind"] == "not run":
        assert len(match["what"].split()) >= 4, f"{block}: say why it is not run"
        return
    runner = ROOT / match["what"].split()[0]
    assert runner.is_file(), f"{block}: {runner.relative_to(ROOT)} does not exist"
    text = runner.read_text()
    assert block.doc in text or first_command(block) in text, (
        f"{block}: {runner.relative_to(ROOT)} neither reads {block.doc} nor holds `{first_command(block)}`"
    )


def test_the_report_command_of_docs_overhead_runs(tmp_path: Path):
    """docs/overhead.md's report command, run as written, on a stack output made from the recordings."""
    (tmp_path / "overhead.json").write_text(json.dumps(stack_output()))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    (block,) = marked("docs/overhead.md", "tests/unit/test_docs_commands.py")
    subprocess.run(["sh", "-ec", block.body], cwd=tmp_path, env=env, check=True)
    assert (tmp_path / "overhead.html").read_text().startswith("<!doctype html>")
    assert (tmp_path / "overhead.md").read_text().startswith("## Sandbox overhead")
