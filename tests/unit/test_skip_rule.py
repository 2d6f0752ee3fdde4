"""tests/conftest.py: a skip fails the session unless allowed there, under a real pytest run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ALLOWED_SKIPS, CONTEXT_VAR, COUNTS_VAR
from tests.support.paths import REPO

# The suite's own rule and hooks, with an allow-list of its own.
INNER_CONFTEST = """
import tests.conftest as rule

rule.ALLOWED_SKIPS = (rule.AllowedSkip("lab", "test_inner.py::test_gadget", "no widget", "labs have no widgets"),)
pytest_configure = rule.pytest_configure
"""


def run_pytest(tmp_path: Path, tests: str, context: str | None = None) -> tuple[int, str, str]:
    """(exit code, output, counts line) of a pytest session over `tests`."""
    (tmp_path / "conftest.py").write_text(INNER_CONFTEST)
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(tests))
    counts = tmp_path / "counts"
    env = {k: v for k, v in os.environ.items() if k not in (CONTEXT_VAR, COUNTS_VAR)}
    env.update({"PYTHONPATH": str(REPO), COUNTS_VAR: str(counts), **({CONTEXT_VAR: context} if context else {})})
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_inner.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr, counts.read_text().strip() if counts.exists() else ""


TESTS = """
import pytest

def test_runs():
    pass

def test_gadget():
    pytest.skip("{reason}")
"""


def test_a_skip_fails_the_session_and_is_listed(tmp_path):
    code, out, counts = run_pytest(tmp_path, TESTS.format(reason="no widget"))
    assert code == pytest.ExitCode.TESTS_FAILED, out
    assert "NOT ALLOWED: test_inner.py::test_gadget: no widget" in out
    assert counts == "1 passed, 0 failed, 1 skipped (0 allowed)"


def test_an_allowed_skip_passes_in_its_context_with_its_reason_shown(tmp_path):
    code, out, counts = run_pytest(tmp_path, TESTS.format(reason="no widget"), context="lab")
    assert code == pytest.ExitCode.OK, out
    assert "allowed: 1 in test_inner.py::test_gadget ('no widget'): labs have no widgets" in out
    assert counts == "1 passed, 0 failed, 1 skipped (1 allowed)"


def test_the_allowed_test_skipping_for_another_reason_still_fails(tmp_path):
    code, out, _ = run_pytest(tmp_path, TESTS.format(reason="no gizmo"), context="lab")
    assert code == pytest.ExitCode.TESTS_FAILED, out
    assert "NOT ALLOWED: test_inner.py::test_gadget: no gizmo" in out


def test_a_module_that_skips_itself_fails_the_session(tmp_path):
    code, out, counts = run_pytest(tmp_path, "import pytest\npytest.skip('no widget', allow_module_level=True)\n")
    assert code == pytest.ExitCode.TESTS_FAILED, out
    assert "NOT ALLOWED: test_inner.py: no widget" in out
    assert counts == "0 passed, 0 failed, 1 skipped (0 allowed)"


def test_failures_are_counted(tmp_path):
    code, out, counts = run_pytest(tmp_path, "def test_a():\n    assert False\n\ndef test_b():\n    pass\n")
    assert code == pytest.ExitCode.TESTS_FAILED, out
    assert counts == "1 passed, 1 failed, 0 skipped (0 allowed)"


def test_no_tests_collected_is_not_a_pass(tmp_path):
    code, out, counts = run_pytest(tmp_path, "")
    assert code == pytest.ExitCode.NO_TESTS_COLLECTED, out
    assert counts == "0 passed, 0 failed, 0 skipped (0 allowed)"


def test_an_unknown_context_is_refused_by_name(tmp_path):
    code, out, _ = run_pytest(tmp_path, TESTS.format(reason="no widget"), context="labb")
    assert code == pytest.ExitCode.USAGE_ERROR, out
    assert f"{CONTEXT_VAR}=labb is not a known context (lab)" in out


@pytest.mark.parametrize("entry", ALLOWED_SKIPS, ids=lambda e: f"{e.context}:{e.path}")
def test_each_allowed_skip_names_a_real_skip_and_says_why(entry):
    path = REPO / entry.path.split("::", 1)[0]
    assert path.is_file(), f"{entry.path} does not exist: drop the entry"
    assert entry.reason in path.read_text(), f"no skip in {entry.path} says '{entry.reason}': update the entry"
    assert len(entry.why) > 20, "say why this skip is acceptable there"
