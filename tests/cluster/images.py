"""Container images made on the spot (no registry is reachable): OCI archives for `ctr images import`.

Both images hold one layer, a static busybox with a few applets. The pause
(sandbox) image only differs in its entrypoint: a shell that sleeps until
told to stop, which is all a pod sandbox's first process has to do.
"""

from __future__ import annotations

import platform
import shutil
from pathlib import Path

from components.kube.manifests import KUBE_ARCH
from tests.support import oci

APPLETS = ("sh", "uname", "dmesg", "cat", "head", "echo", "ls", "sleep", "true", "id", "hostname")
PAUSE_SCRIPT = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"


def _busybox_layer(busybox: Path | None) -> oci.Layer:
    if busybox is None:
        found = shutil.which("busybox")
        if found is None:
            raise RuntimeError("the cluster tier needs a static busybox (Debian package busybox-static)")
        busybox = Path(found)
    entries = [
        oci.Entry(directory, "dir", 0o1777 if directory == "tmp" else 0o755)
        for directory in ("bin", "tmp", "proc", "dev", "sys", "etc")
    ]
    entries.append(oci.Entry("bin/busybox", "file", 0o755, source=busybox))
    entries += [oci.Entry(f"bin/{applet}", "symlink", 0o777, target="busybox") for applet in APPLETS]
    return oci.make_layer(oci.layer_tar(entries))


def oci_archive(
    path: Path, name: str, entrypoint: list[str], arch: str | None = None, busybox: Path | None = None
) -> Path:
    """Writes an OCI image layout archive named `name` (e.g. gvisor-fleet.test/busybox:1).

    `arch` (uname -m; default this machine's) and `busybox` (a static busybox
    for that arch; default the machine's) make the image of another node.
    """
    goarch = KUBE_ARCH[arch or platform.machine()]
    return oci.write_image(path, [name], goarch, [_busybox_layer(busybox)], entrypoint, env=["PATH=/bin"])


def sample_image(path: Path, name: str, arch: str | None = None, busybox: Path | None = None) -> Path:
    return oci_archive(path, name, ["/bin/sh"], arch, busybox)


def pause_image(path: Path, name: str, arch: str | None = None, busybox: Path | None = None) -> Path:
    return oci_archive(path, name, ["/bin/sh", "-c", PAUSE_SCRIPT], arch, busybox)
