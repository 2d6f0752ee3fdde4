"""The README's commands, with the real Pulumi CLI, leave the checkout as git has it.

Each test runs a README.md block marked `<!-- run: tests/e2e/test_checkout_clean.py ... -->`
in a git copy of the repository's tracked files, with a home (for Pulumi's
local backend too), a Pulumi home and no passphrase of its own (the engine
and plugins are the set-up's):

- the main job: its stack commands as written (the set-up and the release
  directory are left out: this tier's set-up ran them), with `pulumi preview`
  for `pulumi up --yes`, which would boot the VMs; both evaluate the program
  with the same stack config. Twice, as a newcomer runs it again. The stack
  file is shipped in the form Pulumi writes it, with the `encryptionsalt` of
  the passphrase tests/toolchain/pulumi-env.sh sets, so `git status` stays
  empty. The VM images and the release are stand-ins in the test's home:
  a preview neither boots nor copies anything.
- the quick start on your own hosts, verbatim, with a stand-in login key: its
  preview passes and the only change to the checkout is the user's new stack file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from components.gvisor.release_fetch import ARCHIVE, as_url, source_key
from tests.support.doc_blocks import marked
from tests.support.paths import REPO
from tests.support.toolchain import pulumi_env

ME = "tests/e2e/test_checkout_clean.py"
RELEASE = "20261116.0"
BUCKET = "https://storage.googleapis.com/gvisor/releases/release"

pytestmark = pytest.mark.e2e


def readme_block(word: str) -> str:
    (block,) = [b for b in marked("README.md", ME) if word in b.body]
    return block.body


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def checkout_copy(dest: Path) -> Path:
    """The tracked files as they are now, committed in a repository of their own."""
    for name in git(REPO, "ls-files", "-z").split("\0"):
        src = REPO / name
        if name and src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "-qm", "checkout")
    # A real checkout's .venv is a folder, which .gitignore covers; this one is a link to it.
    (dest / ".venv").symlink_to(REPO / ".venv")
    with (dest / ".git" / "info" / "exclude").open("a") as exclude:
        exclude.write(".venv\n")
    return dest


def environment(tmp: Path, engine: Path) -> dict[str, str]:
    """A fresh user: own home, Pulumi home and no passphrase set; the set-up's engine and plugins."""
    built = pulumi_env()
    home, pulumi_home = tmp / "home", tmp / "pulumi-home"
    pulumi_home.mkdir(parents=True)
    (pulumi_home / "plugins").symlink_to(Path(built["PULUMI_HOME"]) / "plugins")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "GVISOR_FLEET_"))}
    env.update(
        HOME=str(home),
        PULUMI_HOME=str(pulumi_home),
        # pulumi-env.sh finds the engine under the cache; the test's home has none.
        GVISOR_FLEET_CACHE=str(engine.parents[1]),
        GVISOR_FLEET_RELEASE_CACHE=str(tmp / "release-cache"),
        PATH=f"{engine}:{built['PATH']}",
        NO_COLOR="1",
    )
    return env


def stand_ins(home: Path, release_cache: Path) -> None:
    """What the set-up builds for the local stack: VM images and the release, as empty stand-ins."""
    for arch in ("x86_64", "aarch64"):
        images = home / ".cache/gvisor-fleet/vm-images/debian12-r3" / arch
        images.mkdir(parents=True)
        for name in ("disk.qcow2", "vmlinuz", "initrd.img"):
            (images / name).write_bytes(b"stand-in")
        entry = release_cache / RELEASE / arch / source_key(as_url(BUCKET))
        entry.mkdir(parents=True)
        data = f"stand-in release for {arch}".encode()
        (entry / ARCHIVE).write_bytes(data)
        (entry / f"{ARCHIVE}.sha512").write_text(f"{hashlib.sha512(data).hexdigest()}  {ARCHIVE}\n")
    (home / ".cache/gvisor-fleet/local-releases").mkdir(parents=True)
    for goarch in ("amd64", "arm64"):  # the local Kubernetes directory, copied only by `up`
        kube = home / ".cache/gvisor-fleet/local-kubernetes/v1.37.2" / goarch
        kube.mkdir(parents=True)
        (kube / "SHA512SUMS").write_text("")


def own_passwd(tmp: Path, home: str) -> Path:
    """/etc/passwd with this user's home moved to HOME: `pulumi login --local` keeps its state
    under the home the user database names (file://~), not under $HOME."""
    uid = str(os.getuid())
    lines = []
    for line in Path("/etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if len(fields) == 7 and fields[2] == uid:
            fields[5] = home
        lines.append(":".join(fields))
    path = tmp / "passwd"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """SCRIPT as `sh -e` runs it, in a mount namespace where the user's home is the test's."""
    passwd = own_passwd(cwd.parent, env["HOME"])
    argv = ["unshare", "--mount", "--propagation", "private", "--"]
    argv += ["sh", "-c", 'mount --bind "$1" /etc/passwd && exec sh -ec "$2"', "sh", str(passwd), script]
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert result.returncode == 0, f"{script}\nexit {result.returncode}\n{output}"
    return result


def test_the_main_job_leaves_the_checkout_clean(engine: Path, tmp_path: Path):
    steps = [s.strip() for s in readme_block("stack select --create local").split(" && ")]
    assert steps[-1] == "pulumi up --yes", steps
    ours = [s for s in steps[:-1] if not s.startswith("sh tests/")]
    assert ours[:1] == [". tests/toolchain/pulumi-env.sh"], "the passphrase comes from pulumi-env.sh"
    script = " && ".join([*ours, "pulumi preview --non-interactive"])
    project = checkout_copy(tmp_path / "project")
    env = environment(tmp_path, engine)
    stand_ins(Path(env["HOME"]), tmp_path / "release-cache")
    for attempt in ("first", "second"):
        result = run(script, project, env)
        assert "vm-amd64" in result.stdout and "vm-arm64" in result.stdout, result.stdout[-2000:]
        status = git(project, "status", "--porcelain")
        assert status == "", f"{attempt} run changed the checkout:\n{status}\n{git(project, 'diff')}"


def test_the_quick_start_previews_and_adds_only_the_users_stack(engine: Path, tmp_path: Path):
    project = checkout_copy(tmp_path / "project")
    env = environment(tmp_path, engine)
    ssh = Path(env["HOME"]) / ".ssh"
    ssh.mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / "id_ed25519")], check=True)
    result = run(readme_block("stack init"), project, env)
    for machine in ("edge-amd64", "edge-arm64"):
        assert f"{machine}-install" in result.stdout, result.stdout[-2000:]
    assert git(project, "status", "--porcelain") == "?? stacks/Pulumi.mine.yaml\n"
