"""`latest` resolved on the machine running Pulumi: ordering, both listings, and what
each failure says, against real loopback servers laid out like the bucket."""

from __future__ import annotations

import socket
import time
from dataclasses import replace
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import pytest

from components.fleet.machine import Machine
from components.gvisor.host import host_commands
from components.gvisor.release_fetch import Limits, ReleaseFetchError
from components.gvisor.release_latest import (
    bucket_listing_url,
    fleet_arches,
    newest_first,
    parse_bucket_listing,
    parse_index,
    resolve_at,
    resolve_latest,
    resolve_release,
)
from components.gvisor.settings import GvisorSettings
from components.policy.rules import PolicyConfig, Resource, release_pinned
from tests.support.bucket import bucket_handler, listing_xml
from tests.support.loopback import Server

FAST = Limits(wait=2, total=10)
BOTH = ("aarch64", "x86_64")


def publish(root: Path, release: str, arches: tuple[str, ...] = BOTH, loose: bool = False) -> None:
    for arch in arches:
        d = root / release / arch
        d.mkdir(parents=True, exist_ok=True)
        name = "runsc.sha512" if loose else "gvisor.tar.bz2.sha512"
        (d / name).write_text(f"{'0' * 128}  {name.removesuffix('.sha512')}\n")


def test_dated_releases_sort_by_date_then_point():
    names = ["20261109.0", "latest", "20261116.0", "20260914.0", "20261116.1", "20261116", "nightly", "20261012.10"]
    assert newest_first(names) == ["20261116.1", "20261116.0", "20261116", "20261109.0", "20261012.10", "20260914.0"]
    assert newest_first(["20260101.2", "20260101.10"]) == ["20260101.10", "20260101.2"]  # numeric, not text


def test_gcs_bucket_listing_is_read_with_its_pages():
    xml = listing_xml("gvisor", "releases/release/", ["20261109.0", "20261116.0", "latest"], "", 2)
    names, marker = parse_bucket_listing(xml) or ([], None)
    assert names == ["20261109.0", "20261116.0"]
    assert marker == "releases/release/20261116.0/"
    last = parse_bucket_listing(listing_xml("gvisor", "releases/release/", ["20261116.0", "latest"], marker, 2))
    assert last == (["latest"], None)
    assert parse_bucket_listing("<html><a href='x'>x</a></html>") is None
    assert parse_bucket_listing("not xml") is None


def test_the_listing_url_of_the_default_bucket():
    url = bucket_listing_url("https://storage.googleapis.com/gvisor/releases/release")
    assert url == "https://storage.googleapis.com/gvisor?prefix=releases%2Frelease%2F&delimiter=%2F"
    assert bucket_listing_url("http://127.0.0.1:8080") is None
    assert "marker=a%2Fb%2F" in (bucket_listing_url("http://h/b/a", "a/b/") or "")


def test_a_directory_index_names_its_folders():
    html = '<a href="20261116.0/">20261116.0/</a> <a href="/m/20261109.0/">x</a> <a href="../">..</a>'
    assert newest_first(parse_index(html)) == ["20261116.0", "20261109.0"]


def test_detected_arches_need_both():
    assert fleet_arches(["x86_64", "x86_64"]) == ("x86_64",)
    assert fleet_arches(["x86_64", "detect"]) == BOTH
    assert fleet_arches([]) == ()


def test_newest_release_with_every_arch_from_a_directory_index(tmp_path: Path):
    publish(tmp_path, "20261109.0")
    publish(tmp_path, "20261116.0", ("x86_64",))  # aarch64 not published (yet)
    publish(tmp_path, "20261012.0", loose=True)
    (tmp_path / "latest").mkdir()
    with Server(tmp_path) as server:
        assert resolve_at(server.url, ("x86_64",), FAST).release == "20261116.0"
        resolved = resolve_at(server.url, BOTH, FAST)
    assert resolved.release == "20261109.0"
    assert resolved.source == f"{server.url}/"


def test_newest_release_from_a_paged_bucket_listing(tmp_path: Path):
    releases = tmp_path / "gvisor" / "releases" / "release"
    for name in ("20260914.0", "20261012.0", "20261109.0", "20261116.0", "20261116.1"):
        publish(releases, name)
    with Server(tmp_path, bucket_handler(page_size=2)) as server:
        resolved = resolve_at(f"{server.url}/gvisor/releases/release", BOTH, FAST)
        listed = [p for p in server.requests if "delimiter=" in p]
    assert resolved.release == "20261116.1"
    assert len(listed) == 3  # three pages of two
    assert resolved.source.endswith("/gvisor?prefix=releases%2Frelease%2F&delimiter=%2F")


def test_a_newly_published_release_is_picked_up_by_the_next_run(tmp_path: Path):
    publish(tmp_path, "20261109.0")
    with Server(tmp_path) as server:
        assert resolve_at(server.url, BOTH, FAST).release == "20261109.0"
        publish(tmp_path, "20261116.0")
        assert resolve_at(server.url, BOTH, FAST).release == "20261116.0"


def test_a_local_directory_is_listed(tmp_path: Path):
    publish(tmp_path, "20261109.0")
    publish(tmp_path, "20261116.0")
    assert resolve_at(tmp_path.as_uri(), BOTH, FAST).release == "20261116.0"


def test_unreachable_says_it_could_not_connect():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ReleaseFetchError) as err:
        resolve_at(f"http://127.0.0.1:{port}/gvisor/releases/release", BOTH, FAST)
    assert err.value.kind == "connect"
    assert f"cannot connect to 127.0.0.1:{port}" in str(err.value)


class NoListing(SimpleHTTPRequestHandler):
    """Files only, as a mirror without any index would serve them."""

    def list_directory(self, path: str) -> None:  # type: ignore[override]
        self.send_error(404, "no index")


def test_a_server_without_any_listing_says_not_found_and_what_it_tried(tmp_path: Path):
    publish(tmp_path / "m", "20261116.0")
    with Server(tmp_path, NoListing) as server, pytest.raises(ReleaseFetchError) as err:
        resolve_at(f"{server.url}/m", BOTH, FAST)
    assert err.value.kind == "notfound"
    assert "offers neither a bucket listing" in str(err.value)
    assert f"a directory index ({server.url}/m/ answered not found)" in str(err.value)


def test_no_dated_release_and_no_release_with_the_arch_are_not_found(tmp_path: Path):
    (tmp_path / "latest").mkdir()
    with Server(tmp_path) as server:
        with pytest.raises(ReleaseFetchError, match="lists no dated release") as err:
            resolve_at(server.url, BOTH, FAST)
        assert err.value.kind == "notfound"
        publish(tmp_path, "20261116.0", ("x86_64",))
        with pytest.raises(ReleaseFetchError, match=r"none of the newest releases .* has aarch64 and x86_64"):
            resolve_at(server.url, BOTH, FAST)


def test_release_dir_is_listed_when_base_url_is_unreachable(tmp_path: Path):
    publish(tmp_path, "20261116.0")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    resolved = resolve_latest(f"http://127.0.0.1:{port}", BOTH, str(tmp_path), FAST)
    assert resolved.release == "20261116.0"


def test_latest_becomes_the_dated_release_on_the_install_line(tmp_path: Path):
    publish(tmp_path, "20261116.0", ("x86_64",))
    gv = GvisorSettings(release="latest", base_url=tmp_path.as_uri())
    resolved = resolve_release(gv, ["x86_64"])
    assert (resolved.release, resolved.resolved_from) == ("20261116.0", "latest")
    assert resolve_release(replace(gv, release="20261109.0"), ["x86_64"]).release == "20261109.0"
    assert resolve_release(gv, []) is gv  # no machines: nothing to resolve, no network

    machine = Machine(name="m1", arch="x86_64", user="root", connection=None, ready=[])  # type: ignore[arg-type]
    line = host_commands(machine, resolved)["install"][0]
    assert f"install {tmp_path.as_uri()} 20261116.0 /usr/local/bin" in line
    assert " -rlatest " in line
    # The policy still sees a floating release on a prod stack.
    urn = "urn:pulumi:prod::gvisor-fleet::gvisor-fleet:gvisor:GvisorHost$command:remote:Command::m1-install"
    (violation,) = release_pinned(
        Resource(urn, "command:remote:Command", "m1-install", {"create": line}), PolicyConfig()
    )
    assert "installs gVisor release 'latest'" in violation.message


class Silent(SimpleHTTPRequestHandler):
    """Takes the request and never answers."""

    def do_GET(self) -> None:
        time.sleep(30)


def test_a_server_that_never_answers_stops_the_resolution_within_its_limit(tmp_path: Path):
    with Server(tmp_path, Silent) as server, pytest.raises(ReleaseFetchError) as err:
        start = time.monotonic()
        resolve_at(f"{server.url}/gvisor/releases/release", BOTH, Limits(wait=1, total=5))
    assert time.monotonic() - start < 5
    assert err.value.kind == "timeout"
    assert "sent no answer within 1s" in str(err.value)
