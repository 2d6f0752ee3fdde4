"""The scheduled check's script (.github/scheduled_check.py), loaded as a module for the tests."""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

from tests.support.paths import REPO

SCRIPT = REPO / ".github" / "scheduled_check.py"
# Real engine output of the check's commands, recorded by tests/e2e/test_scheduled_check.py.
RECORDED = REPO / "tests" / "unit" / "recorded" / "scheduled-check"


@cache
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("scheduled_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def recorded(name: str) -> Path:
    return RECORDED / name
