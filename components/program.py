"""The whole program as one importable function; __main__.py only exports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pulumi

from components.config import read_raw_config
from components.fleet.build import build_fleet
from components.gvisor.host import GvisorHost
from components.gvisor.host_check import checks_provider
from components.gvisor.release_latest import resolve_for_run
from components.gvisor.rollout import plan_waves, waits_for
from components.lean_state import keep_only_the_source_position
from components.overhead.measure import OverheadMeasurement, measure_fleet, with_overhead
from components.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from components.kube.deploy import KubeDeployment


@dataclass(frozen=True)
class Program:
    settings: Settings
    hosts: dict[str, GvisorHost]
    kubernetes: KubeDeployment | None = None
    overhead: dict[str, OverheadMeasurement] = field(default_factory=dict)

    def outputs(self) -> dict[str, object]:
        outputs: dict[str, object] = {
            "gvisorRelease": self.settings.gvisor.release,
            "machines": {name: with_overhead(host.facts, self.overhead.get(name)) for name, host in self.hosts.items()},
            "allChecksPassed": pulumi.Output.all(*[h.checks_passed for h in self.hosts.values()]).apply(all),
        }
        if self.kubernetes:
            outputs["kubernetesVerification"] = self.kubernetes.verification
            if self.kubernetes.kubeconfig is not None:
                outputs["kubeconfig"] = self.kubernetes.kubeconfig
        return outputs


def build(config: pulumi.Config) -> Program:
    """Reads and validates stack config, then declares every resource."""
    keep_only_the_source_position()
    private_key = config.get_secret("sshPrivateKey")
    try:
        settings = load_settings(read_raw_config(config), has_private_key=private_key is not None)
    except SettingsError as err:
        raise pulumi.RunError(str(err)) from None
    settings = resolve_for_run(settings)  # `latest` as the dated release it is now

    builders = {spec.name for spec in settings.machines if spec.builds_images}
    checks = checks_provider() if settings.machines else None
    fleet = {machine.name: machine for machine in build_fleet(settings.machines, private_key)}
    hosts: dict[str, GvisorHost] = {}
    # Wave by wave (gvisor-fleet:rollout): each machine after the verify steps of the wave before.
    waves = plan_waves([(spec.name, spec.arch) for spec in settings.machines], settings.gvisor.rollout)
    for name, after in waits_for(waves):
        hosts[name] = GvisorHost(
            name,
            fleet[name],
            settings.gvisor,
            builds_images=name in builders,
            checks=checks,
            after=[hosts[a] for a in after],
        )
    machines = {name: (machine, hosts[name]) for name, machine in fleet.items()}

    kube = None
    if settings.kubernetes:
        # pulumi_kubernetes takes a while to import: only stacks that use it pay.
        from components.kube.deploy import deploy_kubernetes

        kube = deploy_kubernetes(settings.kubernetes, machines, config.get_secret("kubeconfig"), gvisor=settings.gvisor)
    measured = measure_fleet(machines, settings.gvisor, settings.overhead)
    return Program(
        settings=settings, hosts={n: h for n, (_, h) in machines.items()}, kubernetes=kube, overhead=measured
    )
