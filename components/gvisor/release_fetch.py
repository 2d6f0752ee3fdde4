"""Fetches a gVisor release once, on the machine running Pulumi (gvisor-fleet:releaseFetch once).

The archive (`gvisor.tar.bz2`, releases since 20260831) lands in a local cache
by release and arch, checked against the release's `.sha512` (and the
configured pin) before it is kept. A dated release found in the cache, still
matching its checksum, is used without any network; `latest` and local
directories (`file://`) are looked at again each time, since they can change.

When the release server cannot be reached (DNS, connection, TLS, timeout) and
a local release directory is configured, that directory is used instead; a
server that answers that the release is not there (404) is never bypassed.
Every failure says what happened, each kind its own way.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import socket
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ARCHIVE = "gvisor.tar.bz2"
CHUNK = 1 << 20
# Kinds of failure where a server could not be reached at all: only these fall back to releaseDir.
UNREACHABLE = ("dns", "connect", "connect-timeout", "tls")


@dataclass(frozen=True)
class Limits:
    wait: float = 20.0  # seconds to connect, for the server's answer, and between two blocks (stalled)
    total: float = 900.0  # seconds for the whole archive


@dataclass(frozen=True)
class FetchedRelease:
    release: str
    arch: str
    path: Path  # the checked archive in the cache
    sha512: str
    source: str  # the URL it came from
    cached: bool = False  # True when it was in the cache already (no network used)


class ReleaseFetchError(Exception):
    """A release that could not be fetched; `kind` says why (dns, connect, tls, timeout, notfound, ...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def user_cache() -> Path:
    """~/.cache/gvisor-fleet on the machine running Pulumi (XDG_CACHE_HOME honoured)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gvisor-fleet"


def default_cache() -> Path:
    """GVISOR_FLEET_RELEASE_CACHE, else ~/.cache/gvisor-fleet/releases."""
    if env := os.environ.get("GVISOR_FLEET_RELEASE_CACHE"):
        return Path(env)
    return user_cache() / "releases"


def as_url(location: str) -> str:
    """A base URL, or a local directory (absolute or ~) as a file:// URL."""
    if "://" in location:
        return location.rstrip("/")
    return Path(os.path.expanduser(location)).absolute().as_uri()


def fetch_release(
    base_url: str,
    release: str,
    arch: str,
    cache: Path,
    pin: str | None = None,
    fallback_dir: str | None = None,
    limits: Limits = Limits(),
) -> FetchedRelease:
    """The checked archive of RELEASE for ARCH, from the cache or fetched into it."""
    try:
        return _fetch(as_url(base_url), release, arch, cache, pin, limits)
    except ReleaseFetchError as err:
        if fallback_dir is None or err.kind not in UNREACHABLE:
            raise
        try:
            return _fetch(as_url(fallback_dir), release, arch, cache, pin, limits)
        except ReleaseFetchError as second:
            raise ReleaseFetchError(second.kind, f"{err}; then, from gvisor-fleet:releaseDir: {second}") from None


def _fetch(base: str, release: str, arch: str, cache: Path, pin: str | None, limits: Limits) -> FetchedRelease:
    url = f"{base}/{release}/{arch}"
    # One entry per source too: a build filed in a local directory under a
    # release's name never stands in for that release from the bucket.
    entry = cache / release / arch / source_key(base)
    cached = _cached_digest(entry)
    moving = release == "latest" or base.startswith("file:")
    if cached and not moving and (pin is None or pin == cached):
        return FetchedRelease(release, arch, entry / ARCHIVE, cached, url, cached=True)

    published = _published_digest(url, limits)
    if pin is not None and pin != published:
        raise ReleaseFetchError(
            "checksum",
            f"{url}/{ARCHIVE}.sha512 says {published}, but gvisor-fleet:sha512.{arch} pins {pin}; nothing was fetched",
        )
    if cached != published:
        _download(f"{url}/{ARCHIVE}", entry, published, limits)
    return FetchedRelease(release, arch, entry / ARCHIVE, published, url)


def source_key(base: str) -> str:
    """A folder name for a base URL: readable, and distinct per URL."""
    parts = urllib.parse.urlsplit(base)
    host = parts.netloc.replace(":", "_") if parts.netloc else parts.scheme
    return f"{host}-{hashlib.sha256(base.encode()).hexdigest()[:12]}"


def _cached_digest(entry: Path) -> str | None:
    """The digest of a cached archive that still matches the .sha512 kept with it."""
    archive, sums = entry / ARCHIVE, entry / f"{ARCHIVE}.sha512"
    if not (archive.is_file() and sums.is_file()):
        return None
    expected = sums.read_text().split(" ", 1)[0].strip()
    return expected if _sha512_of(archive) == expected else None


def _sha512_of(path: Path) -> str:
    digest = hashlib.sha512()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _published_digest(url: str, limits: Limits) -> str:
    try:
        text = read_small(f"{url}/{ARCHIVE}.sha512", limits)
    except ReleaseFetchError as err:
        if err.kind != "notfound":
            raise
        if _exists(f"{url}/runsc.sha512", limits):
            raise ReleaseFetchError(
                "layout",
                f"{url}/ is a release in the legacy loose layout (runsc and the shim published separately); "
                f"gvisor-fleet:releaseFetch once copies releases published as {ARCHIVE} (since 20260831): "
                "pin such a release, or set releaseFetch to host",
            ) from None
        where = (
            "the directory has no such folder or file"
            if url.startswith("file:")
            else "the server answered, the release is not there"
        )
        raise ReleaseFetchError(
            "notfound",
            f"gVisor release not found at {url}/ (no {ARCHIVE}.sha512; {where}); "
            "check gvisor-fleet:release, gvisor-fleet:baseUrl and gvisor-fleet:releaseDir",
        ) from None
    digest = text.split(" ", 1)[0].strip().lower()
    if len(digest) != 128 or any(c not in "0123456789abcdef" for c in digest):
        raise ReleaseFetchError("checksum", f"{url}/{ARCHIVE}.sha512 holds no SHA-512 (it starts {text[:40]!r})")
    return digest


def _exists(url: str, limits: Limits) -> bool:
    try:
        read_small(url, limits)
    except ReleaseFetchError:
        return False
    return True


def read_small(url: str, limits: Limits) -> str:
    """A small file's text, within the limits; failures as ReleaseFetchError."""
    with _open(url, limits) as response:
        return _read(response, url, limits, time.monotonic(), None).decode(errors="replace")


def _download(url: str, entry: Path, expected: str, limits: Limits) -> None:
    """Downloads into ENTRY, hashing on the way; kept only when it matches EXPECTED."""
    entry.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha512()
    fd, partial = tempfile.mkstemp(prefix=".partial-", dir=entry)
    try:
        with os.fdopen(fd, "wb") as out, _open(url, limits) as response:

            def keep(block: bytes) -> None:
                digest.update(block)
                out.write(block)

            _read(response, url, limits, time.monotonic(), keep)
        if digest.hexdigest() != expected:
            raise ReleaseFetchError(
                "checksum",
                f"checksum mismatch for {url}: SHA-512 {digest.hexdigest()}, but its .sha512 says {expected}; "
                "nothing was kept",
            )
        # The checksum file goes last: a cache entry is complete only once it is there.
        (entry / f"{ARCHIVE}.sha512").unlink(missing_ok=True)
        os.replace(partial, entry / ARCHIVE)
        (entry / f"{ARCHIVE}.sha512").write_text(f"{expected}  {ARCHIVE}\n")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)


def _open(url: str, limits: Limits) -> http.client.HTTPResponse:
    try:
        return urllib.request.urlopen(url, timeout=limits.wait)
    except urllib.error.HTTPError as err:
        if err.code in (404, 410):
            raise ReleaseFetchError("notfound", f"{url} answered HTTP {err.code}") from None
        raise ReleaseFetchError(
            "http", f"{url} answered HTTP {err.code} {err.reason}; check gvisor-fleet:baseUrl"
        ) from None
    except urllib.error.URLError as err:
        raise _unreachable(url, err.reason, limits) from None
    except TimeoutError:
        # Connected, request sent, no answer.
        raise _timeout(url, f"the server took the connection but sent no answer within {limits.wait:.0f}s") from None
    except (ssl.SSLError, OSError, http.client.HTTPException) as err:
        raise _unreachable(url, err, limits) from None


def _read(
    response: http.client.HTTPResponse, url: str, limits: Limits, start: float, sink: Callable[[bytes], None] | None
) -> bytes:
    """Reads to the end within the limits; into SINK block by block, or returned whole."""
    blocks: list[bytes] = []
    while True:
        if time.monotonic() - start > limits.total:
            raise _timeout(url, f"the whole transfer took longer than {limits.total:.0f}s")
        try:
            # read1: what has arrived, so a server that trickles cannot hold one read forever.
            block = response.read1(CHUNK)
        except TimeoutError:
            raise _timeout(url, f"no data for {limits.wait:.0f}s (stalled)") from None
        except (ssl.SSLError, OSError, http.client.HTTPException) as err:
            raise ReleaseFetchError("broken", f"the connection broke off while fetching {url} ({err})") from None
        if not block:
            return b"".join(blocks)
        if sink is None:
            blocks.append(block)
        else:
            sink(block)


def _timeout(url: str, what: str) -> ReleaseFetchError:
    return ReleaseFetchError(
        "timeout", f"download of {url} stopped at a limit: {what}; check the server (gvisor-fleet:baseUrl)"
    )


def _unreachable(url: str, reason: object, limits: Limits) -> ReleaseFetchError:
    """What kept the machine running Pulumi from a server, told apart by kind."""
    server = urllib.parse.urlsplit(url).netloc
    fix = (
        "check this machine's network and gvisor-fleet:baseUrl, "
        "or set gvisor-fleet:releaseDir to a local release directory"
    )
    if isinstance(reason, FileNotFoundError | NotADirectoryError):
        return ReleaseFetchError("notfound", f"{url} does not exist")
    if isinstance(reason, socket.gaierror):
        return ReleaseFetchError("dns", f"cannot resolve {server} (DNS) for {url}: {reason.strerror}; {fix}")
    if isinstance(reason, ssl.SSLError | ssl.CertificateError):
        return ReleaseFetchError(
            "tls", f"TLS with {server} failed for {url} (handshake or certificate): {reason}; {fix}"
        )
    if isinstance(reason, TimeoutError):
        return ReleaseFetchError(
            "connect-timeout",
            f"cannot connect to {server} for {url}: no answer within {limits.wait:.0f}s (timeout); {fix}",
        )
    if isinstance(reason, OSError) and reason.errno in (
        errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNRESET, errno.EADDRNOTAVAIL,
    ):  # fmt: skip
        return ReleaseFetchError("connect", f"cannot connect to {server} for {url}: {reason.strerror or reason}; {fix}")
    return ReleaseFetchError("other", f"cannot fetch {url}: {reason}; {fix}")
