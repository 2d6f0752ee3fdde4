"""An interrupted VM image build leaves no mount or half-built folder behind.

mmdebstrap mounts /proc, /sys, /dev/pts, ... inside the root it builds; a
build killed half-way used to leave them mounted, and the next run's
`rm -rf` of the build folder then reached through them. The image builder
(tests/toolchain/build-vm-images.sh) runs here for real, with a stand-in for
mmdebstrap (named as one: a real root file system takes minutes and a Debian
mirror) that mounts what the real one mounts and then waits to be killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.paths import CACHE, REPO
from tests.support.wait import wait_until

pytestmark = pytest.mark.host

BUILDER = REPO / "tests" / "toolchain" / "build-vm-images.sh"

# Stand-in mmdebstrap: bind-mounts $OUTSIDE over <root>/proc (a tree the
# removal must not reach into) and a tmpfs on <root>/dev/pts, then waits, or
# fails at once when STAND_IN_FAIL is set. With STAND_IN_IGNORE_TERM it
# ignores TERM, as the real one does until its current step ends.
STAND_IN = """#!/bin/sh
set -eu
[ -z "${STAND_IN_FAIL:-}" ] || { echo "mmdebstrap (stand-in): failing as asked" >&2; exit 1; }
[ -z "${STAND_IN_IGNORE_TERM:-}" ] || trap '' TERM
for a in "$@"; do case $a in */rootfs) root=$a ;; esac; done
mkdir -p "$root/proc" "$root/dev/pts"
mount --bind "$OUTSIDE" "$root/proc"
mount -t tmpfs stand-in "$root/dev/pts"
touch "$root/../mounted"
exec sleep 600
"""


def mounts_under(path: Path) -> list[str]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in lines if line.split()[4].startswith(f"{path}/")]


@pytest.fixture
def builder_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    cache = tmp_path / "cache"
    cache.mkdir()
    # containerd for the image comes from the real cache (built by set-up).
    for built in CACHE.glob("containerd-v*"):
        if not built.name.endswith("-module"):
            (cache / built.name).symlink_to(built)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mmdebstrap").write_text(STAND_IN)
    (bin_dir / "mmdebstrap").chmod(0o755)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("not the build's to remove\n")
    yield {
        **os.environ,
        "GVISOR_FLEET_CACHE": str(cache),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "OUTSIDE": str(outside),
    }
    # Whatever a failed test left mounted goes, so it cannot leak.
    for mount in sorted(mounts_under(tmp_path), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False)


def start_build(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    build = Path(env["GVISOR_FLEET_CACHE"]) / "vm-images"
    proc = subprocess.Popen(["sh", str(BUILDER), "x86_64"], env=env, start_new_session=True)

    def mounted() -> list[Path]:
        assert proc.poll() is None, f"the builder exited early with {proc.returncode}"
        return list(build.glob("*/.build-x86_64/mounted"))

    assert wait_until(mounted, 120, 0.2), "the stand-in mmdebstrap never mounted"
    return proc, next(build.glob("*/.build-x86_64"))


def assert_clean(work: Path, env: dict[str, str]) -> None:
    assert mounts_under(work) == [], "mounts left in the build folder"
    assert not work.exists(), "a half-built folder was left"
    assert (Path(env["OUTSIDE"]) / "keep").exists(), "removing the build reached through a mount"


def test_a_terminated_build_unmounts_and_removes_its_folder(builder_env: dict[str, str]):
    proc, work = start_build(builder_env)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    assert_clean(work, builder_env)


def test_the_next_build_cleans_up_after_a_sigkilled_one(builder_env: dict[str, str]):
    proc, work = start_build(builder_env)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert len(mounts_under(work)) == 2, "SIGKILL should leave the stand-in's mounts (nothing can trap it)"
    failing = {**builder_env, "STAND_IN_FAIL": "1"}
    assert subprocess.run(["sh", str(BUILDER), "x86_64"], env=failing, capture_output=True).returncode != 0
    assert_clean(work, builder_env)


def test_a_term_to_the_builder_alone_stops_mmdebstrap_at_once(builder_env: dict[str, str]):
    """A TERM to the builder alone, not its process group (a plain `kill`), stops mmdebstrap too."""
    proc, work = start_build({**builder_env, "STAND_IN_IGNORE_TERM": "1"})
    stand_in = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert stand_in, "no stand-in mmdebstrap under the builder"
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert_clean(work, builder_env)
    assert not Path(f"/proc/{stand_in[0]}").exists(), "mmdebstrap outlived the builder"
    lock = next(Path(builder_env["GVISOR_FLEET_CACHE"]).glob("vm-images/*/.lock"))
    assert subprocess.run(["flock", "-n", str(lock), "true"]).returncode == 0, "the builder's lock is still held"
