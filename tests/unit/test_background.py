"""tests/toolchain/background.sh: the set-up's and the test command's background builds.

Run for real under `sh` (dash on Debian): a script that fails stops its
background build and everything under it; a failed build's log is shown.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.wait import wait_until

HELPER = Path(__file__).resolve().parents[2] / "tests" / "toolchain" / "background.sh"


def run_script(body: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = f'set -eu\n. "{HELPER}"\n{body}\n'
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=60)


def alive(pids: list[str]) -> list[str]:
    """The processes among `pids` that still run (not gone, not a zombie)."""
    running = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        if state != "Z":
            running.append(pid)
    return running


def test_a_failing_script_stops_the_build_and_what_it_started(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    run = run_script(
        f"""background_start demo sh -c 'sleep 300 & echo $! >>"{pids}"; echo $$ >>"{pids}"; wait'
trap background_stop EXIT
while [ ! -s "{pids}" ] || [ "$(wc -l <"{pids}")" -lt 2 ]; do sleep 0.1; done
false""",
        tmp_path,
    )
    assert run.returncode == 1, run.stderr
    started = pids.read_text().split()
    assert len(started) == 2
    assert wait_until(lambda: not alive(started), 10, 0.1), "the background build outlived the script"


def test_a_finished_build_shows_its_tail_and_removes_its_log(tmp_path: Path) -> None:
    run = run_script("background_start demo sh -c 'echo one; echo two; echo three'\nbackground_wait demo", tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "two\nthree\n"
    assert not list(tmp_path.glob("gvisor-fleet-demo.*"))


def test_a_failed_build_shows_its_whole_log_and_fails_the_script(tmp_path: Path) -> None:
    run = run_script(
        "background_start demo sh -c 'echo step one; echo broke >&2; exit 3'\n"
        "background_wait 'the demo build'\n"
        "echo after",
        tmp_path,
    )
    assert run.returncode == 1
    assert run.stdout == "step one\nbroke\n"
    logs = list(tmp_path.glob("gvisor-fleet-demo.*"))
    assert len(logs) == 1 and f"the demo build failed (its log is above, and in {logs[0]})" in run.stderr
