"""matplotlib charts of one machine's figures: runc against runsc, median bars with p90 whiskers."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from components.report.figures import FIGURES, MachineReport

RUNC_COLOUR = "#4c72b0"
RUNSC_COLOURS = {"runsc/systrap": "#dd8452", "runsc/kvm": "#55a868"}


def _rendered(fig: Figure, fmt: str) -> bytes:
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format=fmt, dpi=100)
    plt.close(fig)
    return out.getvalue()


def machine_chart(report: MachineReport, fmt: str = "png") -> bytes:
    """One row of small bar charts, one per figure the machine has."""
    figures = [f for f in FIGURES if any(r.figure == f for r in report.rows)]
    fig, axes = plt.subplots(1, len(figures), figsize=(max(3.1 * len(figures), 9.0), 3.4), squeeze=False)
    for ax, figure in zip(axes[0], figures, strict=True):
        label, unit, _ = FIGURES[figure]
        rows = [r for r in report.rows if r.figure == figure]
        names, medians, whiskers, colours = [], [], [], []
        if rows[0].runc is not None:
            names.append("runc")
            medians.append(rows[0].runc.median)
            whiskers.append(rows[0].runc.p90 - rows[0].runc.median)
            colours.append(RUNC_COLOUR)
        for row in rows:
            names.append(row.runtime)
            medians.append(row.runsc.median)
            whiskers.append(row.runsc.p90 - row.runsc.median)
            colours.append(RUNSC_COLOURS.get(row.runtime, "#8172b3"))
        bars = ax.bar(names, medians, color=colours, yerr=[[0] * len(whiskers), whiskers], capsize=4)
        ax.bar_label(bars, labels=[f"{m:,.0f}" if m >= 10 else f"{m:.1f}" for m in medians], fontsize=8)
        ratio = rows[0].ratio
        ax.set_title(f"{label}" + (f"\n{ratio:.1f}x runc" if ratio is not None else ""), fontsize=9)
        ax.set_ylabel(f"{unit} (median; whisker p90)", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.margins(y=0.2)
    flag = "  EMULATED (QEMU TCG): not hardware figures" if report.emulated else ""
    fig.suptitle(f"{report.name} ({report.arch}), gVisor {report.release}, {report.engine}{flag}", fontsize=10,
                 color="#b00020" if report.emulated else "black")  # fmt: skip
    return _rendered(fig, fmt)


def ratio_chart(reports: list[MachineReport], fmt: str = "png") -> bytes:
    """runsc/runc median ratio per figure, one bar group per machine and platform (log scale)."""
    figures = list(FIGURES)
    series = [(f"{r.name} {r.arch} gVisor {r.release} {p}" + (" (emulated)" if r.emulated else ""), r, p)
              for r in reports for p in r.platforms]  # fmt: skip
    fig, ax = plt.subplots(figsize=(10, 3.8))
    width = 0.8 / max(len(series), 1)
    for i, (label, report, platform) in enumerate(series):
        ratios = []
        for figure in figures:
            row = next((x for x in report.rows if x.figure == figure and x.runtime == platform), None)
            ratios.append(row.ratio if row is not None and row.ratio is not None else 0)
        xs = [j + i * width for j in range(len(figures))]
        ax.bar(xs, ratios, width, label=label, hatch="//" if report.emulated else None, edgecolor="white")
    ax.axhline(1, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(figures))])
    ax.set_xticklabels([FIGURES[f][0] for f in figures], fontsize=8)
    ax.set_ylabel("runsc / runc (median; 1 = no cost)", fontsize=8)
    ax.legend(fontsize=8)
    ax.set_title("What the sandbox costs, per machine (hatched: emulated, not hardware figures)", fontsize=10)
    return _rendered(fig, fmt)
