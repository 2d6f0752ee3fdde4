"""One function of a built shell script, to run on its own in a test."""

from __future__ import annotations

import re


def shell_function(script: str, name: str) -> str:
    """NAME's definition in SCRIPT, from `NAME() {` to its closing brace at the start of a line."""
    match = re.search(rf"^{name}\(\) \{{\n.*?^\}}\n", script, re.S | re.M)
    assert match, f"no function {name} in the script"
    return match.group(0)
