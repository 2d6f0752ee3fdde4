"""gVisor settings: the stack's keys for the release, the runtimes and the steps.

`parse_gvisor_settings` is pure: it reads the raw config values (as Pulumi
returns them) and appends one line per problem, naming the key
(`gvisor-fleet:<key>`) and what to write instead; components/settings.py
gathers every layer's problems and raises them together, at preview.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

from components.fleet.specs import arch_problem
from components.gvisor.runsc_config import NETWORKS, PLATFORMS, flag_errors

NS = "gvisor-fleet"
MODES = ("auto", "required", "off")
RELEASE_FETCH = ("host", "once")

DEFAULT_RELEASE = "20261116.0"
DEFAULT_BASE_URL = "https://storage.googleapis.com/gvisor/releases/release"
DEFAULT_VERIFY_IMAGE = "docker.io/library/busybox:1.37"

_RELEASE = re.compile(r"^(latest|\d{8}(\.\d+)?)$")
NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_HEX512 = re.compile(r"^[0-9a-f]{128}$")
# Paths travel on the agent's command line and into TOML and JSON files.
_UNSAFE_PATH = re.compile(r"[\s'\"`\\$]")
STEP_TIMEOUT_RANGE = (60, 86400)

Mode = Literal["auto", "required", "off"]


def config_bool(value: object) -> bool | None:
    """A boolean setting: true/false, or the strings the Pulumi CLI stores for them; None for anything else."""
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"
    return value if isinstance(value, bool) else None


@dataclass(frozen=True)
class GvisorSettings:
    release: str = DEFAULT_RELEASE
    base_url: str = DEFAULT_BASE_URL
    sha512: Mapping[str, str] = field(default_factory=dict)
    install_dir: str = "/usr/local/bin"
    platform: str = "systrap"
    docker_network: str = "sandbox"
    containerd_network: str = "sandbox"
    runsc_flags: Mapping[str, object] = field(default_factory=dict)
    docker: Mode = "auto"
    containerd: Mode = "auto"
    default_runtime: bool = False
    runtime_name: str = "runsc"
    runsc_config_path: str = "/etc/containerd/runsc.toml"
    verify_image: str = DEFAULT_VERIFY_IMAGE
    step_timeout: int = 900
    # host: each host downloads the release; once: the machine running Pulumi
    # fetches and checks it once and copies it to each host (release_copy.py).
    release_fetch: str = "host"
    release_dir: str | None = None  # a local release directory, used when baseUrl cannot be reached


def _key(name: str) -> str:
    return f"{NS}:{name}"


def parse_gvisor_settings(raw: Mapping[str, object], problems: list[str]) -> GvisorSettings:
    """The gVisor keys of the raw config as GvisorSettings; each problem appended names its key."""
    d = GvisorSettings()

    def text(name: str, default: str) -> str:
        value = raw.get(name)
        if value is None:
            return default
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{_key(name)}: must be a non-empty string")
            return default
        return value.strip()

    def choice(name: str, default: str, allowed: Sequence[str], hint: str = "") -> str:
        value = text(name, default)
        if value not in allowed:
            problems.append(f"{_key(name)}: '{value}' is not supported; use one of {', '.join(allowed)}{hint}")
            return default
        return value

    release = text("release", d.release)
    if not _RELEASE.match(release):
        fix = ""
        m = re.match(r"^release-(\d{8})(?:\.(\d+))?$", release)
        if m:
            fix = f" (write '{m.group(1)}.{m.group(2) or 0}')"
        problems.append(
            f"{_key('release')}: '{release}' is not a gVisor release; use a dated release "
            f"like {DEFAULT_RELEASE} (YYYYMMDD or YYYYMMDD.N) or 'latest'{fix}"
        )
    base_url = text("baseUrl", d.base_url).rstrip("/")
    if not re.match(r"^(https?|file)://", base_url):
        problems.append(
            f"{_key('baseUrl')}: '{base_url}' must be an http(s):// URL laid out like "
            f"{DEFAULT_BASE_URL}/<release>/<arch>/"
        )
    install_dir = text("installDir", d.install_dir)
    problems.extend(_path_problems("installDir", install_dir))

    sha512_raw = raw.get("sha512") or {}
    sha512: dict[str, str] = {}
    if not isinstance(sha512_raw, Mapping):
        problems.append(f"{_key('sha512')}: must be a map of arch to SHA-512 hex, e.g. {{x86_64: <hex>}}")
    else:
        for arch, digest in sha512_raw.items():
            p = arch_problem(f"{_key('sha512')}.{arch}", arch, allow_detect=False)
            if p:
                problems.append(p)
            elif not isinstance(digest, str) or not _HEX512.match(digest.lower()):
                problems.append(f"{_key('sha512')}.{arch}: must be 128 hex digits (a SHA-512)")
            else:
                sha512[str(arch)] = digest.lower()
    if sha512 and release == "latest":
        problems.append(f"{_key('sha512')}: pins a checksum, but release 'latest' changes; pin a dated release")

    platform = text("platform", d.platform)
    if platform == "ptrace":
        problems.append(
            f"{_key('platform')}: 'ptrace' is deprecated and no longer supported by gVisor; "
            "use 'systrap' (the default) or 'kvm'"
        )
        platform = d.platform
    elif platform not in PLATFORMS:
        problems.append(f"{_key('platform')}: '{platform}' is not supported; use one of {', '.join(PLATFORMS)}")
        platform = d.platform

    docker_network = choice("dockerNetwork", d.docker_network, NETWORKS)
    containerd_network = choice("containerdNetwork", d.containerd_network, NETWORKS)

    flags_raw = raw.get("runscFlags") or {}
    flags: Mapping[str, object] = {}
    if not isinstance(flags_raw, Mapping):
        problems.append(f'{_key("runscFlags")}: must be a map of flag name to value, e.g. {{debug: "true"}}')
    else:
        flags = {str(k): v for k, v in flags_raw.items()}
        problems.extend(flag_errors(flags, _key("runscFlags")))

    docker = cast(Mode, choice("docker", d.docker, MODES))
    containerd = cast(Mode, choice("containerd", d.containerd, MODES))
    default_runtime = config_bool(raw.get("defaultRuntime", False))
    if default_runtime is None:
        problems.append(f"{_key('defaultRuntime')}: must be true or false")
        default_runtime = False
    if default_runtime and docker == "off":
        problems.append(f"{_key('defaultRuntime')}: true needs Docker; set {_key('docker')} to auto or required")

    runtime_name = text("runtimeName", d.runtime_name)
    if not NAME.match(runtime_name):
        problems.append(
            f"{_key('runtimeName')}: '{runtime_name}' must be lower-case letters, digits and '-' "
            "(it names the containerd runtime table and the RuntimeClass handler)"
        )
    runsc_config_path = text("runscConfigPath", d.runsc_config_path)
    problems.extend(_path_problems("runscConfigPath", runsc_config_path))
    step_timeout = _seconds("stepTimeout", raw.get("stepTimeout"), d.step_timeout, problems)
    release_fetch = choice(
        "releaseFetch", d.release_fetch, RELEASE_FETCH, " (once: fetched and checked here, copied to each host)"
    )
    release_dir = _release_dir(raw.get("releaseDir"), release_fetch, problems)

    return GvisorSettings(
        release=release,
        base_url=base_url,
        sha512=sha512,
        install_dir=install_dir,
        platform=platform,
        docker_network=docker_network,
        containerd_network=containerd_network,
        runsc_flags=flags,
        docker=docker,
        containerd=containerd,
        default_runtime=default_runtime,
        runtime_name=runtime_name,
        runsc_config_path=runsc_config_path,
        verify_image=text("verifyImage", d.verify_image),
        step_timeout=step_timeout,
        release_fetch=release_fetch,
        release_dir=release_dir,
    )


def _release_dir(value: object, release_fetch: str, problems: list[str]) -> str | None:
    """A local directory laid out like the bucket, read on the machine running Pulumi."""
    if value is None:
        return None
    key = _key("releaseDir")
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{key}: must be a directory path, e.g. ~/.cache/gvisor-fleet/local-releases")
        return None
    if release_fetch != "once":
        problems.append(
            f"{key}: is read only when {_key('releaseFetch')} is once (the machine running Pulumi fetches); "
            "set releaseFetch to once, or remove releaseDir"
        )
    path = os.path.expanduser(value.strip())
    if not path.startswith("/"):
        problems.append(f"{key}: '{value}' must be an absolute path or start with ~")
        return None
    return path


def _path_problems(name: str, path: str) -> list[str]:
    if not path.startswith("/"):
        return [f"{_key(name)}: '{path}' must be an absolute path"]
    if path.rstrip("/") == "":
        return [f"{_key(name)}: '/' alone is not allowed; name a folder or file below it"]
    if _UNSAFE_PATH.search(path):
        return [f"{_key(name)}: '{path}' holds a space, quote, backslash or '$'; use a plain path"]
    return []


def _seconds(name: str, value: object, default: int, problems: list[str]) -> int:
    if value is None:
        return default
    low, high = STEP_TIMEOUT_RANGE
    number = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    if number is None or not low <= number <= high:
        problems.append(f"{_key(name)}: '{value}' must be a whole number of seconds from {low} to {high}")
        return default
    return number


SCALAR_KEYS = (  # every top-level key but machines, kubernetes and the secrets
    "release", "baseUrl", "installDir", "platform", "dockerNetwork", "containerdNetwork",
    "docker", "containerd", "defaultRuntime", "runtimeName", "runscConfigPath", "verifyImage", "stepTimeout",
    "releaseFetch", "releaseDir",
)  # fmt: skip
OBJECT_KEYS = ("sha512", "runscFlags")
