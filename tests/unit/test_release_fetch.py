"""The fetch on the machine running Pulumi (releaseFetch once): cache, checks, and
what each kind of failure says, against real loopback servers and directories."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import pytest

from components.gvisor.release_fetch import Limits, ReleaseFetchError, fetch_release
from tests.support.loopback import Server

RELEASE = "20261116.0"
ARCH = "x86_64"
FAST = Limits(wait=2, total=10)


def publish(root: Path, release: str = RELEASE, data: bytes = b"archive bytes", sums: bytes | None = None) -> str:
    """A release laid out like the bucket; returns the archive's SHA-512."""
    d = root / release / ARCH
    d.mkdir(parents=True, exist_ok=True)
    (d / "gvisor.tar.bz2").write_bytes(data)
    digest = hashlib.sha512(data if sums is None else sums).hexdigest()
    (d / "gvisor.tar.bz2.sha512").write_text(f"{digest}  gvisor.tar.bz2\n")
    return digest


class Silent(SimpleHTTPRequestHandler):
    """Takes the request and never answers."""

    def do_GET(self) -> None:
        time.sleep(30)


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[Path, Server]]:
    root = tmp_path / "mirror"
    root.mkdir()
    server = Server(root)
    yield root, server
    server.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again once this returns


@contextmanager
def unanswered_port() -> Iterator[int]:
    """A loopback port whose connects are never answered: a listener with a full
    accept queue, to which Linux drops new SYNs (no reset while
    net.ipv4.tcp_abort_on_overflow is 0, the default), as a dropping firewall would."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        while True:
            if len(fillers) == 8:
                pytest.fail("the accept queue never filled: is net.ipv4.tcp_abort_on_overflow set?")
            filler = socket.socket()
            filler.settimeout(1)
            fillers.append(filler)
            try:
                filler.connect(("127.0.0.1", port))
            except TimeoutError:
                break
        yield port
    finally:
        for s in [*fillers, listener]:
            s.close()


def fetch(base: str, cache: Path, **kw: object) -> object:
    return fetch_release(base, kw.pop("release", RELEASE), ARCH, cache, limits=FAST, **kw)  # type: ignore[arg-type]


def failure(base: str, cache: Path, **kw: object) -> ReleaseFetchError:
    with pytest.raises(ReleaseFetchError) as err:
        fetch(base, cache, **kw)
    return err.value


def test_fetched_once_then_served_from_the_cache_without_any_request(mirror, tmp_path: Path):
    root, server = mirror
    digest = publish(root)
    first = fetch_release(server.url, RELEASE, ARCH, tmp_path / "cache", limits=FAST)
    assert first.sha512 == digest and first.path.read_bytes() == b"archive bytes"
    assert first.path.parent.parent == tmp_path / "cache" / RELEASE / ARCH and not first.cached
    asked = len(server.requests)
    server.close()  # the bucket is gone: a dated release in the cache needs nothing from it
    again = fetch_release(server.url, RELEASE, ARCH, tmp_path / "cache", limits=FAST)
    assert (again.path, again.sha512, again.cached) == (first.path, first.sha512, True)
    assert len(server.requests) == asked


def test_a_damaged_cache_entry_is_fetched_again(mirror, tmp_path: Path):
    root, server = mirror
    publish(root)
    first = fetch_release(server.url, RELEASE, ARCH, tmp_path / "cache", limits=FAST)
    first.path.write_bytes(b"bit rot")
    again = fetch_release(server.url, RELEASE, ARCH, tmp_path / "cache", limits=FAST)
    assert again.path.read_bytes() == b"archive bytes"
    assert f"/{RELEASE}/{ARCH}/gvisor.tar.bz2" in server.requests[-1]


def test_latest_is_looked_at_again_and_a_new_one_replaces_the_cached(mirror, tmp_path: Path):
    root, server = mirror
    publish(root, "latest", b"one")
    assert fetch(server.url, tmp_path, release="latest").path.read_bytes() == b"one"  # type: ignore[attr-defined]
    publish(root, "latest", b"two")
    assert fetch(server.url, tmp_path, release="latest").path.read_bytes() == b"two"  # type: ignore[attr-defined]


def test_a_bad_download_is_not_kept(mirror, tmp_path: Path):
    root, server = mirror
    publish(root, data=b"tampered", sums=b"archive bytes")
    err = failure(server.url, tmp_path)
    assert err.kind == "checksum" and "checksum mismatch for" in str(err) and "nothing was kept" in str(err)
    assert not [p for p in (tmp_path / RELEASE / ARCH).rglob("*") if p.is_file()], "a bad archive stayed in the cache"


def test_the_pin_is_checked_before_anything_is_downloaded(mirror, tmp_path: Path):
    root, server = mirror
    publish(root)
    err = failure(server.url, tmp_path, pin="0" * 128)
    assert err.kind == "checksum" and f"gvisor-fleet:sha512.{ARCH} pins {'0' * 128}" in str(err)
    assert not any(p.endswith("gvisor.tar.bz2") for p in server.requests)


def test_a_pinned_release_in_the_cache_needs_no_network(mirror, tmp_path: Path):
    root, server = mirror
    digest = publish(root)
    fetch(server.url, tmp_path, pin=digest)
    server.close()
    assert fetch(server.url, tmp_path, pin=digest).sha512 == digest  # type: ignore[attr-defined]


def test_a_local_release_directory_works_as_a_base(tmp_path: Path):
    digest = publish(tmp_path / "dir")
    assert fetch(str(tmp_path / "dir"), tmp_path / "cache").sha512 == digest  # type: ignore[attr-defined]
    # Rebuilt in place: a local directory is looked at again each time.
    digest = publish(tmp_path / "dir", data=b"rebuilt")
    assert fetch(f"file://{tmp_path / 'dir'}", tmp_path / "cache").sha512 == digest  # type: ignore[attr-defined]


def test_a_legacy_loose_release_is_named(mirror, tmp_path: Path):
    root, server = mirror
    (root / RELEASE / ARCH).mkdir(parents=True)
    (root / RELEASE / ARCH / "runsc.sha512").write_text(f"{'a' * 128}  runsc\n")
    err = failure(server.url, tmp_path)
    assert err.kind == "layout" and "legacy loose layout" in str(err) and "releaseFetch" in str(err)


# Each way of not getting the release says what happened, and only that.
SAYS = {
    "dns": "cannot resolve release-mirror.invalid (DNS)",
    "connect": ": Connection refused;",
    "connect-timeout": "no answer within 2s (timeout)",
    "tls": "TLS with 127.0.0.1:",
    "timeout": "stopped at a limit: the server took the connection but sent no answer within 2s",
    "notfound": "gVisor release not found at",
}


def test_each_failure_has_its_own_message(mirror, tmp_path: Path):
    root, server = mirror
    publish(root, "20200101.0")  # another release is there: the server answers
    silent = Server(root, Silent)
    port = closed_port()
    try:
        with unanswered_port() as unanswered:
            bases = {
                "dns": "http://release-mirror.invalid",
                "connect": f"http://127.0.0.1:{port}",
                "connect-timeout": f"http://127.0.0.1:{unanswered}",
                "tls": server.url.replace("http:", "https:"),  # plain HTTP where TLS is expected
                "timeout": silent.url,
                "notfound": server.url,
            }
            for kind, base in bases.items():
                start = time.monotonic()
                err = failure(base, tmp_path)
                message = str(err)
                assert err.kind == kind, (kind, message)
                assert SAYS[kind] in message and f"{base}/{RELEASE}/{ARCH}/" in message, message
                assert [k for k, says in SAYS.items() if k != kind and says in message] == [], message
                assert time.monotonic() - start < 8, f"{kind} took {time.monotonic() - start:.0f}s with a 2s limit"
    finally:
        silent.close()


def test_an_unreachable_bucket_falls_back_to_the_release_directory(tmp_path: Path):
    digest = publish(tmp_path / "local")
    got = fetch("http://release-mirror.invalid", tmp_path / "cache", fallback_dir=str(tmp_path / "local"))
    assert got.sha512 == digest and got.source.startswith("file://")  # type: ignore[attr-defined]


def test_a_missing_release_never_falls_back(mirror, tmp_path: Path):
    _, server = mirror
    publish(tmp_path / "local")
    err = failure(server.url, tmp_path / "cache", fallback_dir=str(tmp_path / "local"))
    assert err.kind == "notfound"


def test_when_both_fail_both_reasons_are_given(tmp_path: Path):
    err = failure("http://release-mirror.invalid", tmp_path / "cache", fallback_dir=str(tmp_path / "empty"))
    assert "cannot resolve release-mirror.invalid (DNS)" in str(err)
    assert "then, from gvisor-fleet:releaseDir: gVisor release not found at file://" in str(err)
    assert "the directory has no such folder or file" in str(err)


def test_a_release_from_the_local_directory_never_stands_in_for_the_buckets(mirror, tmp_path: Path):
    """The same release name from two sources: each has its own cache entry."""
    root, server = mirror
    local = publish(tmp_path / "local", data=b"the set-up's own build")
    got = fetch("http://release-mirror.invalid", tmp_path / "cache", fallback_dir=str(tmp_path / "local"))
    assert got.sha512 == local  # type: ignore[attr-defined]
    official = publish(root)  # the bucket is reachable now
    got = fetch(server.url, tmp_path / "cache", fallback_dir=str(tmp_path / "local"))
    assert got.sha512 == official and got.path.read_bytes() == b"archive bytes"  # type: ignore[attr-defined]
