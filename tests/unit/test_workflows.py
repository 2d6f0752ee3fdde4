"""The GitHub workflows against the actions they pin, and their own shell steps run here.

Every `uses:` must pin a release of an action listed in .github/action-inputs.yaml
(inputs and runtime copied from that action's action.yml at the ref), and every
`with:` key must be one of its inputs, so a bump that renames an input fails here
rather than on GitHub. The steps that are plain shell (the PULUMI_PREVIEW_STACKS
reader, the comment of a failed preview) run for real; `gh` is a stand-in that
records its calls, since the tests cannot reach GitHub's API.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.paths import REPO
from tests.support.toolchain import built_engine_env

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
ACTIONS = REPO / ".github" / "action-inputs.yaml"
GONE_RUNTIMES = {"node12", "node16", "node20"}  # removed from GitHub's runners
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@(v\d+(\.\d+){0,2}|[0-9a-f]{40})$")


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the key `on` as the boolean true.
    on = workflow.get("on", workflow.get(True))
    return on if isinstance(on, dict) else {}


def problems(workflows: dict[str, dict[str, Any]], actions: dict[str, dict[str, Any]]) -> list[str]:
    """Every `uses:` and `with:` in the workflows that the pinned actions do not back."""
    found = []
    for name, workflow in workflows.items():
        for job_id, job in workflow["jobs"].items():
            where = f"{name}: job {job_id}"
            if "uses" in job:  # a reusable workflow
                called = job["uses"]
                if not called.startswith("./.github/workflows/") or not (REPO / called).is_file():
                    found.append(f"{where}: calls {called}, not a workflow of this repository")
                    continue
                inputs = (triggers(load(REPO / called)).get("workflow_call") or {}).get("inputs") or {}
                found += [
                    f"{where}: {called} has no input '{key}'" for key in job.get("with") or {} if key not in inputs
                ]
                continue
            for index, step in enumerate(job["steps"]):
                if "uses" not in step:
                    continue
                uses, label = step["uses"], f"{where}, step {step.get('name', index + 1)!r}"
                if not PINNED.match(uses):
                    found.append(f"{label}: {uses} is not pinned to a release (owner/repo@vN or a commit)")
                    continue
                action = actions.get(uses)
                if action is None:
                    found.append(f"{label}: {uses} is not in .github/action-inputs.yaml; add its action.yml inputs")
                    continue
                given = step.get("with") or {}
                found += [f"{label}: {uses} has no input '{key}'" for key in given if key not in action["inputs"]]
                found += [f"{label}: {uses} needs input '{key}'" for key in action["required"] if key not in given]
                if action["runs"] in GONE_RUNTIMES:
                    found.append(f"{label}: {uses} runs on {action['runs']}, which GitHub's runners no longer have")
    return found


def repo_workflows() -> dict[str, dict[str, Any]]:
    return {path.name: load(path) for path in WORKFLOWS}


def test_every_action_is_pinned_and_every_input_is_declared() -> None:
    assert WORKFLOWS, "no workflows found"
    assert problems(repo_workflows(), load(ACTIONS)) == []


def test_the_list_holds_only_actions_the_workflows_use() -> None:
    used = {
        step["uses"]
        for workflow in repo_workflows().values()
        for job in workflow["jobs"].values()
        for step in job.get("steps", [])
        if "uses" in step
    }
    assert set(load(ACTIONS)) == used


WORKFLOW = """
on: push
jobs:
  build:
    runs-on: ubuntu-24.04
    steps:
      - uses: {uses}
        with: {with_}
"""


@pytest.mark.parametrize(
    ("uses", "with_", "expected"),
    [
        # An input renamed by a bump, or never declared.
        ("actions/cache@v6", "{path: x, key: k, save-always: true}", "actions/cache@v6 has no input 'save-always'"),
        ("pulumi/actions@v7", "{command: preview, policy-packs: p}", "pulumi/actions@v7 has no input 'policy-packs'"),
        # A required input left out.
        ("actions/cache/save@v6", "{path: x}", "actions/cache/save@v6 needs input 'key'"),
        # Not pinned, or pinned to a ref nobody has read.
        ("actions/checkout@main", "{}", "actions/checkout@main is not pinned to a release"),
        ("actions/checkout", "{}", "actions/checkout is not pinned to a release"),
        ("actions/checkout@v9", "{}", "actions/checkout@v9 is not in .github/action-inputs.yaml"),
    ],
)
def test_a_wrong_use_is_named(uses: str, with_: str, expected: str) -> None:
    workflow = yaml.safe_load(WORKFLOW.format(uses=uses, with_=with_))
    found = problems({"x.yml": workflow}, load(ACTIONS))
    assert len(found) == 1 and expected in found[0], found


def test_an_action_on_a_removed_node_runtime_is_named() -> None:
    actions = load(ACTIONS) | {"actions/cache@v4": {"runs": "node20", "required": [], "inputs": ["path", "key"]}}
    workflow = yaml.safe_load(WORKFLOW.format(uses="actions/cache@v4", with_="{path: x, key: k}"))
    assert problems({"x.yml": workflow}, actions) == [
        "x.yml: job build, step 1: actions/cache@v4 runs on node20, which GitHub's runners no longer have"
    ]


def step_script(workflow: str, job: str, step_id: str) -> str:
    steps = load(REPO / ".github" / "workflows" / workflow)["jobs"][job]["steps"]
    (step,) = [s for s in steps if s.get("id") == step_id]
    script: str = step["run"]
    return script


def run_script(script: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A `run:` block as GitHub's runner runs it on Ubuntu: bash -eo pipefail on a file, in the checkout."""
    path = tmp_path / "step.sh"
    path.write_text(script)
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GITHUB_OUTPUT": str(tmp_path / "output")}
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(path)],
        cwd=REPO, env=base | env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("value", "stacks"),
    [
        (None, []),
        ("", []),
        ("[]", []),
        (" [ ]\n", []),
        ('["prod", "staging"]', ["prod", "staging"]),
        ('["acme/gvisor-fleet/prod"]', ["acme/gvisor-fleet/prod"]),
    ],
)
def test_preview_stacks_unset_or_empty_mean_no_preview(tmp_path: Path, value: str | None, stacks: list[str]) -> None:
    env = {} if value is None else {"PULUMI_PREVIEW_STACKS": value}
    result = run_script(step_script("pull-request.yml", "stacks", "stacks"), tmp_path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = (tmp_path / "output").read_text().splitlines()
    assert line.startswith("stacks=") and json.loads(line.removeprefix("stacks=")) == stacks
    # The preview job runs only when the list is not empty: its condition compares with '[]'.
    preview = load(REPO / ".github" / "workflows" / "pull-request.yml")["jobs"]["preview"]
    assert preview["if"] == "needs.stacks.outputs.stacks != '[]'"
    assert (line == "stacks=[]") == (not stacks)


@pytest.mark.parametrize("value", ["prod", '{"stack": "prod"}', "[1]", '[""]', '["prod",'])
def test_preview_stacks_not_a_list_of_names_fails_naming_the_variable(tmp_path: Path, value: str) -> None:
    result = run_script(step_script("pull-request.yml", "stacks", "stacks"), tmp_path, {"PULUMI_PREVIEW_STACKS": value})
    assert result.returncode == 1
    assert "::error title=PULUMI_PREVIEW_STACKS::must be a JSON list of stack names" in result.stdout
    assert not (tmp_path / "output").exists()


# A stand-in for the GitHub CLI: logs each call, answers the comment listing
# with the id in $FAKE_GH_EXISTING (if any), keeps the body it was given.
FAKE_GH = """#!/bin/sh
echo "$*" >> "$FAKE_GH_LOG"
for arg; do case $arg in body=@*) cp "${arg#body=@}" "$FAKE_GH_BODY" ;; esac; done
case "$*" in *--paginate*) [ -z "${FAKE_GH_EXISTING:-}" ] || echo "$FAKE_GH_EXISTING" ;; esac
"""

# The policy pack's report of a mandatory violation, as `pulumi preview` prints it.
VIOLATION = """Policies:
    ❌ gvisor-fleet@v0.1.0 (local: components/policy)
        - [mandatory]  gvisor-release-pinned  (command:remote:Command: web-1-install)
          the install step must pin a dated gVisor release (YYYYMMDD[.N]), not 'latest'
error: preview failed
pulumi preview: exit status 255
"""


@pytest.fixture
def fake_gh(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gh = bin_dir / "gh"
    gh.write_text(FAKE_GH)
    gh.chmod(gh.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "preview.txt").write_text(VIOLATION)
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_GH_LOG": str(tmp_path / "gh.log"),
        "FAKE_GH_BODY": str(tmp_path / "body.md"),
        "GH_TOKEN": "test-token",
        "GITHUB_REPOSITORY": "acme/gvisor-fleet",
        "PR_NUMBER": "42",
    }


def comment(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = ["sh", ".github/preview-comment.sh", "prod", str(tmp_path / "preview.txt")]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_a_failed_preview_is_commented_with_the_heading_pulumi_actions_edits(
    tmp_path: Path, fake_gh: dict[str, str]
) -> None:
    result = comment(tmp_path, fake_gh)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "gh.log").read_text().splitlines()
    assert calls[-1].startswith("api --method POST repos/acme/gvisor-fleet/issues/42/comments -F body=@")
    body = (tmp_path / "body.md").read_text()
    # pulumi/actions (src/libs/pr.ts) edits the comment that starts with this heading
    # and holds its summary, so the next successful preview replaces this one.
    assert body.startswith("#### :tropical_drink: `preview` on gvisor-fleet/prod\n")
    assert "<summary>Pulumi report</summary>" in body
    assert "[mandatory]  gvisor-release-pinned" in body
    assert "not &#39;latest&#39;" not in body and "not 'latest'" in body
    assert "pulumi preview: exit status 255" in body


def test_a_failed_preview_edits_the_comment_already_there(tmp_path: Path, fake_gh: dict[str, str]) -> None:
    result = comment(tmp_path, fake_gh | {"FAKE_GH_EXISTING": "777"})
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "gh.log").read_text().splitlines()
    assert calls[-1].startswith("api --method PATCH repos/acme/gvisor-fleet/issues/comments/777 -F body=@")
    assert not any("--method POST" in call for call in calls)


def test_a_long_report_keeps_its_end(tmp_path: Path, fake_gh: dict[str, str]) -> None:
    (tmp_path / "preview.txt").write_text("~ resource <changed>\n" * 10_000 + VIOLATION)
    assert comment(tmp_path, fake_gh).returncode == 0
    body = (tmp_path / "body.md").read_text()
    assert len(body) < 65_536
    assert "gvisor-release-pinned" in body and "&lt;changed&gt;" in body


def test_the_failure_comment_step_runs_only_after_a_failed_preview() -> None:
    steps = load(REPO / ".github" / "workflows" / "pull-request.yml")["jobs"]["preview"]["steps"]
    (preview,) = [s for s in steps if s.get("id") == "preview"]
    after = steps[steps.index(preview) + 1 :]
    assert [s["if"] for s in after] == ["failure() && steps.preview.outcome == 'failure'"]
    assert "sh .github/preview-comment.sh" in after[0]["run"]


def test_the_rerun_of_a_failed_preview_uses_flags_the_engine_has() -> None:
    """The re-run's `pulumi preview` flags, against the project's own engine's `--help`."""
    env = built_engine_env()
    if env is None:
        pytest.skip("the Pulumi engine is not built (sh tests/toolchain/build-pulumi.sh)")
    steps = load(REPO / ".github" / "workflows" / "pull-request.yml")["jobs"]["preview"]["steps"]
    (script,) = [s["run"] for s in steps if "pulumi preview" in s.get("run", "")]
    command = script[script.index("pulumi preview") : script.index(">")]
    flags = re.findall(r"(?<!\S)(--[a-z][a-z-]*)", command)
    assert {"--stack", "--policy-pack", "--policy-pack-config"} <= set(flags)
    usage = subprocess.run(["pulumi", "preview", "--help"], env=env, capture_output=True, text=True, timeout=60).stdout
    assert [flag for flag in flags if not re.search(rf"{flag}\b", usage)] == []
