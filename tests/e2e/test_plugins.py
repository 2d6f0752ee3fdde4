"""The Pulumi plugins the engine runs here are the upstream ones, at the pinned versions.

tests/toolchain/build-pulumi.sh builds them from the upstream sources (or
installs the official ones). Each binary is asked for its version the way the
engine asks (GetPluginInfo over gRPC for a provider, `-version` for the
language host), and its Go build information must name the upstream module.
The tree itself holds no Pulumi plugin of its own.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2
from pulumi.runtime.proto import provider_pb2_grpc

from tests.support.loopback import Server
from tests.support.paths import REPO, TOOLCHAIN
from tests.support.toolchain import pulumi_env

pytestmark = pytest.mark.e2e

# plugin -> the Go module upstream builds it from (the main module in its build information)
UPSTREAM_MODULES = {
    "pulumi-language-python": "github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3",
    "pulumi-resource-command": "github.com/pulumi/pulumi-command/provider",
    "pulumi-resource-kubernetes": "github.com/pulumi/pulumi-kubernetes/provider/v4",
}


def pinned(package: str) -> str:
    text = (REPO / "requirements.txt").read_text()
    match = re.search(rf"^{re.escape(package)}==(\S+)$", text, re.MULTILINE)
    assert match, f"requirements.txt does not pin {package}"
    return match.group(1)


def provider_binary(env: dict[str, str], name: str, version: str) -> Path:
    return Path(env["PULUMI_HOME"]) / "plugins" / f"resource-{name}-v{version}" / f"pulumi-resource-{name}"


def language_host(env: dict[str, str], bin_dir: Path) -> Path:
    """Where the engine finds the Python language host: next to the CLI, else the plugin cache."""
    beside = bin_dir / "pulumi-language-python"
    if beside.exists():
        return beside
    found = sorted((Path(env["PULUMI_HOME"]) / "plugins").glob("language-python-v*/pulumi-language-python"))
    assert found, f"no Python language host next to {bin_dir}/pulumi or in the plugin cache"
    return found[-1]


def main_module(binary: Path) -> str:
    """The main module recorded in a Go binary's build information."""
    match = re.search(rb"path\t[^\n]+\nmod\t([^\t\n]+)\t", binary.read_bytes())
    assert match, f"{binary} has no Go build information"
    return match.group(1).decode()


def provider_version(binary: Path) -> str:
    """The version a provider reports to the engine (GetPluginInfo), started as the engine starts it."""
    proc = subprocess.Popen([str(binary)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout
        port = proc.stdout.readline().strip()
        assert port.isdigit(), f"{binary} printed {port!r} instead of its port"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            info = provider_pb2_grpc.ResourceProviderStub(channel).GetPluginInfo(empty_pb2.Empty(), timeout=60)
        return str(info.version)
    finally:
        proc.kill()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def plugin_env(engine: Path) -> Iterator[dict[str, str]]:
    yield pulumi_env()


@pytest.mark.parametrize(("name", "package"), [("command", "pulumi-command"), ("kubernetes", "pulumi-kubernetes")])
def test_provider_is_upstream_at_the_pinned_version(plugin_env: dict[str, str], name: str, package: str) -> None:
    version = pinned(package)
    binary = provider_binary(plugin_env, name, version)
    assert binary.is_file(), f"{binary} is not installed"
    assert main_module(binary) == UPSTREAM_MODULES[binary.name]
    assert provider_version(binary).removeprefix("v") == version
    others = {p.name for p in binary.parents[1].glob(f"resource-{name}-v*") if p.is_dir()} - {binary.parent.name}
    assert not others, f"other {name} providers in the plugin cache: {others}"


def test_language_host_is_upstream_at_the_engine_version(plugin_env: dict[str, str], engine: Path) -> None:
    binary = language_host(plugin_env, engine)
    assert main_module(binary) == UPSTREAM_MODULES["pulumi-language-python"]
    reported = subprocess.run([str(binary), "-version"], capture_output=True, text=True, check=True).stdout.strip()
    cli = subprocess.run([str(engine / "pulumi"), "version"], capture_output=True, text=True, check=True).stdout
    assert reported.removeprefix("v") == cli.strip().removeprefix("v") == plugin_env["GVISOR_FLEET_PULUMI_VERSION"]


def test_main_module_reads_a_go_binary(tmp_path: Path) -> None:
    """The build-information probe itself: finds a module, refuses a file without one."""
    fake = tmp_path / "fake"
    fake.write_bytes(b"\x00junk path\tgvisor-fleet.local/x\nmod\tgvisor-fleet.local/x\t(devel)\t\n")
    assert main_module(fake) == "gvisor-fleet.local/x"
    fake.write_bytes(b"#!/bin/sh\nexit 0\n")
    with pytest.raises(AssertionError, match="no Go build information"):
        main_module(fake)


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p]


def test_no_plugin_of_our_own_in_the_tree() -> None:
    """No Pulumi plugin is built from this repository: what the tests run is upstream's."""
    named = [p for p in tracked_files() if re.search(r"(^|/)pulumi-(language|resource|analyzer)-", p)]
    go_files = [REPO / p for p in tracked_files() if p.endswith(".go")]
    serving = [str(p) for p in go_files if p.exists() and "pulumirpc" in p.read_text()]
    own = named + serving
    assert not own, f"Pulumi plugin sources in the tree: {own}"


def test_a_tampered_upstream_source_is_refused_before_unpacking(engine: Path, tmp_path: Path) -> None:
    """build-pulumi.sh checks each upstream tarball against SHA256SUMS: one changed byte stops it."""
    out = subprocess.run(
        ["sh", str(TOOLCHAIN / "build-pulumi.sh"), "--print-upstream-dir"], capture_output=True, text=True
    )
    if not out.stdout.strip():
        pytest.skip("no upstream plugin sources here: build-pulumi.sh installs the official plugins")
    real = Path(out.stdout.strip())
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    name = "pulumi-v3.259.0-language-python.tar.gz"
    (upstream / "SHA256SUMS").write_text((real / "SHA256SUMS").read_text())
    data = bytearray((real / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (upstream / name).write_bytes(bytes(data))
    # A cache with the CLI already in it but no plugin builds, so the recipe runs.
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / engine.parent.name).symlink_to(engine.parent)
    env = {**os.environ, "GVISOR_FLEET_CACHE": str(cache), "GVISOR_FLEET_UPSTREAM": str(upstream)}
    env.pop("PULUMI_HOME", None)
    run = subprocess.run(
        ["sh", str(TOOLCHAIN / "build-pulumi.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode != 0, run.stderr
    assert f"{upstream}/{name}: SHA-256" in run.stderr and "not using it" in run.stderr, run.stderr
    assert not [p for p in (cache / "pulumi-plugins").rglob("pulumi-language-python") if p.is_file()], "built"


def tar_gz(dest: Path, members: dict[str, Path]) -> None:
    """A release archive holding each file under its name in `members`."""
    with tarfile.open(dest, "w:gz", compresslevel=1) as tar:
        for name, path in members.items():
            tar.add(path, arcname=name)


@pytest.fixture
def official_path(plugin_env: dict[str, str], engine: Path, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """build-pulumi.sh without upstream sources, against a loopback stand-in for Pulumi's downloads.

    The stand-in serves the upstream builds this machine made, laid out as
    GitHub serves the CLI release (archive and checksums file) and as
    `pulumi plugin install --server` asks for providers. The CLI itself is
    linked into a fresh cache, so nothing is rebuilt and the real cache is not
    touched.
    """
    version = plugin_env["GVISOR_FLEET_PULUMI_VERSION"]
    served = tmp_path / "served"
    release = served / "releases" / f"v{version}"
    plugins = served / "plugins"
    release.mkdir(parents=True)
    plugins.mkdir()
    arch = {"x86_64": ("x64", "amd64"), "aarch64": ("arm64", "arm64")}[os.uname().machine]
    archive = release / f"pulumi-v{version}-linux-{arch[0]}.tar.gz"
    tar_gz(archive, {"pulumi/pulumi-language-python": language_host(plugin_env, engine)})
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    (release / f"pulumi-{version}-checksums.txt").write_text(f"0000  other.tar.gz\n{digest}  {archive.name}\n")
    for name, package in (("command", "pulumi-command"), ("kubernetes", "pulumi-kubernetes")):
        binary = provider_binary(plugin_env, name, pinned(package))
        tar_gz(plugins / f"pulumi-resource-{name}-v{pinned(package)}-linux-{arch[1]}.tar.gz", {binary.name: binary})
    cache = tmp_path / "cache"
    cli = cache / engine.parent.name / "bin"
    cli.mkdir(parents=True)
    for kept in (
        "pulumi",
        "pulumi-language-python-exec",
        "pulumi-resource-pulumi-python",
        ".pulumi-language-python-exec.sdk",
    ):
        (cli / kept).hardlink_to(engine / kept)
    server = Server(served)
    env = {
        **{k: v for k, v in os.environ.items() if k != "PULUMI_HOME"},
        "GVISOR_FLEET_CACHE": str(cache),
        "GVISOR_FLEET_UPSTREAM": "none",
        "GVISOR_FLEET_PULUMI_RELEASES": f"{server.url}/releases",
        "GVISOR_FLEET_PLUGIN_SERVER": f"{server.url}/plugins",
    }
    yield {"env": env, "server": server, "archive": archive, "cli": cli, "home": cache / "pulumi-home"}
    server.close()


def build_pulumi(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(TOOLCHAIN / "build-pulumi.sh")], env=env, capture_output=True, text=True, timeout=600
    )


def test_without_upstream_sources_the_official_plugins_are_installed(
    official_path: dict[str, Any], plugin_env: dict[str, str], engine: Path
) -> None:
    """The path a machine with internet takes: official archive checked, providers through `plugin install`."""
    run = build_pulumi(official_path["env"])
    assert run.returncode == 0, run.stderr
    assert "path: no upstream plugin sources" in run.stderr, run.stderr
    cli, home = official_path["cli"], official_path["home"]
    assert (cli / "pulumi-language-python").read_bytes() == language_host(plugin_env, engine).read_bytes()
    for name, package in (("command", "pulumi-command"), ("kubernetes", "pulumi-kubernetes")):
        installed = provider_binary({"PULUMI_HOME": str(home)}, name, pinned(package))
        assert installed.read_bytes() == provider_binary(plugin_env, name, pinned(package)).read_bytes()
    asked = list(official_path["server"].requests)
    assert len(asked) == 4, asked
    again = build_pulumi(official_path["env"])
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("cached: official") == 3, again.stderr
    assert official_path["server"].requests == asked, "a second run downloaded again"


def test_a_tampered_official_archive_is_refused(official_path: dict[str, Any]) -> None:
    archive: Path = official_path["archive"]
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    run = build_pulumi(official_path["env"])
    assert run.returncode != 0, run.stderr
    assert f"{archive.name}: SHA-256" in run.stderr and "not using it" in run.stderr, run.stderr
    assert not (official_path["cli"] / "pulumi-language-python").exists()
    assert not list((official_path["home"] / "plugins").glob("*")), "a provider was installed"
