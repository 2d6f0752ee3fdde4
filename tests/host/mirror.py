"""A local mirror laid out like gVisor's release bucket, from real binaries.

<root>/<release>/<arch>/ holds either the current layout (gvisor.tar.bz2 and
its .sha512) or the legacy one (loose runsc and containerd-shim-runsc-v1,
each with a .sha512), with `sha512sum` output exactly as upstream publishes.
Run as a script, it serves that mirror badly on purpose (see serve_stalling).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tarfile
import time
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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


def _archive(src: Path, dest: Path) -> None:
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
    if root.exists():
        shutil.rmtree(root)
    for arch in ARCHES:
        _archive(gvisor_go / arch, root / releases.current / arch)
        _loose({b: gvisor_go / arch / b for b in BINARIES}, root / releases.current_loose / arch)
    _loose({"runsc": debian_runsc}, root / releases.old / "x86_64")

    bad = root / releases.tampered / "x86_64"
    shutil.copytree(root / releases.current / "x86_64", bad)
    with open(bad / "gvisor.tar.bz2", "ab") as f:
        f.write(b"tampered")
    done.touch()
    return releases


class _StallingHandler(SimpleHTTPRequestHandler):
    """'silent': takes the request and never answers; 'mid-body': serves the
    mirror, but sends only the first 64 KiB of any archive, then nothing."""

    mode = "silent"

    def do_GET(self) -> None:
        if self.mode == "silent":
            time.sleep(3600)
            return
        if self.path.endswith(".tar.bz2"):
            data = Path(self.translate_path(self.path)).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:65536])
            self.wfile.flush()
            time.sleep(3600)
            return
        super().do_GET()


def serve_stalling(root: Path, port: int, mode: str) -> None:
    """A mirror that hangs (run inside a sandbox: python3 mirror.py ROOT PORT MODE)."""
    handler = partial(type("Handler", (_StallingHandler,), {"mode": mode}), directory=str(root))
    ThreadingHTTPServer(("127.0.0.1", port), handler).serve_forever()


if __name__ == "__main__":
    serve_stalling(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
