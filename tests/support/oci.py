"""OCI image layout archives for `ctr images import`, written without a registry or a builder.

An image here is one or more layers (tars of a root file system, made
reproducible: fixed order, owner and time) and a config; the archive's index
names the image once per name it carries, so one archive can import under
several names. Standard library only: tests/toolchain/make-kubernetes-dir.sh
runs the command line below with the system's python3.

    python3 -m tests.support.oci --rootfs DIR --arch GOARCH [--gzip] \\
        --image OUT.tar ENTRYPOINT NAME[,NAME...] [--image ...]

writes each image with DIR as its one layer (the layer is made once and
shared, so images of the same DIR share it on the node too); images given
the same OUT go into one archive, which holds their layer once.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

GOARCHES = ("amd64", "arm64")
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass(frozen=True)
class Entry:
    """One member of a layer: `path` relative to the image's root."""

    path: str
    kind: Literal["dir", "file", "symlink"]
    mode: int = 0o755
    source: Path | None = None  # a file's content
    target: str = ""  # a symlink's


@dataclass(frozen=True)
class Layer:
    blob: bytes  # as stored (compressed or not)
    diff_id: str  # the uncompressed tar's digest, as the config lists it
    media_type: str


def layer_tar(entries: Iterable[Entry]) -> bytes:
    """The entries as a tar in the order given, owned by root, dated 0."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.path.strip("/"))
            info.mode, info.mtime = entry.mode, 0
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, entry.target
                tar.addfile(info)
            else:
                if entry.source is None:
                    raise ValueError(f"layer entry {entry.path}: a file needs its source")
                info.size = entry.source.stat().st_size
                with open(entry.source, "rb") as f:
                    tar.addfile(info, f)
    return buf.getvalue()


def tree_entries(root: Path) -> list[Entry]:
    """Every directory, file and symlink under `root`, sorted, with its mode (setuid and the
    like dropped, sticky kept for a /tmp). Other kinds of file have no place in an image."""
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory to make a layer of")
    entries: list[Entry] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                entries.append(Entry(rel, "symlink", 0o777, target=os.readlink(path)))
            elif stat.S_ISDIR(st.st_mode):
                entries.append(Entry(rel, "dir", st.st_mode & 0o1777))
            elif stat.S_ISREG(st.st_mode):
                entries.append(Entry(rel, "file", st.st_mode & 0o777, source=path))
            else:
                raise ValueError(f"{path}: only directories, files and symlinks can go in a layer")
    # Ordered by path, not as the file system lists them: the same tree makes the same tar.
    return sorted(entries, key=lambda e: e.path)


def make_layer(tar: bytes, compress: bool = False) -> Layer:
    """A layer from its tar; gzip (fixed header) makes it smaller to copy, the same every time."""
    diff_id = f"sha256:{hashlib.sha256(tar).hexdigest()}"
    if compress:
        return Layer(gzip.compress(tar, compresslevel=6, mtime=0), diff_id, LAYER_GZIP)
    return Layer(tar, diff_id, LAYER_TAR)


def _json(content: Any) -> bytes:
    return json.dumps(content, sort_keys=True, separators=(",", ":")).encode()


def _add(tar: tarfile.TarFile, member: str, data: bytes) -> None:
    info = tarfile.TarInfo(member)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def _blob(tar: tarfile.TarFile, data: bytes, media_type: str) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    _add(tar, f"blobs/sha256/{digest}", data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def image_config(goarch: str, layers: Sequence[Layer], entrypoint: Sequence[str], env: Sequence[str]) -> dict[str, Any]:
    if goarch not in GOARCHES:
        raise ValueError(f"unsupported image architecture {goarch!r} (one of {', '.join(GOARCHES)})")
    return {
        "architecture": goarch,
        "os": "linux",
        "config": {"Entrypoint": list(entrypoint), "Env": list(env), "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
    }


def write_image(
    path: Path,
    names: Sequence[str],
    goarch: str,
    layers: Sequence[Layer],
    entrypoint: Sequence[str],
    env: Sequence[str] = (PATH_ENV,),
) -> Path:
    """Writes an OCI image layout archive of one image, named once per entry of `names`
    (full references, e.g. registry.k8s.io/pause:3.10.2); the same input writes the same bytes."""
    return write_images(path, [(names, entrypoint)], goarch, layers, env)


def write_images(
    path: Path,
    images: Sequence[tuple[Sequence[str], Sequence[str]]],
    goarch: str,
    layers: Sequence[Layer],
    env: Sequence[str] = (PATH_ENV,),
) -> Path:
    """As write_image, for several images (names, entrypoint) of the same layers in one
    archive: the layers are stored once, however many images run them."""
    for names, _ in images:
        if not names:
            raise ValueError(f"{path}: an image needs at least one name")
        for name in names:
            if ":" not in name.rsplit("/", 1)[-1] or any(c.isspace() for c in name):
                raise ValueError(f"{path}: image name {name!r} is not a full reference with a tag")
    configs = [image_config(goarch, layers, entrypoint, env) for _, entrypoint in images]
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
        layer_descs = [_blob(tar, layer.blob, layer.media_type) for layer in layers]
        manifests = []
        for (names, _), config in zip(images, configs, strict=True):
            manifest = {
                "schemaVersion": 2,
                "mediaType": MANIFEST,
                "config": _blob(tar, _json(config), CONFIG),
                "layers": layer_descs,
            }
            desc = _blob(tar, _json(manifest), MANIFEST) | {"platform": {"architecture": goarch, "os": "linux"}}
            manifests += [
                desc | {"annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name}}
                for name in names
            ]
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}
        _add(tar, "index.json", _json(index))
    tmp.replace(path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.support.oci", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rootfs", type=Path, required=True, help="the directory that is the image's one layer")
    parser.add_argument("--arch", required=True, choices=GOARCHES, help="the image's architecture (Go's name)")
    parser.add_argument("--gzip", action="store_true", help="store the layer gzip-compressed")
    parser.add_argument(
        "--image",
        nargs=3,
        action="append",
        required=True,
        metavar=("OUT", "ENTRYPOINT", "NAMES"),
        help="an image to write: its archive's path (images given the same path share one archive), "
        "the program it runs, its names (comma-separated)",
    )
    args = parser.parse_args(argv)
    archives: dict[str, list[tuple[Sequence[str], Sequence[str]]]] = {}
    for out, entrypoint, names in args.image:
        archives.setdefault(out, []).append((names.split(","), [entrypoint]))
    try:
        layer = make_layer(layer_tar(tree_entries(args.rootfs)), compress=args.gzip)
        for out, images in archives.items():
            write_images(Path(out), images, args.arch, [layer])
    except (OSError, ValueError) as e:
        parser.exit(1, f"oci: {e}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
