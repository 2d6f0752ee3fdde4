"""Container images made on the spot (no registry is reachable): OCI archives for `ctr images import`.

Both images hold one layer, a static busybox with a few applets. The pause
(sandbox) image only differs in its entrypoint: a shell that sleeps until
told to stop, which is all a pod sandbox's first process has to do.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import shutil
import tarfile
from pathlib import Path
from typing import Any

from components.kube.manifests import KUBE_ARCH

APPLETS = ("sh", "uname", "dmesg", "cat", "head", "echo", "ls", "sleep", "true", "id", "hostname")
PAUSE_SCRIPT = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"


def _busybox_layer(busybox: Path | None) -> bytes:
    if busybox is None:
        found = shutil.which("busybox")
        if found is None:
            raise RuntimeError("the cluster tier needs a static busybox (Debian package busybox-static)")
        busybox = Path(found)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("bin", "tmp", "proc", "dev", "sys", "etc"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        info = tar.gettarinfo(busybox, arcname="bin/busybox")
        info.mode, info.uid, info.gid, info.uname, info.gname, info.mtime = 0o755, 0, 0, "", "", 0
        with open(busybox, "rb") as f:
            tar.addfile(info, f)
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return buf.getvalue()


def _blob(tar: tarfile.TarFile, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    return {"digest": f"sha256:{digest}", "size": len(data)}


def oci_archive(
    path: Path, name: str, entrypoint: list[str], arch: str | None = None, busybox: Path | None = None
) -> Path:
    """Writes an OCI image layout archive named `name` (e.g. gvisor-fleet.test/busybox:1).

    `arch` (uname -m; default this machine's) and `busybox` (a static busybox
    for that arch; default the machine's) make the image of another node.
    """
    arch = KUBE_ARCH[arch or platform.machine()]
    layer = _busybox_layer(busybox)
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}"]},
    }
    with tarfile.open(path, "w") as tar:
        layer_desc = _blob(tar, layer) | {"mediaType": "application/vnd.oci.image.layer.v1.tar"}
        config_desc = _blob(tar, json.dumps(config).encode()) | {
            "mediaType": "application/vnd.oci.image.config.v1+json"
        }
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": config_desc, "layers": [layer_desc]}  # fmt: skip
        manifest_desc = _blob(tar, json.dumps(manifest).encode()) | {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name},
        }
        for member, content in (
            ("oci-layout", {"imageLayoutVersion": "1.0.0"}),
            ("index.json", {"schemaVersion": 2, "manifests": [manifest_desc]}),
        ):
            data = json.dumps(content).encode()
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def sample_image(path: Path, name: str, arch: str | None = None, busybox: Path | None = None) -> Path:
    return oci_archive(path, name, ["/bin/sh"], arch, busybox)


def pause_image(path: Path, name: str, arch: str | None = None, busybox: Path | None = None) -> Path:
    return oci_archive(path, name, ["/bin/sh", "-c", PAUSE_SCRIPT], arch, busybox)
