"""GvisorHost: preflight, install, Docker, containerd and verify on one machine.

A thin shell over pure pieces: `agent_command` builds each command line,
`runsc_config` renders the flags, and the agent script does the host work.
Every step is a `remote.Command` whose create is idempotent and whose delete
puts back what was there, so `pulumi destroy` leaves the host as found.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import pulumi
from pulumi_command import remote

from components.fleet.machine import Machine
from components.gvisor.agent import agent_command, agent_stdin, checks_passed, parse_facts
from components.gvisor.release_copy import plan_release_copy
from components.gvisor.runsc_config import docker_runtime_args, effective_flags, render_runsc_toml
from components.settings import GvisorSettings


def host_commands(
    machine: Machine, gv: GvisorSettings, copied: Sequence[str] | None = None
) -> dict[str, tuple[str, str | None]]:
    """(create, delete) command lines per step; pure, so tests read them directly.
    COPIED: `install-file` arguments when the release is copied (release_copy.py)."""
    sudo = machine.user != "root"

    def cmd(sub: str, *args: str) -> str:
        return agent_command(sub, *args, sudo=sudo)

    docker_flags = effective_flags(gv.platform, gv.docker_network, gv.runsc_flags)
    containerd_flags = effective_flags(gv.platform, gv.containerd_network, gv.runsc_flags)
    runsc_toml = base64.b64encode(render_runsc_toml(containerd_flags).encode()).decode()
    pinned = gv.sha512.get(machine.arch, "-")
    default_runtime = "true" if gv.default_runtime else "false"
    steps: dict[str, tuple[str, str | None]] = {
        "preflight": (cmd("preflight", machine.arch, gv.platform, gv.docker, gv.containerd), None),
        "install": (
            cmd("install-file", *copied) if copied else cmd("install", gv.base_url, gv.release, gv.install_dir, pinned),
            cmd("uninstall", gv.install_dir),
        ),
    }
    if gv.docker != "off":
        steps["docker"] = (
            cmd(
                "docker-configure", gv.runtime_name, default_runtime, gv.install_dir, *docker_runtime_args(docker_flags)
            ),
            cmd("docker-restore", gv.runtime_name, gv.install_dir),
        )
    if gv.containerd != "off":
        steps["containerd"] = (
            cmd("containerd-configure", gv.runtime_name, runsc_toml, gv.install_dir, gv.runsc_config_path),
            cmd("containerd-restore", gv.runsc_config_path),
        )
    steps["verify"] = (
        cmd("verify", gv.runtime_name, gv.verify_image, gv.docker, gv.containerd, gv.install_dir, gv.runsc_config_path),
        None,
    )
    return steps


class GvisorHost(pulumi.ComponentResource):
    """gVisor installed, wired into Docker and containerd, and verified on one machine."""

    facts: pulumi.Output[dict[str, str]]
    checks_passed: pulumi.Output[bool]
    builds_images: bool

    def __init__(
        self,
        name: str,
        machine: Machine,
        settings: GvisorSettings,
        opts: pulumi.ResourceOptions | None = None,
        *,
        builds_images: bool = False,
    ) -> None:
        super().__init__("gvisor-fleet:gvisor:GvisorHost", name, None, opts)
        self.builds_images = builds_images
        script = agent_stdin(settings.step_timeout)
        copy = plan_release_copy(machine, settings)
        commands = host_commands(machine, settings, copy.install_args if copy else None)

        def step(
            step_name: str,
            depends_on: Sequence[pulumi.Resource],
            triggers: Sequence[pulumi.Input[str | None]] | None = None,
        ) -> remote.Command:
            create, delete = commands[step_name]
            # A machine created anew (a replaced VM) gets every step again.
            triggers = [*(triggers or []), *([machine.instance] if machine.instance is not None else [])]
            return remote.Command(
                f"{name}-{step_name}",
                connection=machine.connection,
                create=create,
                delete=delete,
                stdin=script,
                triggers=list(triggers) if triggers else None,
                # The agent never reads PULUMI_COMMAND_STDOUT; sending it warns on every stock sshd.
                add_previous_output_in_env=False,
                # On a replaced machine the old step's delete would reach the new
                # machine (same address): let it run first, where it finds nothing.
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(depends_on), delete_before_replace=True),
            )

        preflight = step("preflight", machine.ready)
        install = step("install", [preflight, *(copy.resources(name, machine, self, [preflight]) if copy else [])])
        configured = [install]
        for runtime in ("docker", "containerd"):
            if runtime in commands:
                configured.append(step(runtime, [install]))
        # Verify again whenever anything it checks has been changed.
        verify = step("verify", configured, triggers=[c.create for c in configured])

        steps = [preflight, *configured, verify]
        self.facts = pulumi.Output.all(*[s.stdout for s in steps]).apply(
            lambda outs: {k: v for out in outs for k, v in parse_facts(out).items()}
        )
        self.checks_passed = self.facts.apply(checks_passed)
        # The policy pack reads buildsImages (no default runtime on image builders).
        self.register_outputs({"facts": self.facts, "checks_passed": self.checks_passed, "buildsImages": builds_images})
