"""The agent's install and containerd steps as the host tests call them, and the containerd
configs machines come with (shared by test_agent.py, test_faults.py and others)."""

from __future__ import annotations

import base64
import subprocess

from components.gvisor.runsc_config import effective_flags, render_runsc_toml
from tests.host.sandbox import Sandbox
from tests.support.mirror import MIRROR_URL

PREFIX = "/usr/local/bin"
RUNSC_TOML = "/etc/containerd/runsc.toml"


def install(host: Sandbox, release: str) -> subprocess.CompletedProcess[str]:
    return host.agent("install", MIRROR_URL, release, PREFIX, "-")


def toml_b64(**extra: object) -> str:
    flags = effective_flags("systrap", "sandbox", extra)
    return base64.b64encode(render_runsc_toml(flags).encode()).decode()


def configure_containerd(host: Sandbox, **extra: object) -> subprocess.CompletedProcess[str]:
    return host.agent("containerd-configure", "runsc", toml_b64(**extra), PREFIX, RUNSC_TOML)


# A machine's own containerd config with custom settings.
CUSTOM_CONTAINERD = """version = 2
root = "/var/lib/containerd"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.example.test/pause:3.10"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = true
"""

# The config Docker CE's containerd.io package installs: CRI disabled.
DOCKER_CE_CONTAINERD = """#   Copyright 2018-2022 Docker Inc.
#   (the file Docker CE's containerd.io package installs)

disabled_plugins = ["cri"]

#root = "/var/lib/containerd"
#state = "/run/containerd"
"""
