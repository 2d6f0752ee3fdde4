"""Suite-wide rule: a skipped test fails the run, unless this file allows that skip there.

On the machine CI uses (Debian 12, root, `sh tests/setup.sh` done) every test
runs but the entries with context None; a skip there is a gap nobody sees, so
it fails the session like a failed test. Other places that cannot run some tests by design say so with
GVISOR_FLEET_TEST_CONTEXT, and ALLOWED_SKIPS names, per context, which skip
(test path and skip reason) may happen there and why.

When GVISOR_FLEET_TEST_COUNTS names a file, the session writes its counts
there on one line (tests/run.sh prints it in each tier's summary).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CONTEXT_VAR = "GVISOR_FLEET_TEST_CONTEXT"
COUNTS_VAR = "GVISOR_FLEET_TEST_COUNTS"


@dataclass(frozen=True)
class AllowedSkip:
    context: str | None  # the GVISOR_FLEET_TEST_CONTEXT value where this skip may happen (None: unset, CI)
    path: str  # test id prefix: a file, or file::test
    reason: str  # text the skip reason must contain
    why: str  # why that is acceptable there

    def allows(self, context: str | None, nodeid: str, reason: str) -> bool:
        return context == self.context and nodeid.startswith(self.path) and self.reason in reason


GITHUB_CHECKS = "github-checks"
_NO_ROOT = "GitHub's checks job (lint, unit) runs on a stock runner without root; main.yml's full suite runs it as root"
ALLOWED_SKIPS: tuple[AllowedSkip, ...] = (
    AllowedSkip(
        GITHUB_CHECKS,
        "tests/unit/test_policy_engine.py",
        "the Pulumi engine or its kubernetes provider",
        "GitHub's checks job skips tests/setup.sh (SKIP_SETUP=1), which builds the engine; "
        "main.yml's full suite builds it and runs these",
    ),
    AllowedSkip(
        GITHUB_CHECKS,
        "tests/unit/test_workflows.py::test_the_rerun_of_a_failed_preview_uses_flags_the_engine_has",
        "the Pulumi engine is not built",
        "the engine is built by tests/setup.sh, which this job skips; main.yml's full suite runs it",
    ),
    AllowedSkip(GITHUB_CHECKS, "tests/kube/test_k3s_script.py", "runs as root", _NO_ROOT),
    AllowedSkip(GITHUB_CHECKS, "tests/kube/test_verify_script.py", "needs root", _NO_ROOT),
    AllowedSkip(
        GITHUB_CHECKS,
        "tests/unit/test_report_screenshot.py",
        "needs a headless Chromium",
        "tests/setup.sh installs Debian's chromium, which this job skips; main.yml's full suite runs it",
    ),
)


def skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


@dataclass(eq=False)  # pytest keeps plugins in sets
class SkipRule:
    """Counts outcomes and fails a session that skipped what ALLOWED_SKIPS does not allow."""

    allowed: tuple[AllowedSkip, ...]
    context: str | None
    counts_file: Path | None = None
    passed: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    skipped: dict[str, tuple[str, AllowedSkip | None]] = field(default_factory=dict)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        # A module that skips itself (pytest.skip(allow_module_level=True), importorskip) skips here.
        self.record(report)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.record(report)
        if report.passed and report.when == "call":
            self.passed.add(report.nodeid)

    def record(self, report: pytest.CollectReport | pytest.TestReport) -> None:
        if report.failed:
            self.failed.add(report.nodeid or "<collection>")
        elif report.skipped and not hasattr(report, "wasxfail"):
            reason = skip_reason(report)
            match = next((a for a in self.allowed if a.allows(self.context, report.nodeid, reason)), None)
            self.skipped[report.nodeid] = (reason, match)

    def refused(self) -> dict[str, str]:
        return {nodeid: reason for nodeid, (reason, match) in self.skipped.items() if match is None}

    def summary(self) -> str:
        allowed = len(self.skipped) - len(self.refused())
        return (
            f"{len(self.passed - self.failed)} passed, {len(self.failed)} failed, "
            f"{len(self.skipped)} skipped ({allowed} allowed)"
        )

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.refused() and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if self.counts_file is not None:
            # Appended: a tier may run more than one session (tests/run.sh adds them up).
            with self.counts_file.open("a") as f:
                f.write(self.summary() + "\n")

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.skipped:
            return
        refused = self.refused()
        where = f"{CONTEXT_VAR}={self.context}" if self.context else f"{CONTEXT_VAR} unset"
        terminalreporter.section(
            f"skips: {len(refused)} not allowed, {len(self.skipped) - len(refused)} allowed ({where})"
        )
        for entry in self.allowed:
            n = sum(match is entry for _, match in self.skipped.values())
            if n:
                terminalreporter.line(f"allowed: {n} in {entry.path} ('{entry.reason}'): {entry.why}")
        for nodeid, reason in sorted(refused.items()):
            terminalreporter.line(f"NOT ALLOWED: {nodeid}: {reason}")
        if refused:
            terminalreporter.line(
                "A skip fails the run: make the test run here (tests/setup.sh installs what the suite needs), "
                "or add an AllowedSkip with its reason to tests/conftest.py."
            )


def pytest_configure(config: pytest.Config) -> None:
    context = os.environ.get(CONTEXT_VAR) or None
    contexts = sorted({entry.context for entry in ALLOWED_SKIPS if entry.context is not None})
    if context is not None and context not in contexts:
        raise pytest.UsageError(f"{CONTEXT_VAR}={context} is not a known context ({', '.join(contexts)})")
    # Under pytest-xdist the controller sees every report: only it writes the counts.
    counts = None if hasattr(config, "workerinput") else os.environ.get(COUNTS_VAR)
    rule = SkipRule(ALLOWED_SKIPS, context, Path(counts) if counts else None)
    config.pluginmanager.register(rule, "gvisor-fleet-skip-rule")
