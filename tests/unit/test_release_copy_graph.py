"""releaseFetch once under Pulumi mocks: the checked release copied to each host, then installed from the copy."""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path

import pulumi
import pytest

from components.fleet.specs import MachineSpec
from components.fleet.static import static_machine
from components.gvisor import release_copy
from components.gvisor.host import GvisorHost
from components.gvisor.release_copy import remote_path
from components.gvisor.settings import GvisorSettings
from components.policy import rules
from components.policy.rules import PolicyConfig, Resource

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-material\n-----END OPENSSH PRIVATE KEY-----\n"
RELEASE = "20261116.0"


@pytest.fixture
def release_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, str]]:
    """A local release directory for both arches, and an empty cache for this test."""
    digests = {}
    for arch in ("x86_64", "aarch64"):
        d = tmp_path / "releases" / RELEASE / arch
        d.mkdir(parents=True)
        data = f"archive for {arch}".encode()
        (d / "gvisor.tar.bz2").write_bytes(data)
        digests[arch] = hashlib.sha512(data).hexdigest()
        (d / "gvisor.tar.bz2.sha512").write_text(f"{digests[arch]}  gvisor.tar.bz2\n")
    monkeypatch.setenv("GVISOR_FLEET_RELEASE_CACHE", str(tmp_path / "cache"))
    release_copy._fetched.cache_clear()
    return tmp_path / "releases", digests


def settings(base: Path) -> GvisorSettings:
    return GvisorSettings(release=RELEASE, base_url=base.as_uri(), release_fetch="once")


@pulumi.runtime.test
def test_each_machine_gets_the_copy_before_install_and_a_cleanup_for_destroy(mocks, release_dir, tmp_path):
    base, digests = release_dir
    machines = [
        static_machine(MachineSpec(name="a1", arch="x86_64", address="h1"), KEY),
        static_machine(MachineSpec(name="a2", arch="x86_64", address="h2", user="admin"), KEY),
        static_machine(MachineSpec(name="b1", arch="aarch64", address="h3"), KEY),
    ]
    hosts = [GvisorHost(m.name, m, settings(base)) for m in machines]

    def check(_):
        copies = {r.name: r for r in mocks.of_type("command:remote:CopyToRemote")}
        commands = {r.name: r for r in mocks.of_type("command:remote:Command")}
        for m in machines:
            path = remote_path(m.arch, digests[m.arch])
            copy = copies[f"{m.name}-release-copy"]
            assert copy.inputs["remotePath"] == path
            source = copy.inputs["source"]
            cached = Path(source.path)
            assert cached.parent.parent == tmp_path / "cache" / RELEASE / m.arch
            assert cached.read_text() == f"archive for {m.arch}"
            assert mocks.depends_on[f"{m.name}-release-copy"] == {f"{m.name}-agent"}

            install = shlex.split(commands[f"{m.name}-install"].inputs["create"])
            checked = install[install.index("preflight") + 5 :]
            assert checked == ["install-file", path, digests[m.arch], RELEASE, "/usr/local/bin"]
            assert f"{m.name}-release-copy" in mocks.depends_on[f"{m.name}-install"]

            cleanup = commands[f"{m.name}-release-cleanup"].inputs
            assert "create" not in cleanup, "the clean-up must run nothing on up"
            assert cleanup["delete"] == f"rm -f -- {path}"  # the login user's own file: no sudo
            assert path in cleanup["triggers"]
            assert mocks.depends_on[f"{m.name}-release-cleanup"] == {f"{m.name}-release-copy"}
            # Nothing waits for the clean-up, so replacing it (a new release) touches nothing else.
            assert not [n for n, deps in mocks.depends_on.items() if f"{m.name}-release-cleanup" in deps]

    return pulumi.Output.all(*[h.facts for h in hosts]).apply(check)


@pulumi.runtime.test
def test_each_host_downloads_by_default(mocks):
    host = GvisorHost("m1", static_machine(MachineSpec(name="m1", arch="x86_64", address="h"), KEY), GvisorSettings())

    def check(_):
        copied = [r.name for r in mocks.of_type("command:remote:CopyToRemote")]
        assert copied == ["m1-agent"], "only the agent script is copied"
        (install,) = [r for r in mocks.of_type("command:remote:Command") if r.name == "m1-install"]
        words = shlex.split(install.inputs["create"])
        assert words[words.index("preflight") + 5] == "install"

    return host.facts.apply(check)


def test_a_release_that_cannot_be_fetched_stops_the_program_naming_the_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("GVISOR_FLEET_RELEASE_CACHE", str(tmp_path / "cache"))
    release_copy._fetched.cache_clear()
    machine = static_machine(MachineSpec(name="m1", arch="x86_64", address="h"), KEY)
    with pytest.raises(pulumi.RunError) as err:
        release_copy.plan_release_copy(machine, settings(tmp_path / "nothing-here"))
    assert str(err.value).startswith("gvisor-fleet:releaseFetch once: gVisor release not found at file://")


@pytest.mark.parametrize(("release", "refused"), [("latest", True), (RELEASE, False)])
def test_the_pinned_release_policy_reads_the_copy_step_too(release: str, refused: bool):
    create = shlex.join(["sh", "-s", "--", "install-file", "/var/tmp/x.tar.bz2", "ab" * 64, release, "/usr/local/bin"])
    step = Resource(urn="urn:pulumi:prod::gvisor-fleet::command:remote:Command::m1-install",
                    type=rules.COMMAND_TYPE, name="m1-install", props={"create": create})  # fmt: skip
    violations = rules.release_pinned(step, PolicyConfig())
    assert bool(violations) is refused
    assert not violations or "'latest'" in violations[0].message
