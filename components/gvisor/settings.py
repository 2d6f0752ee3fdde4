"""gVisor settings: the stack's keys for the release, the runtimes and the steps.

Each key is declared once in `SETTINGS` (components/schema.py reads them);
`parse_gvisor_settings` adds the rules that span keys and appends one line per
problem, naming the key (`gvisor-fleet:<key>`) and what to write instead.
components/settings.py gathers every layer's problems and raises them
together, at preview.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

from components.gvisor.rollout import ROLLOUT_KEY, Rollout, RolloutKind
from components.gvisor.runsc_config import NETWORKS, PLATFORMS, flag_errors
from components.kinds import Choice, Digests, Flag, HostPath, LocalPath, Table, Text, Url, Whole
from components.schema import NS, Setting, key_of, read

MODES = ("auto", "required", "off")
RELEASE_FETCH = ("host", "once")

DEFAULT_RELEASE = "20261116.0"
DEFAULT_BASE_URL = "https://storage.googleapis.com/gvisor/releases/release"
DEFAULT_VERIFY_IMAGE = "docker.io/library/busybox:1.37"

_RELEASE = re.compile(r"^(latest|\d{8}(\.\d+)?)$")
NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
STEP_TIMEOUT_RANGE = (60, 86400)

Mode = Literal["auto", "required", "off"]


def _release_problem(value: object) -> str | None:
    release = str(value)
    if _RELEASE.match(release):
        return None
    m = re.match(r"^release-(\d{8})(?:\.(\d+))?$", release)
    fix = f" (write '{m.group(1)}.{m.group(2) or 0}')" if m else ""
    return (
        f"'{release}' is not a gVisor release; use a dated release like {DEFAULT_RELEASE} "
        f"(YYYYMMDD or YYYYMMDD.N) or 'latest'{fix}"
    )


def _mode(name: str, what: str) -> Setting:
    return Setting(name, Choice(MODES), f"Configure {what}: auto (when installed), required, or off.", "auto")


SETTINGS = (
    Setting("release", Text(describe="YYYYMMDD, YYYYMMDD.N or latest"),
            "gVisor release, YYYYMMDD or YYYYMMDD.N (pinned), or latest (the newest dated release at baseUrl, "
            "resolved at each preview and up).", DEFAULT_RELEASE, check=_release_problem),
    Setting("baseUrl", Url(("https://", "http://", "file://")),
            "Where releases live, laid out as <baseUrl>/<release>/<uname -m>/ (a mirror works; for latest it "
            "also lists them, see docs/operations.md).", DEFAULT_BASE_URL,
            fix=f"a mirror is laid out like {DEFAULT_BASE_URL}/<release>/<arch>/"),
    Setting("sha512", Digests(128, "SHA-512"),
            "Pinned SHA-512 of runsc per arch, checked on each host; needs a dated release."),
    Setting("installDir", HostPath(), "Where runsc, containerd-shim-runsc-v1 and gvisor-bin/ go on each host.",
            "/usr/local/bin"),
    Setting("platform", Choice(PLATFORMS, retired={
                "ptrace": "is deprecated and no longer supported by gVisor; use 'systrap' (the default) or 'kvm'"}),
            "gVisor platform, systrap or kvm (kvm needs a usable /dev/kvm).", "systrap"),
    Setting("dockerNetwork", Choice(NETWORKS), "runsc --network for Docker containers (sandbox, host or none).",
            "sandbox"),
    Setting("containerdNetwork", Choice(NETWORKS),
            "runsc --network for containerd/Kubernetes pods (none cuts pods off the pod network).", "sandbox"),
    Setting("runscFlags", Table("flag name to value", '{debug: "true"}'),
            "Further runsc flags (name to value), for Docker's runtimeArgs and runsc.toml alike."),
    _mode("docker", "Docker"),
    _mode("containerd", "containerd"),
    Setting("defaultRuntime", Flag(), "Make runsc Docker's default runtime (read docs/how-it-works.md first).", False),
    Setting("runtimeName", Text(NAME, "must be lower-case letters, digits and '-' (it names the containerd "
                                      "runtime table and the RuntimeClass handler)", "lower-case DNS label"),
            "Docker runtime name, containerd runtime table and RuntimeClass handler.", "runsc"),
    Setting("runscConfigPath", HostPath(), "The runsc.toml containerd passes to runsc (ConfigPath).",
            "/etc/containerd/runsc.toml"),
    Setting("verifyImage", Text(), "Image (with sh, uname, dmesg) used to prove containers run under gVisor.",
            DEFAULT_VERIFY_IMAGE),
    Setting("stepTimeout", Whole(*STEP_TIMEOUT_RANGE, "seconds"),
            "Seconds one host step may take in all (lock wait, downloads, restarts, checks).", 900),
    Setting("releaseFetch", Choice(RELEASE_FETCH, " (once: fetched and checked here, copied to each host)"),
            "host (each host downloads the release) or once (fetched and checked on the machine running Pulumi, "
            "copied to each host over SSH).", "host"),
    Setting("releaseDir", LocalPath("directory"),
            "A local release directory laid out like baseUrl, read when releaseFetch is once and baseUrl cannot "
            "be reached."),
    Setting(ROLLOUT_KEY, RolloutKind(),
            "Upgrades and config changes in waves: the canaries first, then waves of the given sizes (the last "
            "repeats), each after every machine of the one before passed verify; false: every machine at once "
            "(see docs/operations.md).", Rollout(),
            doc_default="{canaries: the first machine of each arch, waves: ['100%']}"),
)  # fmt: skip


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
    # "latest" when `release` is what latest was at this run (release_latest.py).
    resolved_from: str | None = None
    # Waves of the rollout (rollout.py); None: every machine at once.
    rollout: Rollout | None = field(default_factory=Rollout)


def parse_gvisor_settings(raw: Mapping[str, object], problems: list[str]) -> GvisorSettings:
    """The gVisor keys of the raw config as GvisorSettings; each problem appended names its key."""
    ours = {s.name for s in SETTINGS}
    v = read(SETTINGS, {k: value for k, value in raw.items() if k in ours}, NS, problems, "this program")
    flags = cast(Mapping[str, object], v["runscFlags"] or {})
    problems.extend(flag_errors(flags, key_of(NS, "runscFlags")))
    sha512 = cast(Mapping[str, str], v["sha512"] or {})
    if sha512 and v["release"] == "latest":
        problems.append(f"{key_of(NS, 'sha512')}: pins a checksum, but release 'latest' changes; pin a dated release")
    if v["defaultRuntime"] and v["docker"] == "off":
        docker = key_of(NS, "docker")
        problems.append(f"{key_of(NS, 'defaultRuntime')}: true needs Docker; set {docker} to auto or required")
    if "releaseDir" in v.given and v["releaseFetch"] != "once":
        problems.append(
            f"{key_of(NS, 'releaseDir')}: is read only when {key_of(NS, 'releaseFetch')} is once (the machine "
            "running Pulumi fetches); set releaseFetch to once, or remove releaseDir"
        )
    return GvisorSettings(
        release=v.text("release"),
        base_url=v.text("baseUrl"),
        sha512=sha512,
        install_dir=v.text("installDir"),
        platform=v.text("platform"),
        docker_network=v.text("dockerNetwork"),
        containerd_network=v.text("containerdNetwork"),
        runsc_flags=flags,
        docker=cast(Mode, v["docker"]),
        containerd=cast(Mode, v["containerd"]),
        default_runtime=v.flag("defaultRuntime"),
        runtime_name=v.text("runtimeName"),
        runsc_config_path=v.text("runscConfigPath"),
        verify_image=v.text("verifyImage"),
        step_timeout=v.number("stepTimeout"),
        release_fetch=v.text("releaseFetch"),
        release_dir=v.maybe_text("releaseDir"),
        rollout=cast(Rollout | None, v[ROLLOUT_KEY]),
    )
