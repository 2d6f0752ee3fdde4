"""GvisorHost: preflight, install, Docker, containerd and verify on one machine.

A thin shell over pure pieces: `agent_run` builds each command line,
`runsc_config` renders the flags, and the agent script does the host work.
The script reaches the machine once (`remote.CopyToRemote`, named by its
hash); every step is a `remote.Command` whose create is idempotent and whose
delete puts back what was there, so `pulumi destroy` leaves the host as found.
The install step runs the preflight checks first, and its delete, the last
on destroy, removes the copied script too: one resource fewer per machine in
the state (every remote resource keeps its SSH connection there, twice).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from pathlib import Path

import pulumi
from pulumi_command import remote

from components.fleet.machine import Machine
from components.gvisor.agent import SCRIPT_PATH, agent_file, agent_run, checks_passed, parse_facts
from components.gvisor.drift import checked_items
from components.gvisor.host_check import HostCheck
from components.gvisor.release_copy import plan_release_copy
from components.gvisor.runsc_config import docker_runtime_args, effective_flags, render_runsc_toml
from components.gvisor.settings import GvisorSettings
from components.lean_state import lean_connection


def host_commands(
    machine: Machine, gv: GvisorSettings, copied: Sequence[str] | None = None, instance: str = ""
) -> dict[str, tuple[str, str | None]]:
    """(create, delete) command lines per step; pure, so tests read them directly.

    copied: `install-file` arguments when the release is copied (release_copy.py).
    instance: the machine's generation, on the install line (see GvisorHost).
    """
    sudo = machine.user != "root"

    def cmd(sub: str, *args: str, generation: str = "", requested: str = "") -> str:
        return agent_run(sub, *args, sudo=sudo, step_timeout=gv.step_timeout, instance=generation, requested=requested)

    docker_flags = effective_flags(gv.platform, gv.docker_network, gv.runsc_flags)
    containerd_flags = effective_flags(gv.platform, gv.containerd_network, gv.runsc_flags)
    runsc_toml = base64.b64encode(render_runsc_toml(containerd_flags).encode()).decode()
    pinned = gv.sha512.get(machine.arch, "-")
    default_runtime = "true" if gv.default_runtime else "false"
    install = ("install-file", *copied) if copied else ("install", gv.base_url, gv.release, gv.install_dir, pinned)
    steps: dict[str, tuple[str, str | None]] = {
        # The checks, then the install, in one run; the delete removes the copy last.
        "install": (
            cmd(
                "preflight",
                machine.arch,
                gv.platform,
                gv.docker,
                gv.containerd,
                *install,
                generation=instance,
                requested=gv.resolved_from or "",
            ),
            cmd("uninstall", gv.install_dir, "remove-copy"),
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
    # The read-only check runs last, so the state records what the steps left (drift, host_check.py).
    checks = (gv.runtime_name, gv.verify_image, gv.docker, gv.containerd, gv.install_dir, gv.runsc_config_path)
    steps["verify"] = (f"{cmd('verify', *checks)} && {check_command(machine, gv)}", None)
    return steps


def check_command(machine: Machine, gv: GvisorSettings) -> str:
    """The agent's read-only check of what the steps put on the host (drift, see host_check.py)."""
    sudo = machine.user != "root"
    return agent_run(
        "check", gv.install_dir, gv.runtime_name, gv.runsc_config_path, sudo=sudo, step_timeout=gv.step_timeout
    )


def check_connection(connection: remote.ConnectionArgs) -> dict[str, pulumi.Input[object]]:
    """What the drift check needs of a connection (the key stays a secret)."""
    values: dict[str, pulumi.Input[object]] = {
        "host": connection.host,
        "port": connection.port,
        "user": connection.user,
        "privateKey": connection.private_key,
        "hostKey": connection.host_key,
        "agentSocketPath": connection.agent_socket_path,
    }
    return {k: v for k, v in values.items() if v is not None}


def script_asset_path() -> str:
    """The script's path for the asset: relative to the project (the program's working
    directory) when inside it, so the state does not change with the checkout's location."""
    try:
        return str(SCRIPT_PATH.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(SCRIPT_PATH)


class GvisorHost(pulumi.ComponentResource):
    """gVisor installed, wired into Docker and containerd, and verified on one machine."""

    facts: pulumi.Output[dict[str, str]]
    checks_passed: pulumi.Output[bool]
    builds_images: bool
    verify: remote.Command  # the later waves of a rollout wait for it (rollout.py)

    def __init__(
        self,
        name: str,
        machine: Machine,
        settings: GvisorSettings,
        opts: pulumi.ResourceOptions | None = None,
        *,
        builds_images: bool = False,
        checks: pulumi.ProviderResource | None = None,
        after: Sequence[GvisorHost] = (),
    ) -> None:
        """checks: the provider of the drift check (host_check.checks_provider(), one for the whole
        fleet); without it the check uses the default one, which keeps a copy of the stack config.
        after: the hosts of the wave before this machine's (rollout.py): its install step waits for
        their verify steps. The other steps wait for the install step, so a change of any of them
        waits too; the copies (the script, a copied release) change nothing that runs."""
        super().__init__("gvisor-fleet:gvisor:GvisorHost", name, None, opts)
        self.builds_images = builds_images
        connection = lean_connection(machine.connection)
        renewed = [machine.instance] if machine.instance is not None else []
        # The state keeps the asset's hash, not the script. Copied again to a
        # new machine (instance) or login (user, address): the file is per login home.
        copy = remote.CopyToRemote(
            f"{name}-agent",
            connection=connection,
            source=pulumi.FileAsset(script_asset_path()),
            remote_path=agent_file(),
            triggers=[
                *renewed,
                pulumi.Output.format("{0}@{1}:{2}", machine.user, machine.connection.host, machine.connection.port),
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(machine.ready)),
        )
        release = plan_release_copy(machine, settings)
        copied = release.install_args if release else None
        commands = host_commands(machine, settings, copied=copied)

        def step(
            step_name: str,
            depends_on: Sequence[pulumi.Resource],
            create: pulumi.Input[str],
            triggers: Sequence[pulumi.Input[str | None]] = (),
        ) -> remote.Command:
            return remote.Command(
                f"{name}-{step_name}",
                connection=connection,
                create=create,
                delete=commands[step_name][1],
                triggers=list(triggers) or None,
                # The agent never reads PULUMI_COMMAND_STDOUT; sending it warns on every stock sshd.
                add_previous_output_in_env=False,
                # On a replaced machine the old step's delete would reach the new
                # machine (same address): let it run first, where it finds nothing.
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(depends_on), delete_before_replace=True),
            )

        # No triggers: its delete removes the copied script, which a replacement
        # (delete, then create) would need again. A machine created anew changes
        # its command line instead (an update: the checks and install run again).
        install_create: pulumi.Input[str] = commands["install"][0]
        if machine.instance is not None:
            install_create = pulumi.Output.from_input(machine.instance).apply(
                lambda instance: host_commands(machine, settings, copied=copied, instance=instance)["install"][0]
            )
        after_copy = [copy, *(release.resources(name, machine, self, [copy]) if release else [])]
        install = step("install", [*after_copy, *(host.verify for host in after)], install_create)

        def runtime_step(step_name: str, depends_on: Sequence[pulumi.Resource], *triggers: str) -> remote.Command:
            # A machine created anew (a replaced VM) gets the step again.
            return step(step_name, depends_on, commands[step_name][0], [*triggers, *renewed])

        engines = [runtime_step(r, [install]) for r in ("docker", "containerd") if r in commands]
        # Verify again whenever anything it checks has been changed: a digest of
        # those command lines (the lines themselves would double the state).
        changed = "\n".join(commands[s][0] for s in commands if s != "verify")
        verify = runtime_step("verify", engines or [install], hashlib.sha256(changed.encode()).hexdigest()[:16])
        self.verify = verify

        steps = [install, *engines, verify]
        # Drift: read by refresh, repaired by up (a plain up compares the state only).
        repair: dict[str, pulumi.Input[str]] = {"install": install_create}
        repair.update({s: commands[s][0] for s in ("docker", "containerd", "verify") if s in commands})
        HostCheck(
            f"{name}-check",
            connection=check_connection(connection),
            check=check_command(machine, settings),
            repair=repair,
            items=checked_items(settings.docker != "off", settings.containerd != "off"),
            verified=verify.stdout,
            step_timeout=settings.step_timeout,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[verify], provider=checks),
        )
        self.facts = pulumi.Output.all(*[s.stdout for s in steps]).apply(
            lambda outs: {k: v for out in outs for k, v in parse_facts(out).items()}
        )
        self.checks_passed = self.facts.apply(checks_passed)
        # The policy pack reads buildsImages (no default runtime on image builders). The
        # facts are the stack output machines.<name>: the state keeps them there only.
        self.register_outputs({"checks_passed": self.checks_passed, "buildsImages": builds_images})
