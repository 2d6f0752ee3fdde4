"""The scheduled check: its workflow, and the report and issue .github/scheduled_check.py makes.

The report is rendered from real engine output: `pulumi preview --refresh --json`,
`pulumi preview --json` with `release: latest` and `pulumi stack output --json`,
recorded by tests/e2e/test_scheduled_check.py against two SSH test machines
(clean; the runsc binary changed and runsc.toml removed on s1; s2 unreachable).
The workflow's own `run:` blocks run here as GitHub's runner runs them, with
stand-ins for `pulumi` (it replays those recordings) and `gh` (it records its
calls), as tests/unit/test_workflows.py does for the pull-request comment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.doc_blocks import marked
from tests.support.paths import REPO
from tests.support.scheduled_check import RECORDED, script

WORKFLOW = REPO / ".github" / "workflows" / "scheduled-check.yml"
check = script()


def recorded(name: str) -> Any:
    entry = json.loads((RECORDED / name).read_text())
    return check.Command(entry["returncode"], entry["stdout"], entry["stderr"])


def stack_run(drift: str = "clean", latest: Any = "clean.latest.json", stack: str = "prod") -> Any:
    latest_run = recorded(latest) if isinstance(latest, str) else latest
    return check.StackRun(stack, recorded(f"{drift}.drift.json"), latest_run, recorded("clean.outputs.json"))


RUNNING = recorded("clean.outputs.json").data["gvisorRelease"]
MACHINES = sorted(recorded("clean.outputs.json").data["machines"])
NEWEST = check.newest_release(recorded("clean.latest.json").data)


# --- the report, from the recorded engine output --------------------------------------


def test_the_recordings_hold_what_the_tests_rely_on() -> None:
    assert MACHINES == ["s1", "s2"]
    assert NEWEST and check.release_key(NEWEST) > check.release_key(RUNNING)
    assert recorded("unreachable.drift.json").returncode != 0
    assert all(recorded(f"{p}.drift.json").data["steps"] for p in ("clean", "drift", "unreachable"))


def test_drift_names_the_machine_and_each_item_and_nothing_else() -> None:
    found = check.findings(stack_run("drift"))
    assert [(d.machine, d.items) for d in found.drift] == [
        ("s1", {"runscBinary": "changed by hand", "runscToml": "removed by hand"})
    ]
    assert found.other_changes == {} and found.errors == []
    body = check.render([found], "2026-12-06 05:23 UTC", None)
    assert (
        "- `s1`: the runsc binary (`runscBinary`, changed by hand), runsc.toml (`runscToml`, removed by hand)" in body
    )
    assert "`s2`:" not in body
    assert "| `prod` | 1 machine, 2 items |" in body


def test_no_drift_in_a_clean_refresh() -> None:
    found = check.findings(stack_run("clean"))
    assert found.drift == [] and found.other_changes == {} and found.errors == []


def test_a_newer_release_names_it_the_running_one_and_the_install_steps() -> None:
    found = check.findings(stack_run("clean"))
    assert found.newer == check.Newer(NEWEST, RUNNING, RUNNING, MACHINES)
    body = check.render([found], "now", None)
    assert f"**A newer gVisor release**: {NEWEST}; the stack runs {RUNNING}." in body
    assert f"set it to `{NEWEST}` or `latest`, then `pulumi up`" in body
    assert "Install steps that would update: `s1`, `s2`." in body
    assert f"| **{NEWEST}** is out |" in body


def test_a_stack_on_latest_is_told_the_next_up_installs_it() -> None:
    run = stack_run("clean")
    drift = run.drift.data | {"config": run.drift.data["config"] | {"gvisor-fleet:release": "latest"}}
    found = check.findings(check.StackRun("prod", check.Command(0, drift), run.latest, run.outputs))
    assert found.newer is not None and found.newer.configured == "latest"
    assert "It is set to `latest`: the next `pulumi up` installs it." in check.render([found], "now", None)


@pytest.mark.parametrize("running", ["newest", "newer still"])
def test_no_newer_release_when_the_stack_runs_the_newest(running: str) -> None:
    release = NEWEST if running == "newest" else NEWEST.split(".")[0] + ".99"
    outputs = check.Command(0, {"gvisorRelease": release})
    run = stack_run("clean")
    found = check.findings(check.StackRun("prod", run.drift, run.latest, outputs))
    assert found.newer is None and not found.found
    assert found.release_note == f"{release} is the newest release"
    body = check.render([found], "now", None)
    assert f"Nothing found: no drift, nothing for `pulumi up` to do; gVisor release {release} is the newest" in body
    assert body.startswith(check.MARKER + "\n") and "Nothing found in 1 stacks" in body


def test_an_unreachable_machine_is_an_error_naming_it_without_the_traceback() -> None:
    found = check.findings(stack_run("unreachable"))
    (error,) = found.errors
    assert error.startswith("`pulumi preview --refresh` failed: s2-check: Preview failed:")
    assert re.search(r"root@127\.0\.0\.1:\d+: SSH failed for the drift check: .*Connection refused", error)
    assert "Traceback" not in error and "/tmp/" not in error and "preview failed\n" not in error
    assert found.drift_unknown and found.drift == []
    body = check.render([found], "now", None)
    assert "| `prod` | not known (the preview failed) |" in body
    assert "**Errors**:\n\n```text\n`pulumi preview --refresh` failed: s2-check" in body


def test_changes_that_are_not_drift_are_listed_as_other_changes() -> None:
    # The `latest` preview, read as if it were the refresh: a release change not yet applied.
    run = check.StackRun("prod", recorded("clean.latest.json"), None, recorded("clean.outputs.json"), "no file")
    found = check.findings(run)
    assert found.drift == []
    assert found.other_changes == {
        "update": ["s1-check", "s1-install", "s2-check", "s2-install"],
        "replace": ["s1-verify", "s2-verify"],
    }
    body = check.render([found], "now", None)
    assert "**Other changes** the next `pulumi up` would make" in body
    assert "- replace: `s1-verify`, `s2-verify`" in body
    assert "| not checked: no file | 6 | none |" in body


def test_a_failed_latest_preview_or_one_without_the_release_note_is_an_error() -> None:
    failed = check.Command(255, None, "error: gvisor-fleet:release latest: cannot resolve it (connect)\n")
    found = check.findings(stack_run("clean", failed))
    assert found.errors == [
        "the `latest` preview failed: error: gvisor-fleet:release latest: cannot resolve it (connect)"
    ]
    silent = check.Command(0, recorded("clean.latest.json").data | {"diagnostics": []})
    found = check.findings(stack_run("clean", silent))
    assert found.newer is None and "did not say which release `latest` is" in found.errors[0]


def test_secrets_and_long_errors_are_kept_out_of_the_report() -> None:
    failed = check.Command(1, None, "x" * 10_000 + " hunter2-passphrase ```")
    found = check.findings(check.StackRun("prod", failed, None, failed, "no file"))
    body = check.render([found], "now", None, ["hunter2-passphrase", ""])
    assert "hunter2" not in body and "[secret]" in body
    assert len(body) < check.ERROR_CHARS + 2000 and "``` " not in body.split("```text")[1]


def test_a_report_longer_than_an_issue_holds_keeps_the_summary_table() -> None:
    many = [check.Drift(f"web-{i:04d}", {"runscBinary": "changed by hand"}) for i in range(2000)]
    found = check.findings(stack_run("unreachable"))
    found.drift = many
    whole = check.render([found, check.findings(stack_run("drift", stack="other"))], "now", None)
    body = check.bounded(whole)
    assert len(whole) > 65_536 and body.startswith(whole[:50_000])
    assert 50_000 < len(body) < 65_536
    assert "| `prod` | 2000 machines, 2000 items |" in body and "| `other` | 1 machine, 2 items |" in body
    assert body.endswith("(The rest of the report is left out: an issue holds no more. See the job's summary.)\n")
    assert body.count("```") % 2 == 0


def test_a_report_cut_inside_an_error_closes_its_block() -> None:
    found = check.findings(stack_run("unreachable"))
    found.errors = [f"error {i}: " + "y" * 3000 for i in range(30)]
    body = check.bounded(check.render([found], "now", None))
    assert len(body) < 65_536 and "error 29:" not in body
    assert body.count("```") % 2 == 0 and body.count("```text") == body.count("```") // 2


def test_the_summary_counts_the_stacks_with_findings() -> None:
    results = [check.findings(stack_run(p, stack=p)) for p in ("clean", "drift", "unreachable")]
    body = check.render(results, "2026-12-06 05:23 UTC", "https://github.com/acme/fleet/actions/runs/7")
    assert "Found something in 3 of 3 stacks ([this run](https://github.com/acme/fleet/actions/runs/7)" in body
    assert [line.split("|")[1].strip() for line in body.splitlines() if line.startswith("| `")] == [
        "`clean`",
        "`drift`",
        "`unreachable`",
    ]
    assert body.count("\n### ") == 3


@pytest.mark.parametrize(
    ("found", "existing", "action"),
    [(True, None, "create"), (True, 12, "update"), (False, 12, "close"), (False, None, "none")],
)
def test_one_open_issue_while_something_is_found(found: bool, existing: int | None, action: str) -> None:
    assert check.issue_action(found, existing) == action


# --- inputs ------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "stacks"), [(None, []), ("", []), (" [] ", []), ('["a", "o/p/b"]', ["a", "o/p/b"])])
def test_stacks_unset_or_empty_mean_none(raw: str | None, stacks: list[str]) -> None:
    assert check.parse_stacks(raw) == stacks


@pytest.mark.parametrize("raw", ["prod", '{"stack": "prod"}', "[1]", '[""]', '["prod",'])
def test_stacks_not_a_list_of_names_name_the_variable(raw: str) -> None:
    with pytest.raises(check.CheckError, match="PULUMI_PREVIEW_STACKS must be a JSON list of stack names"):
        check.parse_stacks(raw)


def test_the_latest_copy_of_the_config_changes_only_the_release() -> None:
    text = (REPO / "stacks" / "Pulumi.local.yaml").read_text()
    original = yaml.safe_load(text)
    copy = yaml.safe_load(check.latest_config(text))
    assert copy["config"].pop("gvisor-fleet:release") == "latest"
    original["config"].pop("gvisor-fleet:release", None)
    assert copy == original and copy["encryptionsalt"].startswith("v1:")


def test_the_stack_config_file_is_found_in_the_project_s_stack_config_dir(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.yaml").write_text("name: p\nruntime: python\nstackConfigDir: stacks\n")
    assert check.stack_config_file(tmp_path, "acme/p/prod") == tmp_path / "stacks" / "Pulumi.prod.yaml"
    (tmp_path / "Pulumi.yaml").write_text("name: p\nruntime: python\n")
    assert check.stack_config_file(tmp_path, "prod") == tmp_path / "Pulumi.prod.yaml"


# --- the workflow -------------------------------------------------------------------


def workflow() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return doc


def step(name_or_id: str) -> dict[str, Any]:
    (found,) = [s for s in workflow()["jobs"]["check"]["steps"] if name_or_id in (s.get("id"), s.get("uses"))]
    return found


def test_the_workflow_runs_on_a_schedule_and_by_hand_and_may_write_issues_only() -> None:
    doc = workflow()
    on = doc.get("on", doc.get(True))  # YAML 1.1 reads `on` as true
    (cron,) = [entry["cron"] for entry in on["schedule"]]
    assert len(cron.split()) == 5 and "workflow_dispatch" in on
    assert doc["permissions"] == {"contents": "read"}
    assert doc["jobs"]["check"]["permissions"] == {"contents": "read", "issues": "write"}


def test_secrets_reach_the_steps_only_through_the_environment() -> None:
    job = workflow()["jobs"]["check"]
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert "${{" not in runs
    assert job["env"]["PULUMI_CONFIG_PASSPHRASE"] == "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"
    assert step("check")["env"] == {"GH_TOKEN": "${{ secrets.GITHUB_TOKEN }}"}
    assert "command" not in step("pulumi/actions@v7")["with"]  # installs the CLI only


# Stand-ins: `pulumi` replays the recordings of $FAKE_PULUMI_PHASE (the clean ones
# where that phase has none) and keeps the config file it is given; `gh` answers
# the issue listing with $FAKE_GH_EXISTING and keeps the body it is given. Both log.
FAKE_PULUMI = """#!/usr/bin/env python3
import json, os, shutil, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write("pulumi " + " ".join(args) + "\\n")
if "preview" not in args and "output" not in args:
    sys.exit(0)
kind = "drift" if "--refresh" in args else "latest" if "--config-file" in args else "outputs"
if kind == "latest":
    shutil.copy(args[args.index("--config-file") + 1], os.environ["FAKE_CONFIG_COPY"])
folder = os.environ["FAKE_PULUMI_RECORDED"]
path = os.path.join(folder, os.environ.get("FAKE_PULUMI_PHASE", "clean") + "." + kind + ".json")
if not os.path.exists(path):
    path = os.path.join(folder, "clean." + kind + ".json")
entry = json.load(open(path))
out = entry["stdout"]
sys.stdout.write(out if isinstance(out, str) else json.dumps(out))
sys.stderr.write(entry["stderr"])
sys.exit(entry["returncode"])
"""

FAKE_GH = """#!/bin/sh
echo "gh $*" >> "$FAKE_LOG"
for arg; do case $arg in body=@*) cp "${arg#body=@}" "$FAKE_GH_BODY" ;; esac; done
case "$*" in *--paginate*) [ -z "${FAKE_GH_EXISTING:-}" ] || echo "$FAKE_GH_EXISTING" ;; esac
exit "${FAKE_GH_STATUS:-0}"
"""


@pytest.fixture
def runner(tmp_path: Path) -> dict[str, str]:
    """The environment of a step on GitHub's runner, with the stand-ins first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("pulumi", FAKE_PULUMI), ("gh", FAKE_GH)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    recordings = tmp_path / "recorded"
    shutil.copytree(RECORDED, recordings)
    (tmp_path / "runner-temp").mkdir()
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "GITHUB_OUTPUT": str(tmp_path / "output"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "RUNNER_TEMP": str(tmp_path / "runner-temp"),
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "acme/gvisor-fleet",
        "GITHUB_RUN_ID": "4242",
        "GH_TOKEN": "test-token",
        "PULUMI_CONFIG_PASSPHRASE": "correct-horse-battery",
        "PULUMI_PREVIEW_STACKS": '["local"]',
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "FAKE_GH_BODY": str(tmp_path / "body.md"),
        "FAKE_CONFIG_COPY": str(tmp_path / "latest-config.yaml"),
        "FAKE_PULUMI_RECORDED": str(recordings),
    }


def run_step(step_id: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The step's `run:` block as the runner runs it on Ubuntu: bash -eo pipefail on a file, in the checkout."""
    path = Path(env["HOME"]) / f"{step_id}.sh"
    path.write_text(step(step_id)["run"])
    argv = ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(path)]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def calls(env: dict[str, str]) -> list[str]:
    log = Path(env["FAKE_LOG"])
    return log.read_text().splitlines() if log.exists() else []


def body_file(call: str) -> str:
    found = re.search(r"body=@(\S+)", call)
    assert found, call
    return found.group(1)


def test_the_version_step_reads_the_engine_version_the_project_tests_with(runner: dict[str, str]) -> None:
    done = run_step("version", runner)
    assert done.returncode == 0, done.stderr
    pinned = re.search(r"GVISOR_FLEET_PULUMI_VERSION:-([0-9.]+)}", (REPO / "tests/toolchain/pulumi-env.sh").read_text())
    assert pinned and Path(runner["GITHUB_OUTPUT"]).read_text() == f"pulumi-version={pinned.group(1)}\n"


@pytest.mark.parametrize("backend", ["", "s3://acme-pulumi/gvisor-fleet?region=eu-west-1"])
def test_the_login_step_logs_in_to_the_backend_or_pulumi_cloud(runner: dict[str, str], backend: str) -> None:
    logins = [s for s in workflow()["jobs"]["check"]["steps"] if "pulumi login" in s.get("run", "")]
    assert len(logins) == 1
    path = Path(runner["HOME"]) / "login.sh"
    path.write_text(logins[0]["run"])
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(path)],
        env=runner | {"PULUMI_BACKEND_URL": backend}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert calls(runner) == [f"pulumi login --non-interactive {backend}".rstrip()]


def test_drift_found_opens_the_issue(runner: dict[str, str]) -> None:
    done = run_step("check", runner | {"FAKE_PULUMI_PHASE": "drift"})
    assert done.returncode == 0, done.stdout + done.stderr
    made = calls(runner)
    assert made[:3] == [
        f"pulumi --cwd {REPO} preview --stack local --refresh --json",
        f"pulumi --cwd {REPO} stack output --stack local --json",
        made[2],
    ]
    assert made[2].startswith(f"pulumi --cwd {REPO} preview --stack local --json --config-file ")
    assert made[3].startswith("gh api --paginate repos/acme/gvisor-fleet/issues?state=open")
    assert made[4] == (
        f"gh api --method POST repos/acme/gvisor-fleet/issues -f title={check.TITLE} -F body=@{body_file(made[4])}"
    )
    body = Path(runner["FAKE_GH_BODY"]).read_text()
    assert body.startswith(check.MARKER)
    assert "- `s1`: the runsc binary (`runscBinary`, changed by hand)" in body
    assert "([this run](https://github.com/acme/gvisor-fleet/actions/runs/4242)," in body
    assert (Path(runner["RUNNER_TEMP"]) / "scheduled-check.md").read_text() == body
    assert Path(runner["GITHUB_STEP_SUMMARY"]).read_text() == body
    assert "scheduled-check: opened an issue" in done.stdout
    # The `latest` preview got the stack's own config, release set to latest (salt and all else kept).
    copy = yaml.safe_load(Path(runner["FAKE_CONFIG_COPY"]).read_text())
    assert copy["config"]["gvisor-fleet:release"] == "latest" and copy["encryptionsalt"].startswith("v1:")


def test_a_later_run_edits_the_open_issue(runner: dict[str, str]) -> None:
    done = run_step("check", runner | {"FAKE_PULUMI_PHASE": "unreachable", "FAKE_GH_EXISTING": "17\n31"})
    assert done.returncode == 0, done.stdout + done.stderr
    writes = [c for c in calls(runner) if "--method" in c]
    assert writes == [f"gh api --method PATCH repos/acme/gvisor-fleet/issues/17 -F body=@{body_file(writes[0])}"]
    assert "SSH failed for the drift check" in Path(runner["FAKE_GH_BODY"]).read_text()


@pytest.mark.parametrize(("existing", "closed"), [("17", True), ("", False)])
def test_nothing_found_closes_the_open_issue(runner: dict[str, str], existing: str, closed: bool) -> None:
    # The stack already runs the newest release: nothing is left to report.
    outputs = Path(runner["FAKE_PULUMI_RECORDED"]) / "clean.outputs.json"
    entry = json.loads(outputs.read_text())
    entry["stdout"]["gvisorRelease"] = NEWEST
    outputs.write_text(json.dumps(entry))
    done = run_step("check", runner | {"FAKE_GH_EXISTING": existing})
    assert done.returncode == 0, done.stdout + done.stderr
    writes = [c for c in calls(runner) if "--method" in c]
    if closed:
        assert writes == [
            f"gh api --method PATCH repos/acme/gvisor-fleet/issues/17 -F body=@{body_file(writes[0])} -f state=closed"
        ]
        assert "Nothing found in 1 stacks" in Path(runner["FAKE_GH_BODY"]).read_text()
        assert "closed issue #17 (nothing found)" in done.stdout
    else:
        assert writes == [] and "nothing to do" in done.stdout


def test_unset_stacks_check_nothing_and_bad_ones_fail_naming_the_variable(runner: dict[str, str]) -> None:
    done = run_step("check", runner | {"PULUMI_PREVIEW_STACKS": ""})
    assert done.returncode == 0 and calls(runner) == []
    assert "PULUMI_PREVIEW_STACKS is unset or []: no stack to check" in done.stdout
    done = run_step("check", runner | {"PULUMI_PREVIEW_STACKS": "prod"})
    assert done.returncode == 1 and calls(runner) == []
    assert "::error title=scheduled check::PULUMI_PREVIEW_STACKS must be a JSON list of stack names" in done.stdout


def test_a_refused_api_call_fails_the_job(runner: dict[str, str]) -> None:
    done = run_step("check", runner | {"FAKE_GH_STATUS": "1"})
    assert done.returncode == 1
    assert "::error title=scheduled check::gh api --paginate repos/acme/gvisor-fleet/issues" in done.stdout


def test_nothing_secret_reaches_the_issue(runner: dict[str, str]) -> None:
    # A passphrase the engine would print (it does not) is replaced, and the login key never shows.
    entry = json.loads((Path(runner["FAKE_PULUMI_RECORDED"]) / "unreachable.drift.json").read_text())
    entry["stdout"]["diagnostics"][0]["message"] += "correct-horse-battery"
    (Path(runner["FAKE_PULUMI_RECORDED"]) / "unreachable.drift.json").write_text(json.dumps(entry))
    assert run_step("check", runner | {"FAKE_PULUMI_PHASE": "unreachable"}).returncode == 0
    body = Path(runner["FAKE_GH_BODY"]).read_text()
    assert "correct-horse-battery" not in body and "[secret]" in body
    assert "PRIVATE KEY" not in body and "test-token" not in body


def test_the_command_of_docs_ci_and_policy_prints_and_writes_the_report(runner: dict[str, str], tmp_path: Path) -> None:
    (block,) = marked("docs/ci-and-policy.md", "tests/unit/test_scheduled_check.py")
    # Run where the checkout's .venv and .github are, in a folder of the test's own.
    work = tmp_path / "checkout"
    work.mkdir()
    for name in (".venv", ".github"):
        (work / name).symlink_to(REPO / name)
    done = subprocess.run(
        ["sh", "-euc", block.body], cwd=work, env=runner | {"FAKE_PULUMI_PHASE": "drift"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = (work / "scheduled-check.md").read_text()
    assert report in done.stdout and "### `prod`" in report
    assert "- `s1`: the runsc binary" in report
    assert "| not checked: no stack config file Pulumi.prod.yaml to copy |" in report
    assert not any(call.startswith("gh ") for call in calls(runner))


def test_the_issue_holds_what_fits_and_the_job_summary_all(runner: dict[str, str]) -> None:
    path = Path(runner["FAKE_PULUMI_RECORDED"]) / "drift.drift.json"
    entry = json.loads(path.read_text())
    (drifted,) = [s for s in entry["stdout"]["steps"] if s["op"] == "update"]
    for i in range(1000):  # a fleet of a thousand drifted machines
        entry["stdout"]["steps"].append(drifted | {"urn": drifted["urn"].replace("::s1-check", f"::web-{i}-check")})
    path.write_text(json.dumps(entry))
    assert run_step("check", runner | {"FAKE_PULUMI_PHASE": "drift"}).returncode == 0
    summary, issue = (Path(runner[k]).read_text() for k in ("GITHUB_STEP_SUMMARY", "FAKE_GH_BODY"))
    assert len(issue) < 65_536 < len(summary)
    assert "- `web-999`: the runsc binary" in summary and "- `web-999`:" not in issue
    assert issue.startswith(summary[:20_000]) and "| `local` | 1001 machines, 2002 items |" in issue
