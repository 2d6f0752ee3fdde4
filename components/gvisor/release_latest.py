"""`gvisor-fleet:release latest`, resolved on the machine running Pulumi to a dated release.

Each run (preview included) lists the releases under baseUrl and takes the
newest dated one (`YYYYMMDD` or `YYYYMMDD.N`, ordered by date, then N) that
has every architecture of the fleet. The hosts then install that release by
name, whatever the fetch mode, so the preview shows it and a newly published
release shows as an update of the install steps.

Why a listing, not `<baseUrl>/latest/`: `latest` names no release (its
files carry no date), and a host reading it later may get a newer one than
the preview showed. Two listings are understood, tried in this order:

- a bucket listing, as Google Cloud Storage's XML API (and S3-compatible
  stores) answer `GET https://HOST/BUCKET?prefix=PATH/&delimiter=/`: a
  `ListBucketResult` whose `CommonPrefixes` are the release folders, in pages
  (`IsTruncated`, `NextMarker`). The gVisor bucket answers it anonymously;
  the XML API rather than the JSON one (`/storage/v1/b/...`) because
  S3-compatible mirrors speak it too.
- a directory index of `<baseUrl>/` (nginx, Apache, `python -m http.server`):
  its links name the release folders.

A `file://` baseUrl (or releaseDir) is listed as a directory.
"""

from __future__ import annotations

import os
import re
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import pulumi

from components.gvisor.release_fetch import (
    ARCHIVE,
    UNREACHABLE,
    Limits,
    ReleaseFetchError,
    as_url,
    read_small,
)
from components.gvisor.settings import GvisorSettings
from components.settings import Settings

LATEST = "latest"
DATED = re.compile(r"^(\d{8})(?:\.(\d+))?$")
# Releases looked at, newest first, for one that has every arch (a dated
# folder can lack one, gvisor#12167); more would mean a broken mirror.
PROBE = 8
# Pages of a bucket listing followed at most (1,000 entries each).
MAX_PAGES = 20
# Each request gets `wait`; the whole resolution `total`.
LIMITS = Limits(total=120.0)


@dataclass(frozen=True)
class Resolved:
    release: str
    source: str  # the URL listed
    arches: tuple[str, ...]


def release_key(name: str) -> tuple[int, int, int]:
    """Sort key of a dated release: date, then point; `YYYYMMDD` just before `YYYYMMDD.0`."""
    m = DATED.match(name)
    if not m:
        return (-1, -1, -1)  # not dated: before any release
    return (int(m.group(1)), int(m.group(2) or 0), 1 if m.group(2) is not None else 0)


def newest_first(names: Iterable[str]) -> list[str]:
    """The dated release names among NAMES, newest first, each once."""
    return sorted({n for n in names if DATED.match(n)}, key=release_key, reverse=True)


def bucket_listing_url(base: str, marker: str | None = None) -> str | None:
    """The bucket-listing URL for a base `SCHEME://HOST/BUCKET[/PATH]`, or None when it names no bucket."""
    parts = urllib.parse.urlsplit(base)
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        return None
    bucket, path = segments[0], "/".join(segments[1:])
    query = {"prefix": f"{path}/" if path else "", "delimiter": "/"}
    if marker:
        query["marker"] = marker
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"/{bucket}", urllib.parse.urlencode(query), ""))


def _local(tag: str) -> str:
    """A tag without its namespace: GCS answers in doc.s3.amazonaws.com's, S3 in s3.amazonaws.com's."""
    return tag.rsplit("}", 1)[-1]


def parse_bucket_listing(text: str) -> tuple[list[str], str | None] | None:
    """(folder names, next marker) from a ListBucketResult, or None when TEXT is not one."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return None
    if _local(root.tag) != "ListBucketResult":
        return None
    names, truncated, marker = [], False, None
    for node in root:
        tag = _local(node.tag)
        if tag == "CommonPrefixes":
            for prefix in node:
                # "releases/release/20261116.0/" -> "20261116.0"
                name = (prefix.text or "").rstrip("/").rsplit("/", 1)[-1]
                if _local(prefix.tag) == "Prefix" and name:
                    names.append(name)
        elif tag == "IsTruncated":
            truncated = (node.text or "").strip().lower() == "true"
        elif tag == "NextMarker":
            marker = (node.text or "").strip() or None
    return names, marker if truncated else None


_HREF = re.compile(r"""href\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


def parse_index(html: str) -> list[str]:
    """The folder names a directory index links to (the last path segment of each link)."""
    names = []
    for href in _HREF.findall(html):
        path = urllib.parse.urlsplit(urllib.parse.unquote(href)).path
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if name:
            names.append(name)
    return names


class _Clock:
    """The resolution's overall bound: each request has limits.wait, all of them limits.total."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.start = time.monotonic()

    def read(self, url: str) -> str:
        if time.monotonic() - self.start > self.limits.total:
            raise ReleaseFetchError(
                "timeout", f"resolving '{LATEST}' took longer than {self.limits.total:.0f}s (stopped before {url})"
            )
        return read_small(url, self.limits)


def list_releases(base: str, clock: _Clock) -> tuple[list[str], str]:
    """(release folder names, the URL that listed them) under base (a URL)."""
    if base.startswith("file:"):
        folder = Path(urllib.parse.unquote(urllib.parse.urlsplit(base).path))
        if not folder.is_dir():
            raise ReleaseFetchError("notfound", f"{base} is not a directory")
        return sorted(os.listdir(folder)), base
    first = bucket_listing_url(base)
    if first is not None:
        try:
            page = parse_bucket_listing(clock.read(first))
        except ReleaseFetchError as err:
            if err.kind != "notfound":
                raise
            page = None
        if page is not None:
            names, marker = page
            for _ in range(MAX_PAGES):
                if marker is None:
                    break
                more = parse_bucket_listing(clock.read(bucket_listing_url(base, marker) or first))
                if more is None:
                    break
                names += more[0]
                marker = more[1]
            return names, first
    index = f"{base}/"
    try:
        return parse_index(clock.read(index)), index
    except ReleaseFetchError as err:
        if err.kind != "notfound":
            raise
        tried = f"a bucket listing ({first}) nor " if first else ""
        raise ReleaseFetchError(
            "notfound",
            f"{base} offers neither {tried}a directory index ({index} answered not found), so '{LATEST}' cannot "
            "be resolved there; pin a dated release (gvisor-fleet:release), or serve a listing (docs/operations.md)",
        ) from None


def _has_arch(base: str, release: str, arch: str, clock: _Clock) -> bool:
    """The release's folder for ARCH holds a published checksum (archive, or legacy loose runsc)."""
    for name in (f"{ARCHIVE}.sha512", "runsc.sha512"):
        try:
            clock.read(f"{base}/{release}/{arch}/{name}")
        except ReleaseFetchError as err:
            if err.kind != "notfound":
                raise
            continue
        return True
    return False


def resolve_at(base: str, arches: Sequence[str], limits: Limits) -> Resolved:
    """The newest dated release under BASE (a URL) that has every arch in ARCHES."""
    clock = _Clock(limits)
    names, source = list_releases(base, clock)
    candidates = newest_first(names)
    if not candidates:
        raise ReleaseFetchError(
            "notfound",
            f"{source} lists no dated release (YYYYMMDD or YYYYMMDD.N folders), so '{LATEST}' cannot be resolved; "
            "check gvisor-fleet:baseUrl, or pin a dated release (gvisor-fleet:release)",
        )
    for release in candidates[:PROBE]:
        if all(_has_arch(base, release, arch, clock) for arch in arches):
            return Resolved(release, source, tuple(arches))
    looked = ", ".join(candidates[:PROBE])
    raise ReleaseFetchError(
        "notfound",
        f"none of the newest releases listed at {source} ({looked}) has {' and '.join(arches)} "
        f"(no {ARCHIVE}.sha512 or runsc.sha512 in <release>/<arch>/); pin a dated release (gvisor-fleet:release)",
    )


@cache
def resolve_latest(
    base_url: str, arches: tuple[str, ...], fallback_dir: str | None = None, limits: Limits = LIMITS
) -> Resolved:
    """`latest` as a dated release, once per program run.

    FALLBACK_DIR (gvisor-fleet:releaseDir, releaseFetch once) is listed instead
    when baseUrl cannot be reached, as fetches do; a server that answers is
    never bypassed.
    """
    try:
        return resolve_at(as_url(base_url), arches, limits)
    except ReleaseFetchError as err:
        if fallback_dir is None or err.kind not in UNREACHABLE:
            raise
        try:
            return resolve_at(as_url(fallback_dir), arches, limits)
        except ReleaseFetchError as second:
            raise ReleaseFetchError(second.kind, f"{err}; then, from gvisor-fleet:releaseDir: {second}") from None


def fleet_arches(arches: Iterable[str]) -> tuple[str, ...]:
    """The arches a release must have: those named, both when any machine's is detected at run time."""
    known = {"x86_64", "aarch64"}
    named = set(arches)
    return tuple(sorted(known if named - known else named))


def resolve_release(gv: GvisorSettings, arches: Iterable[str]) -> GvisorSettings:
    """GV with `latest` replaced by the dated release it is now; anything else unchanged.

    Raises ReleaseFetchError (its message says why: unreachable, not found, ...).
    """
    wanted = fleet_arches(arches)
    if gv.release != LATEST or not wanted:
        return gv
    fallback = gv.release_dir if gv.release_fetch == "once" else None
    resolved = resolve_latest(gv.base_url, wanted, fallback)
    return replace(gv, release=resolved.release, resolved_from=LATEST)


def resolve_for_run(settings: Settings) -> Settings:
    """The stack's settings with `latest` resolved (logged), or a RunError saying why it could not be."""
    gv = settings.gvisor
    try:
        resolved = resolve_release(gv, (m.arch for m in settings.machines))
    except ReleaseFetchError as err:
        raise pulumi.RunError(
            f"gvisor-fleet:release latest: cannot resolve it to a dated release ({err.kind}): {err}"
        ) from None
    if resolved is gv:
        return settings
    pulumi.log.info(f"gvisor-fleet:release latest is {resolved.release} now (newest dated release at {gv.base_url})")
    return replace(settings, gvisor=resolved)
