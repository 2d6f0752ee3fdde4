"""A local mirror laid out like gVisor's release bucket, from real binaries.

<root>/<release>/<arch>/ holds either the current layout (gvisor.tar.bz2 and
its .sha512) or the legacy one (loose runsc and containerd-shim-runsc-v1,
each with a .sha512), with `sha512sum` output exactly as upstream publishes.
Every sandboxed machine serves it at MIRROR_URL in its own network namespace.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.paths import CACHE
from tests.support.toolchain import build_gvisor

MIRROR_ROOT = CACHE / "mirror"
MIRROR_PORT = 18080
MIRROR_URL = f"http://127.0.0.1:{MIRROR_PORT}"
ARCHES = ("x86_64", "aarch64")
BINARIES = ("runsc", "containerd-shim-runsc-v1")


@dataclass(frozen=True)
class Releases:
    current: str  # archive layout, current runsc built from gVisor's go branch
    current_loose: str  # the same binaries in the legacy loose layout
    old: str  # Debian's 2022 runsc, loose layout, x86_64 only, no shim
    tampered: str  # archive whose bytes no longer match its published checksum
    missing: str = "20991231.0"


def release_name(go_version: str) -> str:
    """v0.0.0-20260527191743-a81fd9dd382e -> 20260527 (the commit's date)."""
    return go_version.split("-")[1][:8]


def _write_sha512(path: Path) -> None:
    digest = hashlib.sha512(path.read_bytes()).hexdigest()
    path.with_name(path.name + ".sha512").write_text(f"{digest}  {path.name}\n")


def archive(src: Path, dest: Path) -> None:
    """dest/gvisor.tar.bz2 (runsc and the shim from src) and its .sha512, as the bucket has them."""
    dest.mkdir(parents=True, exist_ok=True)
    tarball = dest / "gvisor.tar.bz2"
    with tarfile.open(tarball, "w:bz2", compresslevel=1) as tar:
        for name in BINARIES:
            tar.add(src / name, arcname=name)
    _write_sha512(tarball)


def _loose(files: dict[str, Path], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name, path in files.items():
        shutil.copy2(path, dest / name)
        _write_sha512(dest / name)


def build_mirror(root: Path, gvisor_go: Path, debian_runsc: Path) -> Releases:
    """Builds the mirror once per gVisor build (cached under root)."""
    day = release_name((gvisor_go / "VERSION").read_text().strip())
    releases = Releases(current=f"{day}.0", current_loose=f"{day}.1", old="20221219.0", tampered=f"{day}.9")
    stamp = hashlib.sha256(
        "".join(f"{p}:{p.stat().st_mtime_ns}" for p in sorted(gvisor_go.rglob("*"))).encode()
    ).hexdigest()[:16]
    done = root / f".complete-{stamp}"
    if done.exists():
        return releases
    # Two sessions at once (the host tier's workers) build it once: the second waits.
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            _build(root, gvisor_go, debian_runsc, releases, done)
    return releases


def _build(root: Path, gvisor_go: Path, debian_runsc: Path, releases: Releases, done: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    for arch in ARCHES:
        archive(gvisor_go / arch, root / releases.current / arch)
        _loose({b: gvisor_go / arch / b for b in BINARIES}, root / releases.current_loose / arch)
    _loose({"runsc": debian_runsc}, root / releases.old / "x86_64")

    bad = root / releases.tampered / "x86_64"
    shutil.copytree(root / releases.current / "x86_64", bad)
    with open(bad / "gvisor.tar.bz2", "ab") as f:
        f.write(b"tampered")
    done.touch()


def serve_in_sandbox(root: Path = MIRROR_ROOT, log: str = "/var/log/mirror.log") -> str:
    """The shell line that serves `root` at MIRROR_URL in the background, in the namespace it runs in
    (Python's own server: its log, one line per request, is what tests count downloads in)."""
    return f"nohup python3 -m http.server {MIRROR_PORT} --bind 127.0.0.1 --directory {root} > {log} 2>&1 &"


# Waits (5 s at most) until the mirror answers, in the namespace it runs in.
WAIT_IN_SANDBOX = f"i=0; until curl -fs {MIRROR_URL}/ >/dev/null; do i=$((i+1)); [ $i -lt 50 ]; sleep 0.1; done"


def prepare_mirror() -> Releases:
    """The mirror under CACHE, from the cached gVisor build and Debian's runsc (built on first use)."""
    return build_mirror(MIRROR_ROOT, build_gvisor(), debian_runsc())


def debian_runsc() -> Path:
    return Path(shutil.which("runsc") or "/usr/bin/runsc")
