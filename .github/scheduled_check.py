"""The scheduled check: drift and newer gVisor releases of each configured stack, in one issue.

    .venv/bin/python .github/scheduled_check.py [--stacks JSON] [--report FILE] [--issue]

For each stack (a JSON list; default: the PULUMI_PREVIEW_STACKS variable) it runs,
from the project's directory:

- `pulumi preview --refresh --json`: the drift (each machine's `<machine>-check`
  reads the host over SSH; a property per item changed by hand), and any other
  change the next `up` would make;
- `pulumi preview --json` with a copy of the stack's config whose
  `gvisor-fleet:release` is `latest`: the program resolves it to the newest
  dated release, and the install steps that would update to it show;
- `pulumi stack output --json`: the release the stack runs now.

Then it renders one Markdown report (printed, and written to --report and to the
job summary) and, with --issue, keeps one open issue up to date through `gh api`:
opened when something is found, its body replaced on each later run while
something is, closed (with the clean report as its body) once nothing is. The
issue is recognised by MARKER in its body, so no label has to exist.

Reading the engine's JSON (not its text) and rendering are pure functions; the
pulumi and gh calls are the thin shell around them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a file: the project's modules are beside .github/
    sys.path.insert(0, str(REPO))

from components.gvisor.drift import AS_INSTALLED, ITEMS  # noqa: E402
from components.gvisor.release_latest import DATED, release_key  # noqa: E402

MARKER = "<!-- gvisor-fleet:scheduled-check -->"
TITLE = "Scheduled check: drift or a newer gVisor release"
CHECK_TYPE = "pulumi-python:dynamic:Resource"
STACKS_VARIABLE = "PULUMI_PREVIEW_STACKS"
# The engine's note of the release `latest` is (release_latest.resolve_for_run).
LATEST_NOTE = re.compile(r"gvisor-fleet:release latest is (\S+) now")
# Steps that change nothing.
UNCHANGED = {"same", "read", "refresh", "discard"}
# The step of a machine that installs a release (release-copy with releaseFetch: once).
INSTALL_SUFFIXES = ("-install", "-release-copy")
# Never printed, whatever the engine says (they reach pulumi through the environment).
SECRET_VARIABLES = (
    "PULUMI_CONFIG_PASSPHRASE",
    "PULUMI_ACCESS_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "GH_TOKEN",
    "GITHUB_TOKEN",
)
ERROR_CHARS = 4000  # of each failed command's message kept in the report
BODY_CHARS = 60_000  # an issue's body holds up to 65,536 characters
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class CheckError(Exception):
    """Bad input: the message names the variable or option and the fix."""


# --- reading the engine's output (pure) ---------------------------------------------


@dataclass(frozen=True)
class Command:
    """One pulumi command's exit status, its parsed JSON (None if it printed none) and its stderr."""

    returncode: int
    data: Any
    stderr: str = ""


@dataclass(frozen=True)
class StackRun:
    """What the three commands gave for one stack (latest None: not run, `skipped` says why)."""

    stack: str
    drift: Command
    latest: Command | None
    outputs: Command
    skipped: str = ""


@dataclass(frozen=True)
class Drift:
    machine: str
    items: dict[str, str]  # item -> "changed by hand" / "removed by hand"


@dataclass(frozen=True)
class Newer:
    release: str  # the newest dated release
    running: str | None  # the release the stack runs (its gvisorRelease output)
    configured: str | None  # gvisor-fleet:release in the stack's config
    machines: list[str]  # machines whose install steps would update


@dataclass
class Findings:
    stack: str
    drift: list[Drift] = field(default_factory=list)
    newer: Newer | None = None
    release_note: str = ""  # what the latest check found when it found no newer release
    other_changes: dict[str, list[str]] = field(default_factory=dict)  # op -> resource names
    errors: list[str] = field(default_factory=list)
    drift_unknown: bool = False  # the drift preview failed: no machine was compared

    @property
    def found(self) -> bool:
        return bool(self.drift or self.newer or self.other_changes or self.errors)


def resource_name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def resource_type(step: Mapping[str, Any]) -> str:
    for side in ("newState", "oldState"):
        state = step.get(side)
        if isinstance(state, dict) and state.get("type"):
            return str(state["type"])
    # urn:pulumi:stack::project::parent$type::name
    return str(step.get("urn", "")).rsplit("::", 2)[-2].rsplit("$", 1)[-1] if "::" in str(step.get("urn")) else ""


def steps(data: Any) -> list[dict[str, Any]]:
    found = data.get("steps") if isinstance(data, dict) else None
    return [s for s in found or [] if isinstance(s, dict)]


def drift_of(step: Mapping[str, Any]) -> Drift | None:
    """The machine and items a refreshed `<machine>-check` found changed, or None."""
    name = resource_name(str(step.get("urn", "")))
    if resource_type(step) != CHECK_TYPE or not name.endswith("-check") or step.get("op") in UNCHANGED:
        return None
    old = step.get("oldState") or {}
    refreshed = old.get("outputs") or old.get("inputs") or {}
    reasons = {str(r) for r in step.get("diffReasons") or []}
    items = {
        item: str(refreshed.get(item) or "changed by hand")
        for item in ITEMS
        if item in reasons or refreshed.get(item) not in (None, AS_INSTALLED)
    }
    return Drift(name.removesuffix("-check"), items) if items else None


def without_traceback(message: str) -> str:
    """A provider's error as the engine prints it, its Python traceback left out (the exception's
    own lines kept): the reason, without the runner's paths."""
    head, sep, tail = message.partition("Traceback (most recent call last):")
    if not sep:
        return message
    rest = tail.splitlines()
    while rest and (not rest[0].strip() or rest[0].startswith(" ")):
        rest = rest[1:]
    return "\n".join([head.rstrip(), *rest]).strip()


def error_messages(command: Command, what: str) -> list[str]:
    """Why COMMAND failed: the engine's error diagnostics (each with its resource), else the end of stderr."""
    if command.returncode == 0:
        return []
    data = command.data if isinstance(command.data, dict) else {}
    messages = []
    for d in data.get("diagnostics") or []:
        if not isinstance(d, dict) or d.get("severity") != "error":
            continue
        text = without_traceback(clean(str(d.get("message", ""))).removeprefix("error:").strip())
        messages.append(f"{resource_name(str(d['urn']))}: {text}" if d.get("urn") else text)
    # The engine's closing "preview failed" says nothing once a reason is there.
    reasons = [m for m in messages if m and m.lower() != "preview failed"]
    messages = reasons or [m for m in messages if m]
    if not messages:
        messages = [clean(command.stderr) or f"it printed no reason (exit status {command.returncode})"]
    return [f"{what} failed: {m[-ERROR_CHARS:]}" for m in messages]


def clean(text: str) -> str:
    return ANSI.sub("", text).strip()


def notes(data: Any) -> list[str]:
    diagnostics = data.get("diagnostics") if isinstance(data, dict) else None
    return [str(d.get("message", "")) for d in diagnostics or [] if isinstance(d, dict)]


def newest_release(data: Any) -> str | None:
    """The release `latest` resolved to, from the program's note in the preview's diagnostics."""
    for message in notes(data):
        m = LATEST_NOTE.search(message)
        if m and DATED.match(m.group(1)):
            return m.group(1)
    return None


def install_machines(data: Any) -> list[str]:
    """Machines whose install step the preview would change, sorted."""
    found = set()
    for step in steps(data):
        name = resource_name(str(step.get("urn", "")))
        if step.get("op") in UNCHANGED:
            continue
        for suffix in INSTALL_SUFFIXES:
            if name.endswith(suffix):
                found.add(name.removesuffix(suffix))
    return sorted(found)


def configured_release(data: Any) -> str | None:
    config = data.get("config") if isinstance(data, dict) else None
    value = (config or {}).get("gvisor-fleet:release")
    return str(value) if value is not None else None


def findings(run: StackRun) -> Findings:
    """What one stack's commands found (pure)."""
    found = Findings(run.stack)
    drift_data = run.drift.data
    found.errors += error_messages(run.drift, "`pulumi preview --refresh`")
    found.drift_unknown = run.drift.returncode != 0
    for step in steps(drift_data):
        drift = drift_of(step)
        name = resource_name(str(step.get("urn", "")))
        if drift is not None:
            found.drift.append(drift)
        elif step.get("op") not in UNCHANGED and resource_type(step) != "pulumi:pulumi:Stack":
            found.other_changes.setdefault(str(step.get("op")), []).append(name)
    found.drift.sort(key=lambda d: d.machine)
    for names in found.other_changes.values():
        names.sort()

    running = None
    if run.outputs.returncode == 0 and isinstance(run.outputs.data, dict):
        value = run.outputs.data.get("gvisorRelease")
        running = value if isinstance(value, str) and DATED.match(value) else None
    if run.latest is None:
        found.release_note = f"not checked: {run.skipped}"
        return found
    found.errors += error_messages(run.latest, "the `latest` preview")
    if run.latest.returncode != 0:
        return found
    newest = newest_release(run.latest.data)
    if newest is None:
        found.errors.append("the `latest` preview did not say which release `latest` is (is the program current?)")
    elif running is None or release_key(newest) > release_key(running):
        configured = configured_release(drift_data) or configured_release(run.latest.data)
        found.newer = Newer(newest, running, configured, install_machines(run.latest.data))
    else:
        found.release_note = f"{running} is the newest release"
    return found


# --- rendering (pure) ---------------------------------------------------------------


def scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "[secret]")
    return text


def summary_row(f: Findings) -> str:
    drift = (
        f"{len(f.drift)} machine{'s' if len(f.drift) != 1 else ''}, {sum(len(d.items) for d in f.drift)} items"
        if f.drift
        else "not known (the preview failed)"
        if f.drift_unknown
        else "none"
    )
    release = f"**{f.newer.release}** is out" if f.newer else (f.release_note or "-")
    changes = sum(len(v) for v in f.other_changes.values())
    return f"| `{f.stack}` | {drift} | {release} | {changes or 'none'} | {len(f.errors) or 'none'} |"


def stack_section(f: Findings) -> list[str]:
    lines = [f"### `{f.stack}`", ""]
    if not f.found:
        release = f"gVisor release {f.release_note}" if f.release_note else "no newer gVisor release"
        return [*lines, f"Nothing found: no drift, nothing for `pulumi up` to do; {release}.", ""]
    if f.drift:
        lines += ["**Drift** (changed on the host since the last `up`; `pulumi up --refresh` puts it right):", ""]
        for d in f.drift:
            items = ", ".join(f"{ITEMS[i].what} (`{i}`, {s})" for i, s in d.items.items())
            lines.append(f"- `{d.machine}`: {items}")
        lines.append("")
    if f.newer:
        n = f.newer
        running = f"the stack runs {n.running}" if n.running else "the stack has no `gvisorRelease` output yet"
        if n.configured == "latest":
            how = "It is set to `latest`: the next `pulumi up` installs it."
        else:
            pinned = f" (`gvisor-fleet:release` is `{n.configured}`)" if n.configured else ""
            how = f"To upgrade{pinned}, set it to `{n.release}` or `latest`, then `pulumi up`."
        lines += [f"**A newer gVisor release**: {n.release}; {running}. {how}", ""]
        if n.machines:
            lines += ["Install steps that would update: " + ", ".join(f"`{m}`" for m in n.machines) + ".", ""]
    if f.other_changes:
        lines += [
            "**Other changes** the next `pulumi up` would make (a config not applied yet; on `release: latest`, "
            "also the newer release):",
            "",
        ]
        lines += [f"- {op}: " + ", ".join(f"`{n}`" for n in names) for op, names in sorted(f.other_changes.items())]
        lines.append("")
    if f.errors:
        lines += ["**Errors**:", ""]
        for error in f.errors:
            lines += ["```text", error.replace("```", "'''"), "```", ""]
    return lines


def render(results: Sequence[Findings], when: str, run_url: str | None, secrets: Iterable[str] = ()) -> str:
    """The issue's body (Markdown), MARKER first."""
    found = [f for f in results if f.found]
    where = f"[this run]({run_url})" if run_url else "this run"
    head = (
        f"Found something in {len(found)} of {len(results)} stacks"
        if found
        else f"Nothing found in {len(results)} stacks"
    )
    lines = [
        MARKER,
        "## Scheduled check: drift and gVisor releases",
        "",
        f"{head} ({where}, {when}). Drift: `pulumi preview --refresh`; releases: a preview with "
        "`gvisor-fleet:release: latest`.",
        "",
        "| stack | drift | gVisor release | other changes | errors |",
        "|---|---|---|---|---|",
        *(summary_row(f) for f in results),
        "",
    ]
    for f in results:
        lines += stack_section(f)
    return scrub("\n".join(lines).rstrip() + "\n", secrets)


def bounded(body: str) -> str:
    """The issue's BODY: the report cut to what an issue holds, at a line's end (the table, first, stays)."""
    if len(body) <= BODY_CHARS:
        return body
    cut = body.rfind("\n", 0, BODY_CHARS)
    kept = body[:cut]
    if kept.count("```") % 2:  # inside an error's block: close it
        kept += "\n```"
    return kept + "\n\n(The rest of the report is left out: an issue holds no more. See the job's summary.)\n"


def issue_action(found: bool, existing: int | None) -> str:
    """create, update, close or none: one open issue while something is found, closed when nothing is."""
    if found:
        return "update" if existing else "create"
    return "close" if existing else "none"


# --- input ----------------------------------------------------------------------------


def parse_stacks(raw: str | None, source: str = STACKS_VARIABLE) -> list[str]:
    raw = (raw or "").strip()
    try:
        stacks = json.loads(raw) if raw else []
    except json.JSONDecodeError:
        stacks = None
    if not isinstance(stacks, list) or not all(isinstance(s, str) and s.strip() for s in stacks):
        raise CheckError(
            f'{source} must be a JSON list of stack names, e.g. ["prod", "staging"] '
            f"(Settings -> Secrets and variables -> Actions); got {raw!r}"
        )
    return stacks


def stack_config_file(project: Path, stack: str) -> Path:
    """Pulumi.<stack>.yaml in the project's stackConfigDir (an org/project/ prefix dropped)."""
    doc = yaml.safe_load((project / "Pulumi.yaml").read_text()) or {}
    return project / str(doc.get("stackConfigDir") or ".") / f"Pulumi.{stack.rsplit('/', 1)[-1]}.yaml"


def latest_config(text: str) -> str:
    """The stack's config file with gvisor-fleet:release set to latest; everything else (salt, secrets) kept."""
    doc = yaml.safe_load(text) or {}
    doc.setdefault("config", {})
    doc["config"] = dict(doc["config"] or {}, **{"gvisor-fleet:release": "latest"})
    return yaml.safe_dump(doc, sort_keys=False)


# --- the shell: pulumi and gh ------------------------------------------------------------

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true", "NO_COLOR": "1"}
    return subprocess.run(list(argv), capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, check=False)


def as_command(done: subprocess.CompletedProcess[str]) -> Command:
    try:
        data = json.loads(done.stdout) if done.stdout.strip() else None
    except json.JSONDecodeError:
        data = None
        done = subprocess.CompletedProcess(done.args, done.returncode, "", (done.stderr + "\n" + done.stdout).strip())
    return Command(done.returncode, data, done.stderr)


def check_stack(stack: str, project: Path, runner: Runner = run) -> StackRun:
    base = ["pulumi", "--cwd", str(project)]
    drift = as_command(runner([*base, "preview", "--stack", stack, "--refresh", "--json"]))
    outputs = as_command(runner([*base, "stack", "output", "--stack", stack, "--json"]))
    config = stack_config_file(project, stack)
    if not config.is_file():
        return StackRun(stack, drift, None, outputs, skipped=f"no stack config file {config.name} to copy")
    with tempfile.TemporaryDirectory(prefix="gvisor-fleet-latest-") as tmp:
        copy = Path(tmp) / config.name
        copy.write_text(latest_config(config.read_text()))
        latest = as_command(runner([*base, "preview", "--stack", stack, "--json", "--config-file", str(copy)]))
    return StackRun(stack, drift, latest, outputs)


def gh(args: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    done = subprocess.run(["gh", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)
    if done.returncode != 0:
        raise CheckError(f"gh {' '.join(args[:3])} failed (exit {done.returncode}): {done.stderr.strip()[-600:]}")
    return done.stdout


def update_issue(repo: str, body_file: Path, found: bool) -> str:
    """Opens, edits or closes the check's one issue; returns what it did."""
    listing = gh(
        [
            "api", "--paginate", f"repos/{repo}/issues?state=open&per_page=100",
            "--jq", ".[] | select(.pull_request == null) | select((.body // \"\") | contains(env.MARKER)) | .number",
        ],
        {"MARKER": MARKER},
    )  # fmt: skip
    numbers = [int(n) for n in listing.split() if n.isdigit()]
    existing = min(numbers) if numbers else None
    action = issue_action(found, existing)
    body = f"body=@{body_file}"
    if action == "create":
        gh(["api", "--method", "POST", f"repos/{repo}/issues", "-f", f"title={TITLE}", "-F", body])
        return "opened an issue"
    if action == "update":
        gh(["api", "--method", "PATCH", f"repos/{repo}/issues/{existing}", "-F", body])
        return f"updated issue #{existing}"
    if action == "close":
        gh(["api", "--method", "PATCH", f"repos/{repo}/issues/{existing}", "-F", body, "-f", "state=closed"])
        return f"closed issue #{existing} (nothing found)"
    return "no open issue and nothing found: nothing to do"


def main(argv: Sequence[str] | None = None, runner: Runner = run) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stacks", help=f"a JSON list of stack names (default: ${STACKS_VARIABLE})")
    parser.add_argument("--project", type=Path, default=REPO, help="the Pulumi project's directory")
    parser.add_argument("--report", type=Path, help="also write the report (Markdown) here")
    parser.add_argument(
        "--issue", action="store_true", help="open, edit or close the issue (GH_TOKEN, GITHUB_REPOSITORY)"
    )
    args = parser.parse_args(argv)
    try:
        source = "--stacks" if args.stacks is not None else STACKS_VARIABLE
        stacks = parse_stacks(args.stacks if args.stacks is not None else os.environ.get(STACKS_VARIABLE), source)
        if not stacks:
            print(f"scheduled-check: {source} is unset or []: no stack to check")
            return 0
        results = [findings(check_stack(stack, args.project, runner)) for stack in stacks]
        server, repo, run_id = (os.environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
        run_url = f"{server}/{repo}/actions/runs/{run_id}" if server and repo and run_id else None
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        body = render(results, when, run_url, [os.environ.get(k, "") for k in SECRET_VARIABLES])
        print(body)
        if args.report:
            args.report.write_text(body)
        if os.environ.get("GITHUB_STEP_SUMMARY"):
            with open(os.environ["GITHUB_STEP_SUMMARY"], "a") as summary:
                summary.write(body)
        if args.issue:
            if not repo or not os.environ.get("GH_TOKEN"):
                raise CheckError("--issue needs GH_TOKEN and GITHUB_REPOSITORY (set by the workflow)")
            with tempfile.NamedTemporaryFile("w", suffix=".md", delete=False) as f:
                f.write(bounded(body))
            try:
                print("scheduled-check: " + update_issue(repo, Path(f.name), any(r.found for r in results)))
            finally:
                os.unlink(f.name)
    except CheckError as err:
        print(f"::error title=scheduled check::{err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
