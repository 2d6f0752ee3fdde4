"""The shared parts (components/scripts/parts) on their own, under dash: what
each script plugs in (its name, its settings) reaches the messages, and data
passes through arguments."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from components.scripts import build

SH = shutil.which("dash") or "sh"


def run(*parts: str, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    text = "".join(build.part_body(f"{build.SHARED}/{part}") for part in parts)
    return subprocess.run(
        [SH, "-c", "set -eu\n" + text + script],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=60,
    )


def test_a_failed_download_names_the_setting_its_script_gives():
    setting = "gvisor-fleet:kubernetes.k3s.releaseUrl"
    script = f'STEP_TIMEOUT=900 BUDGET_SETTING=""; fetch_failed http://h/x dns "" {setting} "" 20 30 900'
    proc = run("output.sh", "budget.sh", "fetch.sh", script=f"SCRIPT_NAME=k3s-node\n{script}")
    assert proc.returncode == 1
    assert proc.stderr == (
        "k3s-node: ERROR: cannot resolve h (DNS) for http://h/x: this host cannot look up the release server; "
        "check gvisor-fleet:kubernetes.k3s.releaseUrl\n"
    )


def test_a_timeout_names_the_limits_it_was_given():
    script = (
        "SCRIPT_NAME=gvisor-host STEP_TIMEOUT=8 BUDGET_SETTING=gvisor-fleet:stepTimeout\n"
        'fetch_failed http://h/x timeout "" gvisor-fleet:baseUrl "or set it" 5 6 7'
    )
    proc = run("output.sh", "budget.sh", "fetch.sh", script=script)
    limits = "connect 5s, stalled below 1024 bytes/s for 6s, or 7s left of the step's 8s (gvisor-fleet:stepTimeout)"
    assert f"{limits}; check the mirror (gvisor-fleet:baseUrl)" in proc.stderr, proc.stderr


def test_not_found_is_left_to_the_caller():
    proc = run("output.sh", "fetch.sh", script='fetch_failed http://h/x notfound "" s "" 1 1 1 || echo "missing $?"')
    assert proc.stdout == "missing 1\n" and proc.stderr == ""


def test_the_budget_keeps_a_reserve_and_remaining_is_never_zero():
    script = "budget_start 100; budget_left; budget_left 30; budget_left 200; STEP_TIMEOUT=0; remaining"
    proc = run("output.sh", "budget.sh", script=script)
    first, reserved, spent, least = proc.stdout.split()
    assert int(first) in (99, 100) and int(reserved) in (69, 70) and spent == "0" and least == "1"


def test_wait_for_gives_up_within_the_budget():
    proc = run(
        "output.sh", "budget.sh", script="SCRIPT_NAME=t; budget_start 2; wait_for thing 60 false || echo gave-up"
    )
    assert proc.stdout == "gave-up\n"
    assert proc.stderr in ("t: thing did not become ready within 2s\n", "t: thing did not become ready within 1s\n")


def test_shell_quote_survives_quotes_and_spaces(tmp_path: Path):
    odd = tmp_path / "it's a dir"
    script = f'eval "set -- $(shell_quote "{odd}" plain)"; printf "%s|" "$@"'
    proc = run("output.sh", script=script)
    assert proc.stdout == f"{odd}|plain|", proc.stderr


def test_strip_block_takes_out_only_the_block(tmp_path: Path):
    file = tmp_path / "config.toml"
    begin = "# BEGIN gvisor-fleet runtime (managed; removed on destroy)"
    file.write_text(f"version = 2\n{begin}\n[ours]\n# END gvisor-fleet runtime\n[theirs]\n")
    proc = run("block.sh", script=f'strip_block "{file}"; has_block "{file}" && echo has')
    assert proc.stdout == "version = 2\n[theirs]\nhas\n"
