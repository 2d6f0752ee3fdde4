"""The main workflow's shell steps, run the way GitHub's runner runs its full-suite job.

That job runs as root in a `debian:12` container. Two things about it differ from a
developer's machine, and both broke it:

- `/tmp` is the bind mount the job's `container.volumes` asks for; Docker creates the
  missing source directory as root, mode 0755. apt verifies repository signatures as
  the unprivileged `_apt` user, with its temporary files in `/tmp`.
- the checkout belongs to the runner's user (uid 1001), not to root, and git refuses
  to work in a repository another user owns ("dubious ownership").

Each test starts a throwaway machine (sandbox/start.sh: private mount, network and PID
namespaces, `/etc` and `/var/lib` behind overlays), lays out the runner's directories in
it, mounts `/tmp` as Docker does, and runs the `run:` blocks read from
`.github/workflows/main.yml` with bash, as the runner does in a container that has it.

Faithful, and offline: the sandbox has no network, so the apt step talks to a local
repository signed with a key made for the test. `apt-get update` verifies that
signature exactly as it verifies Debian's: the `gpgv` method runs as `_apt` and writes
its temporary files to `/tmp`. The packages in it are stand-ins with the names the step
installs (an empty package each, installing one file under `/usr/local`), and the
sandbox's dpkg and apt state starts empty, as in the image, where neither is installed.
The `uses:` steps are GitHub's own actions and do not run here: the checkout is a
copy of this repository committed into a git repository owned by uid 1001, the
machine's Go stands in for setup-go, and no cache is restored or saved.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.host.sandbox import Sandbox
from tests.support.paths import REPO

WORKFLOW = REPO / ".github" / "workflows" / "main.yml"
RUNNER_UID = 1001  # the `runner` user of GitHub's hosted runners, who owns the checkout
# The runner's container layout: workspace, temp directory, HOME (`/__w`, `/github/home`),
# under /media, which the sandbox covers with a tmpfs of its own (its mounts stay in
# its own mount namespace; the machine's /media is left as it is).
ROOT = "/media/runner"
WORKSPACE = f"{ROOT}/__w/gvisor-fleet/gvisor-fleet"
RUNNER_TEMP = f"{ROOT}/__w/_temp"
HOME = f"{ROOT}/github/home"
APT_REPO = "/var/lib/gvisor-fleet-ci-apt"

pytestmark = pytest.mark.host


def _missing_prerequisites() -> str | None:
    if os.geteuid() != 0:
        return "needs root (namespaces, mounts, apt and dpkg in the sandbox)"
    for tool in ("unshare", "nsenter", "git", "gpg", "dpkg-deb", "dpkg-scanpackages", "apt-get", "bash", "shellcheck"):
        if shutil.which(tool) is None:
            return f"needs '{tool}' (sh tests/setup.sh installs it)"
    return None


def full_suite_job() -> dict[str, Any]:
    job: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())["jobs"]["full-suite"]
    return job


def tmp_mount_source(job: dict[str, Any]) -> str:
    """The runner-side directory the job bind-mounts on the container's /tmp."""
    sources = [v.split(":")[0] for v in job["container"]["volumes"] if v.split(":")[1] == "/tmp"]
    assert len(sources) == 1, f"expected one volume on /tmp in {WORKFLOW}: {job['container']['volumes']}"
    return sources[0]


def run_steps(job: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The job's `run:` steps before and after the test suite itself, which the tests replace."""
    steps: list[dict[str, Any]] = [step for step in job["steps"] if "run" in step]
    suite = [i for i, step in enumerate(steps) if step["run"].strip() == "sh tests/run.sh"]
    assert len(suite) == 1, f"expected one `sh tests/run.sh` step in {WORKFLOW}"
    for step in steps:
        # The suite stand-in passes, so these all run; other conditions are not modelled.
        assert step.get("if", "always()") == "always()", f"step {step.get('name')!r}: condition not modelled"
    return steps[: suite[0]], steps[suite[0] + 1 :]


def apt_packages(job: dict[str, Any]) -> list[str]:
    """The packages the job's `apt-get install` asks for."""
    for step in run_steps(job)[0]:
        match = re.search(r"apt-get install ([^&|;\n]+)", step["run"])
        if match:
            return [word for word in match.group(1).split() if not word.startswith("-")]
    raise AssertionError(f"no `apt-get install` step in {WORKFLOW}")


def lint_listing() -> str:
    """The command the lint tier (tests/run.sh) lists the shell scripts with."""
    match = re.search(r"^\s*(?:\w+=\$\()?(git ls-files[^)|\n]*)", (REPO / "tests" / "run.sh").read_text(), re.M)
    assert match, "no `git ls-files` in tests/run.sh"
    return match.group(1).strip()


def runner_env(job: dict[str, Any]) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/go/bin",
        "HOME": HOME,
        "GITHUB_WORKSPACE": WORKSPACE,
        "RUNNER_TEMP": RUNNER_TEMP,
        "GITHUB_OUTPUT": f"{RUNNER_TEMP}/github-output",
        "GITHUB_ENV": f"{RUNNER_TEMP}/github-env",
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        # debian:12 has no /etc/gitconfig; this machine's must not mark anything safe.
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    env.update({k: str(v) for k, v in (job.get("env") or {}).items()})
    return env


def run_in_job(sandbox: Sandbox, env: dict[str, str], script: str, name: str) -> subprocess.CompletedProcess[str]:
    """One step as the runner runs it: bash -eo pipefail on a script file, in the workspace."""
    path = f"{RUNNER_TEMP}/{re.sub(r'[^A-Za-z0-9]+', '-', name).strip('-')}.sh"
    sandbox.write(path, script)
    assignments = [f"{k}={v}" for k, v in env.items()]
    argv = ["env", "-i", *assignments, "bash", "--noprofile", "--norc", "-eo", "pipefail", path]
    return sandbox.run(["sh", "-c", f"cd {shlex.quote(WORKSPACE)} && exec {shlex.join(argv)}"], timeout=300)


def make_checkout(dest: Path) -> None:
    """This repository's files, committed into a fresh git repository owned by the runner's user."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = REPO / os.fsdecode(name)
        if source.is_file():
            (dest / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / os.fsdecode(name))
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@example.invalid"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "checkout"], cwd=dest, check=True)
    subprocess.run(["chown", "-R", f"{RUNNER_UID}:{RUNNER_UID}", str(dest)], check=True)


# A signed local repository holding empty stand-ins for the packages the job installs,
# and apt and dpkg state as in a fresh image. Only sandbox paths change: /etc and
# /var/lib are overlays, /var/cache/apt a tmpfs mounted here.
_APT_STANDIN = r"""
set -eu
repo={repo}
export GNUPGHOME="$(mktemp -d /var/lib/gnupg-ci.XXXXXX)"
gpg --batch --quiet --passphrase '' --quick-gen-key 'gvisor-fleet test repository' ed25519 sign never
mkdir -p "$repo"
gpg --batch --export > /etc/apt/gvisor-fleet-ci.gpg
for pkg in {packages}; do
    root=$(mktemp -d /var/lib/standin.XXXXXX)
    mkdir -p "$root/DEBIAN" "$root/usr/local/share/gvisor-fleet-ci"
    echo "$pkg" > "$root/usr/local/share/gvisor-fleet-ci/$pkg"
    printf 'Package: %s\nVersion: 1:99\nArchitecture: all\nMaintainer: t <t@example.invalid>\n' "$pkg" \
        > "$root/DEBIAN/control"
    echo 'Description: test stand-in' >> "$root/DEBIAN/control"
    dpkg-deb -Zgzip --build "$root" "$repo/$pkg.deb" >/dev/null
done
cd "$repo"
dpkg-scanpackages -m . /dev/null > Packages 2>/dev/null
{{
    echo "Origin: gvisor-fleet-ci"
    echo "Date: $(date -Ru)"
    echo "SHA256:"
    echo " $(sha256sum Packages | cut -d' ' -f1) $(stat -c %s Packages) Packages"
}} > Release
gpg --batch --yes --clearsign -o InRelease Release
rm -f /etc/apt/sources.list.d/*
echo "deb [signed-by=/etc/apt/gvisor-fleet-ci.gpg] file:$repo ./" > /etc/apt/sources.list
rm -rf /var/lib/apt/lists/*
mount -t tmpfs tmpfs /var/cache/apt
: > /var/lib/dpkg/status
rm -f /var/lib/dpkg/updates/*
"""


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[tuple[Sandbox, dict[str, Any]]]:
    """A sandbox laid out like the runner's container for main.yml's full-suite job."""
    why = _missing_prerequisites()
    if why:
        pytest.skip(why)
    job = full_suite_job()
    layout = tmp_path / "runner"
    checkout = layout / WORKSPACE.removeprefix(f"{ROOT}/")
    checkout.mkdir(parents=True)
    make_checkout(checkout)
    for d in (RUNNER_TEMP, HOME):
        (layout / d.removeprefix(f"{ROOT}/")).mkdir(parents=True, exist_ok=True)
    # Docker creates a missing bind-mount source: root-owned, mode 0755.
    tmp_source = tmp_path / tmp_mount_source(job).strip("/").replace("/", "-")
    tmp_source.mkdir(mode=0o755)
    tmp_source.chmod(0o755)
    sandbox = Sandbox(tmp_path / "host")
    try:
        # A tmpfs first: / is the machine's own file system, even in the sandbox.
        sandbox.sh(f"mount -t tmpfs tmpfs {Path(ROOT).parent} && mkdir {ROOT} && mount --bind {layout} {ROOT}")
        sandbox.sh(_APT_STANDIN.format(repo=APT_REPO, packages=" ".join(apt_packages(job))))
        # Last: the test's own files under the machine's /tmp disappear behind it.
        sandbox.sh(f"mount --bind {tmp_source} /tmp")
        yield sandbox, job
    finally:
        sandbox.close()


def run_step(sandbox: Sandbox, env: dict[str, str], step: dict[str, Any]) -> None:
    name = step.get("name", step["run"].splitlines()[0])
    result = run_in_job(sandbox, env | {k: str(v) for k, v in (step.get("env") or {}).items()}, step["run"], name)
    assert result.returncode == 0, f"step '{name}' failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"


def test_main_workflow_steps_pass_in_the_runners_container(runner: tuple[Sandbox, dict[str, Any]]) -> None:
    """Every `run:` step passes; in place of the suite, lint's file listing works as root in the checkout."""
    sandbox, job = runner
    env = runner_env(job)
    before, after = run_steps(job)
    for step in before:
        run_step(sandbox, env, step)

    # What apt installed is the stand-ins, from the signed repository.
    installed = sandbox.sh("ls /usr/local/share/gvisor-fleet-ci")
    assert installed.split() == sorted(apt_packages(job))

    # The suite's lint tier lists the shell scripts with git as root, then shellchecks them.
    listing = lint_listing()
    script = f'files=$({listing})\n[ -n "$files" ]\necho "$files" | xargs shellcheck\necho "$files"\n'
    result = run_in_job(sandbox, env, script, "lint listing")
    assert result.returncode == 0, f"{listing} as root in the checkout failed:\n{result.stdout}\n{result.stderr}"
    assert "tests/run.sh" in result.stdout.split()

    # After the suite: the toolchain cache is saved only when the set-up changed it.
    outputs = f"{RUNNER_TEMP}/github-output"
    for step in after:
        run_step(sandbox, env, step)
    assert "changed=false" in sandbox.sh(f"cat {outputs}").split()
    built = f"{HOME}/.cache/gvisor-fleet/runsc-built-by-the-set-up"  # what the set-up adds on a cache miss
    sandbox.sh(f": > {outputs} && mkdir -p {built} && echo 1 > {built}/runsc")
    for step in after:
        run_step(sandbox, env, step)
    assert "changed=true" in sandbox.sh(f"cat {outputs}").split()


def test_lint_names_the_fix_when_git_cannot_list_the_checkout(runner: tuple[Sandbox, dict[str, Any]]) -> None:
    """Without the safe.directory step, the lint tier fails with git's reason and the fix, not shellcheck's usage."""
    sandbox, job = runner
    result = run_in_job(sandbox, runner_env(job), "SKIP_SETUP=1 sh tests/run.sh lint\n", "lint unsafe")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "dubious ownership" in output
    assert f'git config --global --add safe.directory "{WORKSPACE}"' in output
    assert "tier lint: FAILED" in output
    assert "Usage: shellcheck" not in output
