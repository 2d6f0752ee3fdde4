"""The container image every engine in the tests runs: a static busybox, imported, no registry."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

TEST_IMAGE = "gvisor-fleet.test/busybox:1"
APPLETS = ("sh", "uname", "dmesg", "cat", "head", "echo", "ls", "sleep", "true")


def make_image_tar(path: Path) -> Path:
    """A tiny root file system (static busybox) for `docker import`."""
    busybox = shutil.which("busybox")
    assert busybox
    with tarfile.open(path, "w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return path
