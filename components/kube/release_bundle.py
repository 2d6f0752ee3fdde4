"""releaseDir's folder for one arch as one compressed archive, for the copy to a machine.

The folder's three binaries are often one multi-call program under three
names; copied file by file, its bytes crossed SSH three times, which was most
of a node's set-up on an emulated machine. The archive holds each distinct
file once (the others are hard links to it), gzip-compressed. It is made once
per content (named after the digest of the folder's SHA512SUMS, which lists
every file with its digest) and kept in the cache, and the same folder always
gives the same bytes, so an unchanged folder shows no change in preview.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
from pathlib import Path

from components.gvisor.release_fetch import user_cache

SUMS = "SHA512SUMS"
KEY = "gvisor-fleet:kubernetes.kubeadm.releaseDir"


class BundleError(ValueError):
    """A folder that cannot be bundled as SHA512SUMS describes it."""


def default_cache() -> Path:
    return user_cache() / "kubeadm-bundles"


def listed_files(folder: Path) -> list[tuple[str, str]]:
    """(digest, relative path) of every file SHA512SUMS lists, sorted by path."""
    sums = folder / SUMS
    try:
        lines = sums.read_text().splitlines()
    except OSError as e:
        raise BundleError(f"{KEY}: cannot read {sums}: {e.strerror}") from None
    rows = []
    for line in lines:
        digest, _, name = line.partition("  ")
        name = name.removeprefix("*")
        if len(digest) != 128 or not name or name.startswith("/") or ".." in Path(name).parts:
            raise BundleError(f"{KEY}: {sums} has a line that is not '<sha512>  <relative path>': {line[:80]!r}")
        rows.append((digest, name))
    return sorted(rows, key=lambda row: row[1])


def bundle_name(folder: Path) -> str:
    return hashlib.sha256((folder / SUMS).read_bytes()).hexdigest()[:32] + ".tar.gz"


def bundle(folder: Path, cache: Path | None = None) -> Path:
    """The cached archive of FOLDER (made when missing): SHA512SUMS and every file it lists."""
    files = listed_files(folder)
    cache = cache or default_cache()
    out = cache / bundle_name(folder)
    if out.is_file():
        return out
    missing = [name for _, name in files if not (folder / name).is_file()]
    if missing:
        listed = ", ".join(missing)
        raise BundleError(f"{KEY}: {folder / SUMS} lists {listed}, not in the folder; make the folder again")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    try:
        with (
            tmp.open("wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            _add(tar, folder, SUMS)
            first: dict[str, str] = {}
            for digest, name in files:
                if digest in first:
                    _link(tar, name, first[digest])
                else:
                    first[digest] = name
                    _add(tar, folder, name)
        tmp.replace(out)
    except OSError as e:
        raise BundleError(f"{KEY}: cannot bundle {folder} into {out}: {e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    return info


def _add(tar: tarfile.TarFile, folder: Path, name: str) -> None:
    path = folder / name
    info = _info(name)
    stat = path.stat()
    info.size = stat.st_size
    info.mode = 0o755 if stat.st_mode & 0o111 else 0o644
    with path.open("rb") as f:
        tar.addfile(info, f)


def _link(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = _info(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    info.mode = 0o755
    tar.addfile(info)
