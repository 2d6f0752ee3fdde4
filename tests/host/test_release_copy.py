"""The install step from a release copied to the host (gvisor-fleet:releaseFetch once).

The copy lies where the release-copy resource puts it (release_copy.remote_path)
and the install step checks it against the SHA-512 the machine running Pulumi
checked, before it changes anything: these hosts download nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from components.gvisor.release_copy import remote_path
from tests.host.agent_calls import PREFIX
from tests.host.host_state import HostSnapshot, ok, refusal
from tests.host.kill_points import TOUCHED, assert_same_tree, kill_install_rerun_uninstall
from tests.host.sandbox import Sandbox
from tests.support.mirror import MIRROR_ROOT, Releases

pytestmark = pytest.mark.host


def archive(releases: Releases) -> Path:
    return MIRROR_ROOT / releases.current / "x86_64" / "gvisor.tar.bz2"


def sha512(path: Path, extra: bytes = b"") -> str:
    return hashlib.sha512(path.read_bytes() + extra).hexdigest()


def put_copy(host: Sandbox, source: Path, digest: str, extra: str = "") -> str:
    """The archive where CopyToRemote (SFTP, as the login user) leaves it; EXTRA bytes appended."""
    path = remote_path("x86_64", digest)
    host.sh(f"cp {source} {path} && printf '%s' '{extra}' >> {path}")
    assert host.read(path) == source.read_bytes() + extra.encode()
    return path


def install_file(host: Sandbox, path: str, digest: str, release: str) -> dict[str, str]:
    return ok(host.agent("install-file", path, digest, release, PREFIX))


def mirror_requests(host: Sandbox) -> list[str]:
    return [line for line in (host.read("/var/log/mirror.log") or b"").decode().splitlines() if "GET " in line]


def test_a_copied_release_installs_without_any_download_and_uninstall_restores(host: Sandbox, releases: Releases):
    host.sh(f"cp /usr/bin/runsc {PREFIX}/runsc")  # the owner's own runsc comes back on destroy
    src = archive(releases)
    digest = sha512(src)
    path = put_copy(host, src, digest)
    before = host.tree(*TOUCHED)
    asked = mirror_requests(host)  # the sandbox's start-up probes

    facts = install_file(host, path, digest, releases.current)
    assert facts["changed"] == "true" and facts["layout"] == "archive" and facts["shim"] == "yes"
    assert facts["release"] == releases.current
    assert host.sh(f"{PREFIX}/runsc --version | head -n 1").strip() == f"runsc version {facts['runsc_version']}"
    assert mirror_requests(host) == asked, "the copy path must not download"
    assert host.sh(f"ls -A {PREFIX} | grep -c '^.gvisor-fleet' || true").strip() == "0", "staging left behind"

    # Run again: nothing to do, even once the copy is gone (a reboot cleaned /var/tmp).
    assert install_file(host, path, digest, releases.current)["changed"] == "false"
    host.sh(f"rm {path}")
    assert install_file(host, path, digest, releases.current)["changed"] == "false"

    ok(host.agent("uninstall", PREFIX))
    put_copy(host, src, digest)  # the copy is the release-cleanup resource's to remove
    assert_same_tree(before, host.tree(*TOUCHED), "after install from a copy and uninstall")


def test_a_tampered_copy_is_refused_and_the_host_left_unchanged(host: Sandbox, releases: Releases):
    src = archive(releases)
    digest = sha512(src)
    path = put_copy(host, src, digest, extra="tampered")
    snapshot = HostSnapshot(host)
    err = refusal(host.agent("install-file", path, digest, releases.current, PREFIX))
    assert f"the copy of gVisor {releases.current} at {path} has SHA-512" in err
    assert f"not {digest} as checked on the machine running Pulumi" in err and "nothing was installed" in err
    snapshot.assert_unchanged()


def test_a_tampered_copy_leaves_the_installed_release_in_place(host: Sandbox, releases: Releases):
    src = archive(releases)
    digest = sha512(src)
    install_file(host, put_copy(host, src, digest), digest, releases.current)
    runsc = host.read(f"{PREFIX}/runsc")
    # An upgrade whose copy changed on the way: refused, the release in place stays.
    other = sha512(src, b"next")
    path = put_copy(host, src, other)
    snapshot = HostSnapshot(host)
    assert "nothing was installed" in refusal(host.agent("install-file", path, other, "29990101.0", PREFIX))
    snapshot.assert_unchanged()
    assert host.read(f"{PREFIX}/runsc") == runsc


def test_a_missing_copy_says_how_to_copy_it_again(host: Sandbox, releases: Releases):
    digest = sha512(archive(releases))
    snapshot = HostSnapshot(host)
    err = refusal(host.agent("install-file", remote_path("x86_64", digest), digest, releases.current, PREFIX))
    assert "is not on this host" in err and "pulumi up --replace" in err
    snapshot.assert_unchanged()


def test_install_from_the_copy_killed_at_every_point_converges_and_uninstall_restores(
    host: Sandbox, releases: Releases
):
    digest = sha512(archive(releases))
    path = put_copy(host, archive(releases), digest)
    kill_install_rerun_uninstall(host, ("install-file", path, digest, releases.current, PREFIX))
