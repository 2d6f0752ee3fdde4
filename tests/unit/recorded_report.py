"""The stack output the report tests read: one machine per recorded measurement (tests/report/recorded)."""

from __future__ import annotations

import json
from pathlib import Path

RECORDED = Path(__file__).parents[1] / "report" / "recorded"


def stack_output() -> dict[str, object]:
    """`pulumi stack output --json` as the program exports it: one machine per recording."""
    machines: dict[str, object] = {}
    for path in sorted(RECORDED.glob("*.json")):
        data = json.loads(path.read_text())
        machines[path.stem] = {"arch": data["arch"], "runsc_ok": "true", "overhead": data}
    machines["unmeasured"] = {"arch": "x86_64", "runsc_ok": "true"}
    return {"allChecksPassed": True, "gvisorRelease": "20261116.0", "machines": machines}
