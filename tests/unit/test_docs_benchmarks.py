"""docs/benchmarks.md shows the figures of tests/bench/results/*.json, not copies of them.

Each table on the page sits between `<!-- table: NAME.json -->` and
`<!-- /table -->` and must be exactly what `render(NAME)` makes from
tests/bench/results/NAME.json. After a benchmark rewrites its results, print
the new tables with `python -m tests.unit.test_docs_benchmarks` and paste them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]
RESULTS = ROOT / "tests" / "bench" / "results"
PAGE = ROOT / "docs" / "benchmarks.md"
BLOCK = re.compile(r"<!-- table: (?P<name>[\w-]+)\.json -->\n(?P<body>.*?)<!-- /table -->", re.S)


def _s(value: float) -> str:
    return f"{value:g} s"


def _spread(spread: Mapping[str, float]) -> str:
    return f"{spread['median']:g} s ({spread['min']:g}-{spread['max']:g})"


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def program(r: Mapping[str, Any]) -> str:
    rows = [
        [n, _spread(e), f"{e['median_per_machine']:g} s"]
        for n, e in sorted(r["eval_seconds"].items(), key=lambda kv: int(kv[0]))
    ]
    sk = r["skeleton"]
    n = f"{sk['machines']} ({sk['resources']} resources)"
    rows.append([f"{n}, the program, rounds interleaved with the skeleton's", _spread(sk["program"]), ""])
    rows.append([f"{n}, the skeleton: the same registrations, no program logic", _spread(sk["skeleton"]), ""])
    rows.append(["program over skeleton", f"{sk['program_over_skeleton']:g}x", ""])
    return _table(["machines", "evaluation under mocks: median (min-max)", "median per machine"], rows)


def engine(r: Mapping[str, Any]) -> str:
    ops = ["preview", "up", "no-op up", "destroy", "up --parallel 1"]
    rows = []
    for n, fleet in sorted(r["fleets"].items(), key=lambda kv: int(kv[0])):
        rows.append([n, *(_spread(fleet["spread"][op]) if op in fleet["spread"] else "-" for op in ops)])
    return _table(["machines", *ops], rows)


def scale(r: Mapping[str, Any]) -> str:
    rows = []
    for n, fleet in sorted(r["fleets"].items(), key=lambda kv: int(kv[0])):
        s = fleet["seconds"]
        rows.append(
            [
                n,
                *(_s(s[op]) for op in ("up", "no-op up", "preview", "destroy")),
                f"{fleet['state_bytes_per_machine'] / 1000:.1f} KB",
                str(fleet["remote_sessions"]["no-op up"]["total"]),
            ]
        )
    return _table(
        ["N", "up", "no-op up", "preview", "destroy", "state per machine", "SSH sessions on the no-op up"], rows
    )


def kube(r: Mapping[str, Any]) -> str:
    start = r["pod_start_median_seconds"]
    up = r["up_to_jobs_complete_median_seconds"]
    rows = [
        ["`pulumi up` start to the last verification Job complete", f"median {_s(up)} of {r['up_runs']}"],
        ["the whole `pulumi up` command", f"median {_s(r['up_command_median_seconds'])}"],
        ["pod start under runsc", f"median {_s(start['runsc'])} of {r['pod_start_samples']}"],
        ["pod start under runc", f"median {_s(start['runc'])} of {r['pod_start_samples']}"],
        ["runsc over runc", f"{r['runsc_over_runc']:g}x"],
        ["cluster start (to node Ready)", _s(r["cluster_start_seconds"])],
    ]  # fmt: skip
    return _table(["figure", f"Kubernetes {r['kubernetes']}, gVisor {r['release']}"], rows)


def vm(r: Mapping[str, Any]) -> str:
    rows = [
        [
            arch,
            r["accel"][arch],
            _s(r["image_build_seconds"][arch]),
            _s(r["boot_to_ssh_alone_seconds"][arch]),
            _s(r["boot_to_ssh_seconds"][arch]),
            _s(r["converge_seconds"][arch]),
            str(r["checks_passed"][arch]).lower(),
        ]
        for arch in ("x86_64", "aarch64")
    ]
    head = ["arch", "accel", "image build", "boot to SSH alone", "boot to SSH, both at once", "converge"]
    head.append("checks passed")
    return _table(head, rows)


def waves(r: Mapping[str, Any]) -> str:
    rows = []
    for n, cases in sorted(r["fleets"].items(), key=lambda kv: int(kv[0])):
        for case, c in cases.items():
            releases = ", ".join(f"{count} on {release}" for release, count in sorted(c["releases_after"].items()))
            rows.append(
                [
                    n,
                    case,
                    _s(c["seconds"]),
                    str(c["installs_run"]),
                    str(c["machines_failed"]),
                    str(c["most_without_a_verified_runtime"]),
                    releases,
                ]
            )
    head = ["N", "case", "up", "installs run", "machines failed", "most without a verified runtime at once"]
    return _table([*head, "releases after"], rows)


def installer(r: Mapping[str, Any]) -> str:
    labels = {
        "up_to_verified": "`pulumi up` start to the node verified and labelled",
        "daemonset_to_verified": "the installer DaemonSet created to the node verified",
        "up": "the whole `pulumi up` command (sample pod and Job under runsc too)",
        "joined_node_ready": "a node joining later: kubelet start to Ready",
        "joined_node_ready_to_verified": "that node: Ready to verified and labelled, no `up`",
        "destroy": "`pulumi destroy` (the node put back first)",
    }
    rows = []
    for node, figures in r["seconds"].items():
        medians = r["median_seconds"][node]
        for key, label in labels.items():
            values = ", ".join(f"{v:g}" for v in figures[key])
            rows.append([node, label, f"median {_s(medians[key])} ({values})"])
    head = f"seconds, {r['rounds']} rounds: Kubernetes {r['kubernetes']}, gVisor {r['release']}"
    return _table(["node", "figure", head], rows)


RENDERERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "program": program,
    "engine": engine,
    "scale": scale,
    "kube": kube,
    "vm": vm,
    "waves": waves,
    "installer": installer,
}


def render(name: str) -> str:
    return RENDERERS[name](json.loads((RESULTS / f"{name}.json").read_text()))


def page_tables() -> dict[str, str]:
    return {m["name"]: m["body"] for m in BLOCK.finditer(PAGE.read_text())}


def test_every_results_file_has_its_table_on_the_page():
    assert {p.stem for p in RESULTS.glob("*.json")} == set(RENDERERS), "a renderer for each results file"
    assert set(page_tables()) == set(RENDERERS), "docs/benchmarks.md: one table block per results file"


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_the_page_shows_the_recorded_figures(name: str):
    expected = render(name)
    assert page_tables().get(name) == expected, (
        f"docs/benchmarks.md, table {name}.json differs from tests/bench/results/{name}.json; "
        f"write:\n{expected}(python -m tests.unit.test_docs_benchmarks prints every table)"
    )


if __name__ == "__main__":
    for table in RENDERERS:
        print(f"<!-- table: {table}.json -->\n{render(table)}<!-- /table -->\n")
