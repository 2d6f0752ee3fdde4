"""The report as one HTML page (tables and embedded PNG charts) and as Markdown for a PR comment."""

from __future__ import annotations

import base64
import html

from components.report.figures import FIGURES, MachineReport, Row, fmt
from components.report.plots import machine_chart, ratio_chart

EMULATED_NOTE = "Emulated machine (QEMU TCG, no hardware acceleration): these are not hardware figures."
PARTIAL_NOTE = "Partial: the budget ran out before every run was made."


def _cell(row: Row, which: str) -> str:
    stat = row.runc if which == "runc" else row.runsc
    if stat is None:
        return "-"
    return f"{fmt(stat.median)} (p90 {fmt(stat.p90)}, n={stat.n})"


def _ratio(row: Row) -> str:
    return "-" if row.ratio is None else f"{row.ratio:.2f}x"


def _heading(report: MachineReport) -> str:
    return f"{report.name} ({report.arch}): gVisor {report.release}, {report.engine}"


def _notes(report: MachineReport) -> list[str]:
    notes = []
    if report.emulated:
        notes.append(EMULATED_NOTE)
    if report.partial:
        notes.append(f"{PARTIAL_NOTE} ({report.rounds} of {report.runs} rounds)")
    notes.extend(f"{runtime} not measured: {why}" for runtime, why in report.skipped.items())
    return notes


def _meta(report: MachineReport) -> str:
    return f"runsc {report.runsc_version or '?'}; virtualisation: {report.virt}; {report.rounds} rounds"


def markdown(reports: list[MachineReport]) -> str:
    lines = ["## Sandbox overhead: runc against runsc", ""]
    for report in reports:
        lines += [f"### {_heading(report)}", "", _meta(report), ""]
        lines += [f"> **{note}**" if note == EMULATED_NOTE else f"> {note}" for note in _notes(report)]
        if _notes(report):
            lines.append("")
        lines += ["| figure | platform | work | runc | runsc | runsc/runc |", "|---|---|---|---|---|---|"]
        for row in report.rows:
            label, unit, _ = FIGURES[row.figure]
            lines.append(
                f"| {label} ({unit}) | {row.runtime.split('/', 1)[1]} | {report.describe_work(row.figure)} "
                f"| {_cell(row, 'runc')} | {_cell(row, 'runsc')} | {_ratio(row)} |"
            )
        lines.append("")
    return "\n".join(lines)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1300px; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; font-size: 0.9em; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.emulated { background: #fdecea; border-left: 4px solid #b00020; padding: 0.4em 0.8em; }
.note { background: #f6f6f6; border-left: 4px solid #999; padding: 0.4em 0.8em; }
img { max-width: 100%; }
"""


def html_page(reports: list[MachineReport]) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>gVisor sandbox overhead</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>What the sandbox costs: runc against runsc</h1>",
        "<p>Same host, same engine, same image; medians of the runs made, p90 beside them. "
        "A ratio above 1 is the sandbox's cost.</p>",
        _img(ratio_chart(reports), "runsc/runc ratio per figure and machine"),
    ]
    for report in reports:
        parts += [f"<h2>{e(_heading(report))}</h2>", f"<p>{e(_meta(report))}</p>"]
        for note in _notes(report):
            parts.append(f"<p class='{'emulated' if note == EMULATED_NOTE else 'note'}'>{e(note)}</p>")
        parts.append(
            "<table><tr><th>figure</th><th>platform</th><th>work</th><th>runc</th><th>runsc</th><th>runsc/runc</th></tr>"
        )
        for row in report.rows:
            label, unit, _ = FIGURES[row.figure]
            parts.append(
                f"<tr><td>{e(label)} ({unit})</td><td>{e(row.runtime.split('/', 1)[1])}</td>"
                f"<td>{e(report.describe_work(row.figure).replace('`', ''))}</td>"
                f"<td class='num'>{e(_cell(row, 'runc'))}</td><td class='num'>{e(_cell(row, 'runsc'))}</td>"
                f"<td class='num'>{e(_ratio(row))}</td></tr>"
            )
        parts.append("</table>")
        parts.append(_img(machine_chart(report), f"{report.name} runc against runsc"))
    parts.append("</body></html>")
    return "\n".join(parts)
