"""k3s on the fleet's machines: the command lines, computed without a host.

The first machine is the server, the others join it as agents. Every step
runs `scripts/k3s-node.sh` sent on stdin (the gVisor host agent, by contrast,
is copied to each machine once as a file), so a change to the script shows in
`pulumi preview` as a change to the steps.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from components.gvisor.agent import agent_command
from components.gvisor.runsc_config import effective_flags, render_runsc_toml
from components.gvisor.settings import GvisorSettings
from components.kube.settings import K3sSettings

SCRIPT_PATH = Path(__file__).parent / "scripts" / "k3s-node.sh"
API_PORT = 6443

Role = Literal["server", "agent"]


@cache
def node_script() -> str:
    return SCRIPT_PATH.read_text()


@dataclass(frozen=True)
class K3sNode:
    name: str  # machine name == k3s node name
    arch: str
    role: Role
    sudo: bool


def plan_nodes(machines: Sequence[tuple[str, str, str]]) -> list[K3sNode]:
    """(name, arch, ssh user) per machine -> nodes; the first machine is the server."""
    return [
        K3sNode(name=name, arch=arch, role="server" if i == 0 else "agent", sudo=user != "root")
        for i, (name, arch, user) in enumerate(machines)
    ]


def server_url(k3s: K3sSettings, server_host: str) -> str:
    """The URL agents dial to join."""
    return k3s.server_url or f"https://{_bracket(server_host)}:{API_PORT}"


def api_url(k3s: K3sSettings, server_host: str) -> str:
    """The API URL written into the kubeconfig the program uses."""
    return k3s.api_url or server_url(k3s, server_host)


def tls_san(k3s: K3sSettings, server_host: str) -> str:
    """The extra name the server certificate must carry for the kubeconfig to work."""
    return urlsplit(api_url(k3s, server_host)).hostname or server_host


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def k3s_runsc_toml(gv: GvisorSettings) -> str:
    """runsc.toml for k3s's containerd: the host layer's flags, runsc named by path.

    The same flags as the host's containerd gets (one source: the gVisor
    settings), plus `binary_name`, since k3s's containerd may not have
    installDir on its PATH.
    """
    flags = effective_flags(gv.platform, gv.containerd_network, gv.runsc_flags)
    return f'binary_name = "{gv.install_dir}/runsc"\n' + render_runsc_toml(flags)


def install_command(node: K3sNode, k3s: K3sSettings, join_url: str, san: str, token: str | None = None) -> str:
    """Installs (or keeps) k3s on one node. The agent's line carries the join token: keep it secret."""
    if node.role == "agent" and not token:
        raise ValueError(f"agent {node.name} needs the server's join token")
    args = [
        node.role,
        k3s.version,
        k3s.release_url,
        k3s.install_script_url,
        k3s.sha256.get(node.arch, "-"),
        node.name,
        join_url if node.role == "agent" else "-",
        san if node.role == "server" else "-",
    ]
    if token:
        args.append(token)
    return agent_command("install", *args, sudo=node.sudo)


def uninstall_command(node: K3sNode) -> str:
    return agent_command("uninstall", sudo=node.sudo)


def runtime_commands(node: K3sNode, gv: GvisorSettings, k3s: K3sSettings) -> tuple[str, str]:
    """(create, delete) for the gVisor runtime in k3s's containerd on one node.

    The runtime's name is GvisorSettings.runtime_name: the same value the
    RuntimeClass uses as its handler.
    """
    shim = f"{gv.install_dir}/containerd-shim-runsc-v1"
    toml = base64.b64encode(k3s_runsc_toml(gv).encode()).decode()
    create = agent_command("runtime-configure", gv.runtime_name, shim, toml, k3s.runsc_config_path, sudo=node.sudo)
    delete = agent_command("runtime-restore", k3s.runsc_config_path, sudo=node.sudo)
    return create, delete


def token_command(server: K3sNode) -> str:
    return agent_command("token", sudo=server.sudo)


def kubeconfig_command(server: K3sNode, url: str) -> str:
    return agent_command("kubeconfig", url, sudo=server.sudo)


def wait_nodes_command(server: K3sNode, nodes: Sequence[K3sNode]) -> str:
    return agent_command("wait-nodes", *[n.name for n in nodes], sudo=server.sudo)
