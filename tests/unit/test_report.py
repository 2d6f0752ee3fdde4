"""The overhead report, rendered from recorded stack outputs (real measurements, tests/report/recorded/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.report.__main__ import main
from components.report.figures import ReportError, load_reports
from components.report.render import EMULATED_NOTE, html_page, markdown
from tests.unit.recorded_report import RECORDED, stack_output


def test_every_measured_machine_and_figure_is_in_the_markdown():
    reports = load_reports(stack_output())
    assert [r.name for r in reports] == sorted(p.stem for p in RECORDED.glob("*.json"))
    text = markdown(reports)
    for report in reports:
        assert f"### {report.name} ({report.arch}): gVisor {report.release}, {report.engine}" in text
        for row in report.rows:
            assert row.ratio is not None
            assert f"| {row.runtime.split('/')[1]} |" in text
            assert f"{row.ratio:.2f}x |" in text
    assert "unmeasured" not in text


def test_ratios_are_runsc_median_over_runc_median():
    data = json.loads((RECORDED / "host-docker.json").read_text())
    report = load_reports({"machines": {"h": {"overhead": data}}})[0]
    row = next(r for r in report.rows if r.figure == "syscall_ms")
    runtimes = data["runtimes"]
    expected = runtimes["runsc/systrap"]["syscall_ms"]["median"] / runtimes["runc"]["syscall_ms"]["median"]
    assert row.ratio == pytest.approx(expected)
    memory = next(r for r in report.rows if r.figure == "idle_rss_kib")
    assert memory.runsc.median == pytest.approx(runtimes["runsc/systrap"]["idle_rss_kib"]["median"] / 1024)


def test_emulated_and_partial_machines_are_flagged():
    data = json.loads((RECORDED / "host-docker.json").read_text())
    hardware = {**data, "virt": "kvm", "partial": False}
    emulated = {**data, "virt": "qemu", "partial": True, "rounds": 1}
    reports = load_reports({"machines": {"a": {"overhead": hardware}, "b": {"overhead": emulated}}})
    text = markdown(reports)
    a, b = text.split("### b ")
    assert EMULATED_NOTE not in a and "Partial" not in a
    assert EMULATED_NOTE in b and "Partial: the budget ran out before every run was made. (1 of" in b
    assert EMULATED_NOTE in html_page(reports)


def test_the_html_page_embeds_one_chart_per_machine_and_the_overview():
    reports = load_reports(stack_output())
    page = html_page(reports)
    assert page.count('src="data:image/png;base64,') == len(reports) + 1
    assert page.count("<table>") == len(reports)


def test_the_command_writes_both_files_and_refuses_outputs_without_figures(tmp_path: Path, capsys):
    src = tmp_path / "out.json"
    src.write_text(json.dumps(stack_output()))
    assert main([str(src), "--html", str(tmp_path / "r.html"), "--markdown", str(tmp_path / "r.md")]) == 0
    assert (tmp_path / "r.md").read_text().startswith("## Sandbox overhead")
    assert (tmp_path / "r.html").read_text().startswith("<!doctype html>")
    src.write_text(json.dumps({"machines": {"m": {"arch": "x86_64"}}}))
    assert main([str(src)]) == 2
    assert "gvisor-fleet:overhead {enabled: true}" in capsys.readouterr().err
    with pytest.raises(ReportError, match="pulumi stack output --json"):
        load_reports({"outputs": {}})
