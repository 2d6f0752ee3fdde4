"""Releases made from the mirror's current one, for the upgrade and rollback tests.

Each is a release folder as the bucket lays it out (<root>/<name>/x86_64/gvisor.tar.bz2
and its .sha512), read by the agent from a file:// baseUrl (the sandboxes see /tmp):

- `repacked`: the same runsc and shim with a note, so its bytes (and the hosts' install
  lines) differ: an upgrade that passes;
- `refusing`: its runsc is a wrapper around the real one (in gvisor-bin/, which the agent
  puts next to runsc) that refuses the subcommands named, with an error, as a broken
  release would. Refusing `create` leaves `runsc do` working (what the install step checks
  before a new release goes in) but fails every container Docker or containerd asks for;
  refusing `do` as well fails that first check.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

ARCH = "x86_64"
REFUSAL = "this test release refuses"


def _publish(folder: Path, members: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tarball = folder / "gvisor.tar.bz2"
    with tarfile.open(tarball, "w:bz2", compresslevel=1) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    digest = hashlib.sha512(tarball.read_bytes()).hexdigest()
    (folder / "gvisor.tar.bz2.sha512").write_text(f"{digest}  gvisor.tar.bz2\n")


def _binaries(mirror_release: Path) -> dict[str, bytes]:
    with tarfile.open(mirror_release / ARCH / "gvisor.tar.bz2") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def repacked(mirror_release: Path, root: Path, name: str) -> str:
    """ROOT/NAME: the binaries of MIRROR_RELEASE (a mirror's release folder) and a note."""
    _publish(root / name / ARCH, {**_binaries(mirror_release), "NOTE": f"repacked as {name}\n".encode()})
    return name


def refusing(mirror_release: Path, root: Path, name: str, refuses: tuple[str, ...]) -> str:
    """ROOT/NAME: a runsc that refuses the subcommands REFUSES, the real one beside it."""
    real = _binaries(mirror_release)
    cases = "|".join(refuses)
    wrapper = (
        "#!/bin/sh\n"
        f"for arg; do case $arg in {cases}) echo \"runsc: {REFUSAL} '$arg'\" >&2; exit 1 ;; esac; done\n"
        'exec "${0%/*}/gvisor-bin/runsc-real" "$@"\n'
    )
    members = {"runsc": wrapper.encode(), "containerd-shim-runsc-v1": real["containerd-shim-runsc-v1"]}
    members["gvisor-bin/runsc-real"] = real["runsc"]
    _publish(root / name / ARCH, members)
    return name
