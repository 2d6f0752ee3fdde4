"""Every example stack in stacks/ is valid as shipped.

Each `stacks/Pulumi.<name>.yaml` is read as Pulumi reads it, checked by the
real settings parser (`load_settings`), and then the whole program is built
from it under Pulumi mocks, as `pulumi preview` would evaluate it. The test
supplies only what a user keeps as secrets (the login key, a kubeconfig) and,
for the local demo stack, stand-ins for the files the set-up builds (VM
images, the release directory), so nothing here needs the network.

A new stack file must be listed in STACKS with the secrets it needs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime.config import set_all_config

from components.fleet.keys import generate_ed25519
from components.gvisor import release_copy
from components.gvisor.release_fetch import ARCHIVE, as_url, source_key
from components.overhead.settings import CONFIG_NAME as OVERHEAD_KEY
from components.program import build
from components.settings import KNOWN_KEYS, load_settings
from tests.unit.mocks import use
from tests.unit.stack_mocks import KUBECONFIG, StackMocks

STACKS_DIR = Path(__file__).parents[2] / "stacks"
NS = "gvisor-fleet"
KEY = generate_ed25519("stacks-test").private_key

# stack -> (backends its machines use, the secrets a user sets for it)
STACKS: dict[str, tuple[set[str], dict[str, str]]] = {
    "local": ({"qemu"}, {}),
    "qemu": ({"qemu"}, {}),
    "multipass": ({"multipass"}, {}),
    "aws": ({"aws"}, {}),
    "static": ({"static"}, {"sshPrivateKey": KEY}),
    "existing-cluster": ({"static"}, {"sshPrivateKey": KEY, "kubeconfig": KUBECONFIG}),
    "overhead": ({"static"}, {"sshPrivateKey": KEY}),
}
# RFC 5737: documentation ranges, never a real host or network.
DOCUMENTATION_RANGES = ("192.0.2.", "198.51.100.", "203.0.113.")


def stack_files() -> dict[str, Path]:
    return {p.name[len("Pulumi.") : -len(".yaml")]: p for p in sorted(STACKS_DIR.glob("Pulumi.*.yaml"))}


def read_stack(name: str) -> dict[str, Any]:
    doc = yaml.safe_load(stack_files()[name].read_text())
    config = doc.get("config") or {}
    assert isinstance(config, dict)
    return config


def as_config_value(value: object) -> str:
    """A value as the engine hands it to the program: text, objects as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def raw_settings(config: Mapping[str, object]) -> dict[str, object]:
    """The gvisor-fleet values as `read_raw_config` passes them to `load_settings`."""
    raw: dict[str, object] = {}
    for full, value in config.items():
        ns, _, key = full.partition(":")
        if ns != NS or (isinstance(value, dict) and "secure" in value):
            continue
        raw[key] = value if isinstance(value, (dict, list)) or key not in KNOWN_KEYS else as_config_value(value)
    return raw


@pytest.fixture
def set_up_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home directory holding what the set-up builds for the local stack, as empty stand-ins,
    and a release cache already holding the release, so `releaseFetch: once` needs no network."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GVISOR_FLEET_RELEASE_CACHE", str(tmp_path / "release-cache"))
    monkeypatch.delenv("GVISOR_FLEET_CACHE", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    release_copy._fetched.cache_clear()
    return home


def provide_local_files(config: Mapping[str, object], home: Path, cache: Path) -> None:
    for machine in config.get(f"{NS}:machines") or []:
        assert isinstance(machine, dict)
        for field in ("image", "kernel", "initrd", "firmware"):
            value = machine.get(field)
            if isinstance(value, str) and value.startswith("~/"):
                path = home / value[2:]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"stand-in")
    release = config.get(f"{NS}:release", "20261116.0")
    base = as_url(str(config.get(f"{NS}:baseUrl", "https://storage.googleapis.com/gvisor/releases/release")))
    release_dir = config.get(f"{NS}:releaseDir")
    if isinstance(release_dir, str) and release_dir.startswith("~/"):
        (home / release_dir[2:]).mkdir(parents=True, exist_ok=True)
    kubeadm = (config.get(f"{NS}:kubernetes") or {}).get("kubeadm") or {}  # type: ignore[union-attr]
    kube_dir = kubeadm.get("releaseDir")
    if isinstance(kube_dir, str) and kube_dir.startswith("~/"):
        for goarch in ("amd64", "arm64"):
            folder = home / kube_dir[2:] / str(kubeadm.get("version", "v1.37.2")) / goarch
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "SHA512SUMS").write_text("")
    for arch in ("x86_64", "aarch64"):
        entry = cache / str(release) / arch / source_key(base)
        entry.mkdir(parents=True)
        data = f"stand-in archive for {arch}".encode()
        (entry / ARCHIVE).write_bytes(data)
        (entry / f"{ARCHIVE}.sha512").write_text(f"{hashlib.sha512(data).hexdigest()}  {ARCHIVE}\n")


def test_every_stack_file_is_listed():
    assert set(stack_files()) == set(STACKS), "list each stacks/Pulumi.<name>.yaml in STACKS with its secrets"
    backends = set().union(*(b for b, _ in STACKS.values()))
    assert backends >= {"qemu", "multipass", "aws", "static"}, "an example for each backend"
    assert any("kubernetes" in k for k in read_stack("existing-cluster")), "an example for an existing cluster"
    assert f"{NS}:{OVERHEAD_KEY}" in read_stack("overhead"), "an example of the overhead measurement"


@pytest.mark.parametrize("name", sorted(STACKS))
def test_no_documentation_addresses(name: str):
    text = stack_files()[name].read_text()
    for prefix in DOCUMENTATION_RANGES:
        assert prefix not in text, f"stacks/Pulumi.{name}.yaml uses the documentation range {prefix}0/24"


@pytest.mark.parametrize("name", sorted(STACKS))
def test_host_keys_decode(name: str):
    """A hostKey must be a real public key: a placeholder passes preview and fails only at `up`."""
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    for machine in read_stack(name).get(f"{NS}:machines") or []:
        if "hostKey" in machine:
            load_ssh_public_key(machine["hostKey"].encode())


@pytest.mark.parametrize("name", sorted(STACKS))
def test_the_settings_parser_accepts_the_stack(name: str, set_up_files: Path, tmp_path: Path):
    config = read_stack(name)
    provide_local_files(config, set_up_files, tmp_path / "release-cache")
    backends, secrets = STACKS[name]
    raw = raw_settings(config)
    raw.pop(OVERHEAD_KEY, None)  # its own layer, parsed by the program (components/overhead/settings.py)
    settings = load_settings(raw, has_private_key="sshPrivateKey" in secrets)
    assert settings.machines, f"stacks/Pulumi.{name}.yaml declares no machine"
    assert {m.backend for m in settings.machines} == backends


@pytest.mark.parametrize("name", sorted(STACKS))
@pulumi.runtime.test
def test_the_program_builds_the_stack_under_mocks(name: str, set_up_files: Path, tmp_path: Path):
    config = read_stack(name)
    provide_local_files(config, set_up_files, tmp_path / "release-cache")
    _, secrets = STACKS[name]
    mocks = use(StackMocks(), stack=name)
    values = {k: as_config_value(v) for k, v in config.items() if not (isinstance(v, dict) and "secure" in v)}
    values.update({f"{NS}:{k}": v for k, v in secrets.items()})
    set_all_config(values, secret_keys=[f"{NS}:{k}" for k in secrets])
    program = build(pulumi.Config(NS))
    machines = [m["name"] for m in config[f"{NS}:machines"]]
    assert sorted(program.hosts) == sorted(machines)
    outputs = program.outputs()

    def check(args: list[Any]) -> None:
        all_ok, verification, facts = args
        assert all_ok is True
        steps = {r.name for r in mocks.of_type("command:remote:Command")}
        assert {f"{m}-verify" for m in machines} <= steps
        if f"{NS}:kubernetes" in config:
            assert mocks.of_type("kubernetes:node.k8s.io/v1:RuntimeClass")
            assert verification and all(v["passed"] for v in verification.values())
        if f"{NS}:{OVERHEAD_KEY}" in config:
            assert all("overhead" in facts[m] for m in machines), "each machine's overhead output"
            assert {r.name for r in mocks.of_type("gvisor-fleet:overhead:OverheadMeasurement")} == set(machines)

    return pulumi.Output.all(
        outputs["allChecksPassed"], outputs.get("kubernetesVerification"), outputs["machines"]
    ).apply(check)
